"""Command line of the generator (also reached as `raftfsm generate`).

Exit status: 0 success, 1 generated/ differs from the spec (`--check`), 2 invalid spec or
missing tool.
"""

from __future__ import annotations

import argparse
import difflib
import importlib
import sys
from pathlib import Path

from fsm_spec import DEFAULT_SPEC, SpecError, load_spec_with_warnings
from fsm_spec.model import Spec
from generator.render import PROJECT_ROOT, GraphvizMissing, render_all

DEFAULT_OUT = PROJECT_ROOT / "generated"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m generator",
        description="Render fsm_spec/raft.yaml into generated/ (Python, diagram, docs).",
    )
    parser.add_argument("--spec", type=Path, default=DEFAULT_SPEC, help="spec file")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output directory")
    parser.add_argument(
        "--check",
        action="store_true",
        help="render in memory, print a unified diff against --out and exit 1 on drift; writes nothing",
    )
    sub = parser.add_subparsers(dest="command")
    sub.add_parser(
        "scaffold",
        help="print typed stubs for every guard/action runtime.consensus does not implement yet",
    )
    return parser


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    try:
        spec, warnings = load_spec_with_warnings(args.spec)
    except SpecError as exc:
        for line in exc.lines():
            print(line, file=sys.stderr)
        print(f"{len(exc.problems)} problem(s) in the spec; nothing generated", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"{args.spec}: cannot read spec: {exc.strerror}", file=sys.stderr)
        return 2
    for warning in warnings:
        print(warning, file=sys.stderr)
    if args.command == "scaffold":
        print(scaffold(spec), end="")
        return 0
    try:
        outputs = render_all(spec)
    except GraphvizMissing as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.check:
        return check(outputs, args.out)
    args.out.mkdir(parents=True, exist_ok=True)
    for name, text in outputs.items():
        target = args.out / name
        if not target.exists() or target.read_text(encoding="utf-8") != text:
            target.write_text(text, encoding="utf-8")
        print(target)
    return 0


def check(outputs: dict[str, str], out: Path) -> int:
    drift = False
    for name, text in outputs.items():
        target = out / name
        current = target.read_text(encoding="utf-8") if target.exists() else ""
        if current != text:
            drift = True
            sys.stdout.writelines(
                difflib.unified_diff(
                    current.splitlines(keepends=True),
                    text.splitlines(keepends=True),
                    fromfile=f"{target} (on disk)",
                    tofile=f"{target} (from spec)",
                )
            )
    if drift:
        print("generated/ is out of date: run `python -m generator`", file=sys.stderr)
        return 1
    print(f"{out}: up to date with the spec")
    return 0


def scaffold(spec: Spec) -> str:
    """Stub methods for callbacks the runtime's handler class lacks, ready to paste."""
    implemented: set[str] = set()
    try:
        consensus = importlib.import_module("runtime.consensus")
        implemented = set(dir(consensus.Consensus))
    except Exception as exc:  # a broken runtime must not stop scaffolding
        print(f"note: runtime.consensus not importable ({exc}); listing every callback", file=sys.stderr)
    lines: list[str] = []
    for cb in spec.callbacks:
        if cb.name in implemented:
            continue
        argument = f", message: {cb.payload}" if cb.payload else ""
        returns = "bool" if cb.is_guard else "None"
        lines += [
            f"    def {cb.name}(self{argument}) -> {returns}:",
            f'        """{"Guard" if cb.is_guard else "Action"} used by: '
            + ", ".join(sorted({r.trigger for r in spec.rows if cb.name in _names(r)}))
            + '."""',
            "        raise NotImplementedError",
            "",
        ]
    if not lines:
        return "# runtime.consensus implements every guard and action of the spec\n"
    return "\n".join(lines)


def _names(row: object) -> set[str]:
    return {n for key in ("prepare", "conditions", "unless", "before", "after") for n in getattr(row, key)}

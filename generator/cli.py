"""Command line of the generator (also reached as `raftfsm generate`).

    python -m generator [--spec PATH] [--out DIR] [--tests-out DIR] [--handlers MODULE:CLASS]
                        [--fixtures MODULE] [--check]
    python -m generator scaffold [--spec PATH] [--handlers MODULE:CLASS]
    python -m generator compat OLD_SPEC [--spec NEW_SPEC]

Generating validates the spec, checks it against the handler class (missing callbacks
and wrong arguments are errors, unused public methods warnings: see generator.handlers),
derives the row tests (generator.rowtests) and writes generated/ and
tests/generated/test_raft_rows.py. Every diagnostic is `file:line: reason` on stderr.

Exit status: 0 success; 1 `--check` found drift, or the handlers lack callbacks / take
the wrong arguments, or a row has no generated test (the files are still written when
not checking: the handlers may need the new generated types first); 2 invalid spec
(nothing written), a missing tool, or `--check` could not import the handlers or the
row-test fixtures. `compat` exits 0 for a compatible change, 1 for a breaking one and 2
for an invalid spec.
"""

from __future__ import annotations

import argparse
import difflib
import sys
from pathlib import Path

from fsm_spec import DEFAULT_SPEC, SpecError, load_spec_with_warnings
from fsm_spec.model import Spec
from generator import compat, handlers, rowtests
from generator.render import PROJECT_ROOT, GraphvizMissing, render_all, render_row_tests, spec_display_path

DEFAULT_OUT = PROJECT_ROOT / "generated"
DEFAULT_TESTS_OUT = PROJECT_ROOT / "tests" / "generated"
ROW_TESTS = "test_raft_rows.py"


def _spec_options(parser: argparse.ArgumentParser, sub: bool) -> None:
    default = argparse.SUPPRESS if sub else DEFAULT_SPEC
    parser.add_argument("--spec", type=Path, default=default, help="spec file (default: fsm_spec/raft.yaml)")


def _handler_options(parser: argparse.ArgumentParser, sub: bool) -> None:
    default = argparse.SUPPRESS if sub else handlers.DEFAULT_HANDLERS
    parser.add_argument(
        "--handlers", default=default, metavar="MODULE:CLASS",
        help=f"the class implementing the callbacks (default: {handlers.DEFAULT_HANDLERS})",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m generator",
        description="Render fsm_spec/raft.yaml into generated/ (Python, diagram, docs) and the row tests.",
    )
    _spec_options(parser, sub=False)
    _handler_options(parser, sub=False)
    parser.add_argument("--out", type=Path, default=None, help="output directory (default: generated/)")
    parser.add_argument(
        "--tests-out", type=Path, default=None,
        help="directory of the generated row tests (default: tests/generated/ when OUT is generated/, else "
             "OUT/tests)",
    )
    parser.add_argument(
        "--fixtures", default=rowtests.DEFAULT_FIXTURES, metavar="MODULE",
        help=f"module of the row-test recipes (default: {rowtests.DEFAULT_FIXTURES})",
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="render in memory, print a unified diff against the outputs and exit 1 on drift or on an "
             "error of the handler check; writes nothing",
    )
    sub = parser.add_subparsers(dest="command")
    scaffold = sub.add_parser(
        "scaffold", help="print a module of typed stubs for every callback the handler class lacks",
    )
    _spec_options(scaffold, sub=True)
    _handler_options(scaffold, sub=True)
    evolution = sub.add_parser(
        "compat", help="classify the change from OLD_SPEC to the spec as compatible (exit 0) or breaking (exit 1)",
    )
    evolution.add_argument("old", type=Path, metavar="OLD_SPEC", help="the previous spec")
    _spec_options(evolution, sub=True)
    return parser


def _load(path: Path) -> tuple[Spec, list[str]] | None:
    try:
        return load_spec_with_warnings(path)
    except SpecError as exc:
        for line in exc.lines():
            print(line, file=sys.stderr)
        print(f"{len(exc.problems)} problem(s) in the spec; nothing generated", file=sys.stderr)
    except OSError as exc:
        print(f"{path}: cannot read spec: {exc.strerror}", file=sys.stderr)
    return None


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "compat":
        return compat.main(args.old, args.spec)
    loaded = _load(args.spec)
    if loaded is None:
        return 2
    spec, warnings = loaded
    for warning in warnings:
        print(warning, file=sys.stderr)
    spec_path = str(args.spec)

    try:
        handler_class: type | None = handlers.load_handlers(args.handlers)
    except handlers.HandlersUnavailable as exc:
        handler_class = None
        if args.command == "scaffold":
            print(f"note: {exc}; listing every callback", file=sys.stderr)
        elif args.check:
            print(f"error: {exc}: cannot check the spec against the handlers", file=sys.stderr)
            return 2
        else:
            print(f"warning: {exc}: the spec was not checked against the handlers", file=sys.stderr)
    errors = 0
    if handler_class is not None:
        for finding in handlers.check_handlers(spec, handler_class, spec_path):
            print(finding, file=sys.stderr)
            errors += finding.severity == "error"
    if args.command == "scaffold":
        print(handlers.scaffold(spec, handler_class, args.handlers, spec_display_path(spec)), end="")
        return 0

    try:
        outputs = render_all(spec)
    except GraphvizMissing as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    out: Path = args.out or DEFAULT_OUT
    tests_out: Path = args.tests_out or (
        DEFAULT_TESTS_OUT if out.resolve() == DEFAULT_OUT.resolve() else out / "tests"
    )
    test_outputs: dict[str, str] = {}
    fixtures_path = args.fixtures.replace(".", "/") + ".py"
    try:
        fixtures = rowtests.load_fixtures(args.fixtures)
    except rowtests.FixturesUnavailable as exc:
        if args.check:
            print(f"error: {exc}: cannot check the row tests", file=sys.stderr)
            return 2
        if exc.absent:  # e.g. an installed package, which has no tests/
            print(f"warning: {exc}: the row tests were not generated", file=sys.stderr)
        else:
            print(f"error: {exc}: the row tests were not generated", file=sys.stderr)
            errors += 1
    else:
        plan = rowtests.plan(spec, fixtures, fixtures_path)
        for line, reason in plan.problems:
            print(f"{spec_path}:{line}: error: {reason}", file=sys.stderr)
        errors += len(plan.problems)
        test_outputs[ROW_TESTS] = render_row_tests(spec, plan, args.fixtures, fixtures_path)

    if args.check:
        drift = check(outputs, out) | check(test_outputs, tests_out)
        if drift:
            print("generated files are out of date: run `python -m generator`", file=sys.stderr)
        if errors:
            print(f"{errors} error(s): see above", file=sys.stderr)
        if drift or errors:
            return 1
        print(f"{out} and {tests_out}: up to date with the spec")
        return 0
    for directory, files in ((out, outputs), (tests_out, test_outputs)):
        directory.mkdir(parents=True, exist_ok=True)
        for name, text in files.items():
            target = directory / name
            if not target.exists() or target.read_text(encoding="utf-8") != text:
                target.write_text(text, encoding="utf-8")
            print(target)
    if errors:
        print(f"{errors} error(s): see above (the files were written)", file=sys.stderr)
        return 1
    return 0


def check(outputs: dict[str, str], out: Path) -> bool:
    """Print a unified diff of every output that differs from its file; True on drift."""
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
    return drift

"""The `raftfsm` command line."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from generator import cli as generator_cli
from runtime import simcli

Command = Callable[[argparse.Namespace, list[str]], int]


def _generate(args: argparse.Namespace, rest: list[str]) -> int:
    return generator_cli.main(rest)


def _demo(args: argparse.Namespace, rest: list[str]) -> int:
    status = generator_cli.main([])
    if status == 0:
        out = generator_cli.DEFAULT_OUT
        print()
        print(f"role diagram:  {out / 'raft_fsm.svg'}")
        print(f"protocol docs: {out / 'PROTOCOL.md'}")
        print(f"typed code:    {out / 'raft_fsm.py'}")
    return status


def _sim(args: argparse.Namespace, rest: list[str]) -> int:
    return simcli.run(args)


COMMANDS: dict[str, tuple[Command, str]] = {
    "generate": (_generate, "render fsm_spec/raft.yaml into generated/ (same flags as python -m generator)"),
    "demo": (_demo, "regenerate and show where the diagram and protocol docs are"),
    "sim": (_sim, "run the deterministic simulator over many seeds with a fault nemesis"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="raftfsm", description="Raft with roles declared as a state machine."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (_, help_text) in COMMANDS.items():
        command = sub.add_parser(name, help=help_text, description=help_text, add_help=name != "generate")
        if name == "sim":
            simcli.add_arguments(command)
    return parser


def main(argv: list[str] | None = None) -> int:
    args, rest = build_parser().parse_known_args(sys.argv[1:] if argv is None else argv)
    handler, _ = COMMANDS[args.command]
    if rest and args.command != "generate":
        build_parser().error(f"unrecognized arguments: {' '.join(rest)}")
    return handler(args, rest)


if __name__ == "__main__":
    sys.exit(main())

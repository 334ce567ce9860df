"""The `raftfsm` command line."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from generator import cli as generator_cli
from runtime.cli import cluster as clustercli
from runtime.cli import node
from runtime.cli import sim as simcli

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
    if status != 0:
        return status
    from runtime.cli.demo import run_cluster_demo

    return run_cluster_demo()


def _sim(args: argparse.Namespace, rest: list[str]) -> int:
    return simcli.run(args)


COMMANDS: dict[str, tuple[Command, str]] = {
    "generate": (_generate, "render fsm_spec/raft.yaml into generated/ (same flags as python -m generator)"),
    "demo": (_demo, "regenerate the docs, then crash the leader of a 3-node cluster and measure the failover"),
    "node": (lambda args, rest: node.run(args), "run one node of an app (default: the key-value store)"),
    "cluster": (lambda args, rest: clustercli.run_cluster(args), "run N local nodes until Ctrl-C"),
    "status": (lambda args, rest: clustercli.run_status(args), "print each node's role, term, leader and indexes"),
    "kv": (lambda args, rest: clustercli.run_kv(args), "put/get/del/cas against a cluster's HTTP API"),
    "apply": (lambda args, rest: clustercli.run_apply(args), "send one command (JSON) to any app's cluster"),
    "read": (lambda args, rest: clustercli.run_read(args), "send one query (JSON) to any app's cluster"),
    "certs": (lambda args, rest: clustercli.run_certs(args), "write a development CA and node certificates"),
    "secret": (lambda args, rest: clustercli.run_secret(args), "write a random cluster secret (for --secret-file)"),
    "sim": (_sim, "run the deterministic simulator over many seeds with a fault nemesis"),
}

ARGUMENTS: dict[str, Callable[[argparse.ArgumentParser], None]] = {
    "node": node.add_arguments,
    "cluster": clustercli.add_cluster_arguments,
    "status": clustercli.add_status_arguments,
    "kv": clustercli.add_kv_arguments,
    "apply": clustercli.add_apply_arguments,
    "read": clustercli.add_read_arguments,
    "certs": clustercli.add_certs_arguments,
    "secret": clustercli.add_secret_arguments,
    "sim": simcli.add_arguments,
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="raftfsm", description="Raft with roles declared as a state machine."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (_, help_text) in COMMANDS.items():
        command = sub.add_parser(name, help=help_text, description=help_text, add_help=name != "generate")
        if name in ARGUMENTS:
            ARGUMENTS[name](command)
    return parser


def main(argv: list[str] | None = None) -> int:
    args, rest = build_parser().parse_known_args(sys.argv[1:] if argv is None else argv)
    handler, _ = COMMANDS[args.command]
    if rest and args.command != "generate":
        build_parser().error(f"unrecognized arguments: {' '.join(rest)}")
    return handler(args, rest)



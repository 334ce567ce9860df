"""`python -m runtime.jepsen`: one Jepsen-style run from the command line.

Exit status: 0 linearizable and no problem, 1 violation or problem, 3 the checker ran out
of budget, 2 the run could not be set up.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from runtime.errors import ClusterError
from runtime.jepsen.harness import NETWORKS, Config, run
from runtime.jepsen.nemesis import FAULTS
from runtime.jepsen.netns import NetworkError
from runtime.linearizability import Verdict


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m runtime.jepsen", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, help="nemesis and client seed (default: random, printed)")
    parser.add_argument("--time", type=float, default=30.0, help="seconds of nemesis (default 30)")
    parser.add_argument("--nodes", type=int, default=3, help="cluster size (default 3)")
    parser.add_argument("--clients", type=int, default=5, help="concurrent clients (default 5)")
    parser.add_argument("--faults", default=",".join(FAULTS),
                        help=f"comma-separated, among {', '.join(FAULTS)} (default all)")
    parser.add_argument("--network", choices=NETWORKS, default="auto",
                        help="netns: one network namespace per node (root); loopback: 127.0.0.1, no partitions; "
                             "auto: netns where possible (default)")
    parser.add_argument("--dir", type=Path, help="directory for data, logs and the history (default: a new temp dir)")
    args = parser.parse_args(argv)
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1 << 31)
    faults = tuple(filter(None, (f.strip() for f in args.faults.split(","))))
    try:
        config = Config(seed=seed, duration=args.time, nodes=args.nodes, clients=args.clients, faults=faults,
                        network=args.network)
    except ValueError as exc:
        parser.error(str(exc))
    directory = args.dir or Path(tempfile.mkdtemp(prefix="raftfsm-jepsen-"))
    try:
        report = run(config, directory)
    except (NetworkError, ClusterError, OSError) as exc:
        print(f"jepsen: cannot run: {exc}", file=sys.stderr)
        return 2
    print(report.format())
    if report.result.verdict is Verdict.UNKNOWN and not report.problems:
        return 3
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())

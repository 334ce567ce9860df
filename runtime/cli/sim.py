"""`raftfsm sim`: many seeded simulator runs with a nemesis, a progress bar and a summary."""

from __future__ import annotations

import argparse
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from typing import TextIO

from runtime.errors import InvariantViolation
from runtime.sim import random_setup, run_seed

FAULT_KINDS = ("all", "partition", "crash", "reboot", "drop", "duplicate", "reorder", "delay", "forge", "none")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--nodes", type=int, default=5, help="cluster size (default 5)")
    parser.add_argument("--seeds", type=int, default=100, help="how many seeds to run (default 100)")
    parser.add_argument("--first-seed", type=int, default=0, help="first seed of the range (default 0)")
    parser.add_argument("--seed", type=int, default=None, help="run (replay) this one seed only")
    parser.add_argument("--ticks", type=int, default=2000, help="nemesis ticks per seed (default 2000)")
    parser.add_argument(
        "--faults", default="all",
        help=f"comma-separated fault kinds: {', '.join(FAULT_KINDS)} (default all)",
    )
    parser.add_argument("--snapshot-every", type=int, default=None,
                        help="compact the log every N applied entries, 0 = never (default: each seed draws "
                             "its own batch, window, chunk size, compaction interval and trailing log)")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="worker processes")


def _one(job: tuple[int, int, int, tuple[str, ...], int | None]) -> tuple[int, str | None, int, int]:
    seed, nodes, ticks, faults, snapshot_every = job
    try:
        sim = run_seed(seed, nodes=nodes, ticks=ticks, faults=faults, snapshot_every=snapshot_every)
    except InvariantViolation as exc:
        return seed, str(exc), 0, 0
    return seed, None, sim.messages_sent, sim.now


def _bar(done: int, total: int, failed: int, out: TextIO) -> None:
    width = 30
    filled = width * done // max(total, 1)
    out.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{total} seeds, {failed} violation(s)")
    out.flush()


def run(args: argparse.Namespace) -> int:
    faults = tuple(f.strip() for f in args.faults.split(",") if f.strip())
    unknown = [f for f in faults if f not in FAULT_KINDS]
    if unknown:
        print(f"raftfsm sim: unknown fault kind(s) {unknown}; choose from {', '.join(FAULT_KINDS)}", file=sys.stderr)
        return 2
    if "none" in faults:
        faults = ()
    if args.nodes < 1:
        print("raftfsm sim: --nodes must be at least 1", file=sys.stderr)
        return 2
    seeds = [args.seed] if args.seed is not None else list(range(args.first_seed, args.first_seed + args.seeds))
    jobs = [(s, args.nodes, args.ticks, faults, args.snapshot_every) for s in seeds]
    started = time.perf_counter()
    failures: list[tuple[int, str]] = []
    messages = ticks = 0
    show_bar = len(seeds) > 1
    if args.jobs > 1 and len(seeds) > 1:
        with ProcessPoolExecutor(max_workers=args.jobs) as pool:
            results = pool.map(_one, jobs, chunksize=max(1, len(jobs) // (args.jobs * 20)))
            for done, (seed, failure, sent, now) in enumerate(results, start=1):
                messages, ticks = messages + sent, ticks + now
                if failure:
                    failures.append((seed, failure))
                if show_bar:
                    _bar(done, len(jobs), len(failures), sys.stderr)
    else:
        for done, job in enumerate(jobs, start=1):
            seed, failure, sent, now = _one(job)
            messages, ticks = messages + sent, ticks + now
            if failure:
                failures.append((seed, failure))
            if show_bar:
                _bar(done, len(jobs), len(failures), sys.stderr)
    if show_bar:
        sys.stderr.write("\n")
    elapsed = time.perf_counter() - started
    fault_text = ",".join(faults) or "none"
    print(f"{'nodes':>6} {'seeds':>6} {'ticks/seed':>10} {'faults':>10} {'violations':>10} "
          f"{'messages':>12} {'seconds':>8}")
    print(f"{args.nodes:>6} {len(seeds):>6} {args.ticks:>10} {fault_text:>10} {len(failures):>10} "
          f"{messages:>12,} {elapsed:>8.1f}")
    for seed, failure in failures[:5]:
        print(f"\nseed {seed}: {failure}")
        every = "" if args.snapshot_every is None else f" --snapshot-every {args.snapshot_every}"
        if args.snapshot_every is None:
            print(f"setup: {random_setup(seed).describe()}")
        print(f"replay: raftfsm sim --nodes {args.nodes} --seed {seed} --ticks {args.ticks} "
              f"--faults {args.faults}{every}")
    return 1 if failures else 0

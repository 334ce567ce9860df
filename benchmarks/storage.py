"""Durable-storage throughput (entries/s and transactions/s, one fsync per transaction)
for batches of 1, 64 and 1024 entries, and the time a node with a long log needs from
opening its SqliteStorage to having its initial state.

    python benchmarks/storage.py [--seconds S] [--restart-entries N] [--dir PATH]

--dir picks the file system (the default temp directory may be a RAM disk elsewhere).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import table, write_json
from generated.raft_fsm import Entry, EntryKind
from runtime.ready import HardState
from runtime.storage import MemoryStorage, SqliteStorage, Storage

ENTRY_SIZE = 100
BATCHES = (1, 64, 1024)
MAX_ENTRIES = 200_000  # per run: keeps the memory baseline from filling RAM


def throughput(storage: Storage, batch: int, seconds: float) -> tuple[float, float]:
    """Entries/s and transactions/s, counting only the time spent inside persist()."""
    payload = b"x" * ENTRY_SIZE
    next_index, transactions, busy = 1, 0, 0.0
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline and next_index <= MAX_ENTRIES:
        entries = [Entry(1, i, EntryKind.data, payload) for i in range(next_index, next_index + batch)]
        start = time.perf_counter()
        storage.persist(entries, HardState(1, "n1", next_index - 1), None)
        busy += time.perf_counter() - start
        next_index += batch
        transactions += 1
    return (next_index - 1) / busy, transactions / busy


def restart_times(directory: Path, entries: int, runs: int) -> list[float]:
    payload = b"x" * ENTRY_SIZE
    with SqliteStorage(directory, node_id="n1", cluster_id="bench", fsync=False) as storage:
        for first in range(1, entries + 1, 1024):
            last = min(first + 1023, entries)
            batch = [Entry(1, i, EntryKind.data, payload) for i in range(first, last + 1)]
            storage.persist(batch, HardState(1, "n1", last), None)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        storage = SqliteStorage(directory, node_id="n1", cluster_id="bench")
        state = storage.initial_state()
        times.append(time.perf_counter() - start)
        storage.close()
        assert len(state.entries) == entries
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=2.0, help="wall time per configuration")
    parser.add_argument("--restart-entries", type=int, default=100_000)
    parser.add_argument("--dir", type=Path, default=None, help="where to put the databases")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(dir=args.dir, prefix="raftfsm-bench-") as scratch:
        root = Path(scratch)
        configurations: list[tuple[str, str, Callable[[Path], Storage]]] = [
            ("MemoryStorage", "-", lambda _: MemoryStorage()),
            ("SqliteStorage", "on", lambda d: SqliteStorage(d, node_id="n1", cluster_id="bench")),
            ("SqliteStorage", "off", lambda d: SqliteStorage(d, node_id="n1", cluster_id="bench", fsync=False)),
        ]
        rows: list[list[Any]] = []
        results: list[dict[str, Any]] = []
        for number, (name, fsync, open_storage) in enumerate(configurations):
            for batch in BATCHES:
                storage = open_storage(root / f"{number}-{batch}")
                entries_per_s, transactions_per_s = throughput(storage, batch, args.seconds)
                storage.close()
                rows.append([name, fsync, batch, entries_per_s, transactions_per_s, 1e6 / transactions_per_s])
                results.append({
                    "storage": name, "fsync": fsync, "batch": batch,
                    "entries_per_s": entries_per_s, "transactions_per_s": transactions_per_s,
                })
        times = restart_times(root / "restart", args.restart_entries, runs=3)

    print(table(["storage", "fsync", "batch", "entries/s", "transactions/s", "µs/transaction"], rows))
    print()
    print(table(
        ["restart", "entries", "best s", "median s"],
        [["SqliteStorage open -> initial_state()", args.restart_entries, min(times), statistics.median(times)]],
    ))
    path = write_json("storage", {
        "entry_size": ENTRY_SIZE, "seconds_per_configuration": args.seconds,
        "throughput": results,
        "restart": {"entries": args.restart_entries, "seconds_to_ready": min(times), "runs": times},
    })
    print(f"wrote {path}")


if __name__ == "__main__":
    main()

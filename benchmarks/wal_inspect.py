"""How long the WAL inspector (runtime/storage/wal.py) takes over a WAL written by SQLite,
which every SqliteStorage open pays before SQLite touches the files.

    python benchmarks/wal_inspect.py [--megabytes N] [--page-size P] [--repeat R] [--dir PATH]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from runtime.storage.wal import inspect_wal


def write_wal(directory: Path, megabytes: int, page_size: int) -> Path:
    """A WAL of about `megabytes` from SQLite itself (no checkpoint), copied aside."""
    connection = sqlite3.connect(directory / "bench.db", isolation_level=None)
    connection.execute(f"PRAGMA page_size = {page_size}")
    connection.execute("PRAGMA journal_mode = WAL")
    connection.execute("PRAGMA wal_autocheckpoint = 0")
    connection.execute("PRAGMA synchronous = OFF")
    connection.execute("CREATE TABLE t (k INTEGER PRIMARY KEY, v BLOB)")
    blob, first = os.urandom(min(3000, page_size // 2)), 1
    while (directory / "bench.db-wal").stat().st_size < megabytes << 20:
        connection.execute("BEGIN")
        connection.executemany("INSERT INTO t VALUES (?, ?)", ((k, blob) for k in range(first, first + 100)))
        connection.execute("COMMIT")
        first += 100
    copy = directory / "copy-wal"
    shutil.copy(directory / "bench.db-wal", copy)
    connection.close()
    return copy


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--megabytes", type=int, default=64)
    parser.add_argument("--page-size", type=int, default=4096)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--dir", type=Path, default=None, help="where to write the WAL (default: a temp dir)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as scratch:
        wal = write_wal(Path(scratch), args.megabytes, args.page_size)
        walls, cpus = [], []
        for _ in range(args.repeat):
            wall, cpu = time.perf_counter(), time.process_time()
            report = inspect_wal(wal)
            walls.append(time.perf_counter() - wall)
            cpus.append(time.process_time() - cpu)
        assert report.problem is None and report.valid == report.frames, report
        size = report.size / 2**20
        print(
            f"{size:.1f} MB WAL, {report.frames} frames of {report.page_size} bytes: best of {args.repeat}"
            f" {min(walls):.3f} s wall, {min(cpus):.3f} s CPU ({size / min(cpus):.0f} MB/s of CPU)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

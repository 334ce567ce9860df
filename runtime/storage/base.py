"""The contract between a driver and the durable home of a node's log and hard state.

A driver calls `persist` once per `Ready`, before it sends anything that depends on the
batch (§5, "persist before you speak"), so a call is one atomic transaction: after a
crash either the whole batch is there or none of it is. Errors of the medium become
`StorageError`; errors of the caller (a batch that would leave a hole in the log) are
`ValueError`, because retrying them can never succeed. A term or index beyond what the
medium can hold (SQLite's INTEGER is a signed 64-bit integer) is a `StorageError` too,
raised before anything is written; MemoryStorage applies the same limit so that the
simulator and a real node agree.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final, Protocol

from generated.raft_fsm import Entry
from runtime.errors import CorruptStorage as CorruptStorage  # moved to runtime.errors; re-exported
from runtime.errors import StorageError as StorageError
from runtime.membership import Configuration
from runtime.ready import HardState, PersistentState, Snapshot

INT64_MIN: Final = -(1 << 63)
INT64_MAX: Final = (1 << 63) - 1


class Storage(Protocol):
    def initial_state(self) -> PersistentState:
        """The last hard state, the last snapshot (or None) and the entries after it,
        in index order."""
        ...

    def persist(
        self, entries: Sequence[Entry], hard_state: HardState | None, snapshot: Snapshot | None
    ) -> None:
        """In one transaction: `snapshot` (if given) replaces the whole log; `entries`
        (if any) replace every stored entry from `entries[0].index` on; `hard_state`
        (if given) is saved."""
        ...

    def compact(self, snapshot: Snapshot, log_from: int | None = None) -> None:
        """Store `snapshot` and drop the entries before `log_from` (default: every entry
        the snapshot covers, `snapshot.index + 1`), in one transaction. With a smaller
        `log_from` a trailing log stays; `initial_state` then returns entries from
        `log_from` on, the first of them at or below the snapshot's index."""
        ...

    def bootstrap(self, configuration: Configuration) -> None:
        """Store the configuration this node starts from, returned by `initial_state` from
        then on (a node with an empty data directory, started from `--peers` or by joining)."""
        ...

    def close(self) -> None: ...


def check_batch(
    entries: Sequence[Entry], snapshot: Snapshot | None, first_index: int, last_index: int
) -> None:
    """Reject a batch that would leave a hole in the log or overwrite compacted entries.

    `first_index`/`last_index` describe the stored log before the batch. Only the ends of
    `entries` are looked at, so the check costs the same for 1 and 10,000 entries.
    """
    if snapshot is not None:
        first_index, last_index = snapshot.index + 1, snapshot.index
    if not entries:
        return
    start, end = entries[0].index, entries[-1].index
    if end - start != len(entries) - 1:
        raise ValueError(f"entries to persist are not contiguous: {len(entries)} entries span {start}..{end}")
    if not first_index <= start <= last_index + 1:
        raise ValueError(
            f"entries to persist start at {start}, but the stored log holds {first_index}..{last_index}"
            " (a batch may overwrite a suffix or extend the log, never leave a hole or touch"
            " compacted entries)"
        )


def check_storable(entries: Sequence[Entry], hard_state: HardState | None, snapshot: Snapshot | None) -> None:
    """Raise StorageError, before anything is written, if a term or index does not fit in
    a signed 64-bit integer (sqlite3 would raise OverflowError in the middle of a batch)."""
    low, high = INT64_MIN, INT64_MAX
    for entry in entries:  # the simulator persists every Ready: compare first, format only on failure
        if not (low <= entry.index <= high and low <= entry.term <= high):
            _check_int64("log index", entry.index)
            _check_int64("term", entry.term, f" of log entry {entry.index}")
    if hard_state is not None:
        _check_int64("term", hard_state.term, " of the hard state")
        _check_int64("commit index", hard_state.commit)
    if snapshot is not None:
        _check_int64("snapshot index", snapshot.index)
        _check_int64("term", snapshot.term, f" of the snapshot at {snapshot.index}")


def _check_int64(what: str, value: int, where: str = "") -> None:
    if not INT64_MIN <= value <= INT64_MAX:
        raise StorageError(f"{what} {value}{where} does not fit in a signed 64-bit integer; nothing was stored")


def check_compaction(
    snapshot: Snapshot, log_from: int, snapshot_index: int, first_index: int, last_index: int
) -> None:
    """A snapshot older than the stored one, or beyond the log, means the application and
    the log disagree about what was applied; storing it would lose or invent entries. The
    log kept must start within the stored log and no later than just after the snapshot."""
    if snapshot.index < snapshot_index:
        raise ValueError(f"snapshot at {snapshot.index} is older than the stored one at {snapshot_index}")
    if snapshot.index > last_index:
        raise ValueError(f"snapshot at {snapshot.index} is beyond the last log entry {last_index}")
    if not first_index <= log_from <= snapshot.index + 1:
        raise ValueError(
            f"a log kept from {log_from} must start within the stored {first_index}..{last_index} and at or "
            f"before {snapshot.index + 1}"
        )


def describe_batch(entries: Sequence[Entry], hard_state: HardState | None, snapshot: Snapshot | None) -> str:
    """Name what a failed persist was carrying, for the one-line error message."""
    parts = [f"{len(entries)} entries"]
    if hard_state is not None:
        parts.append("the hard state")
    if snapshot is not None:
        parts.append(f"a snapshot at {snapshot.index}")
    return ", ".join(parts[:-1]) + " and " + parts[-1] if len(parts) > 1 else parts[0]

"""The in-memory view of a node's log (the seed's RaftNodeLog), after compaction.

Indexes start at 1. Entries up to `offset` were compacted away; `snapshot_term` is the
term of the entry at `offset` (the log's anchor for consistency checks). The snapshot a
node holds may cover more than that: compaction keeps a trailing log after the snapshot's
index so that followers a little behind catch up from entries, not a whole snapshot.
`stable` is the last index the driver has persisted; entries after it are handed out by
`unstable()` in the next Ready. `bytes` is the size of the entries' data in memory.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Sequence

from generated.raft_fsm import Entry


class LogCompacted(LookupError):
    """The entry asked for was compacted into the snapshot."""


class RaftLog:
    __slots__ = ("bytes", "entries", "offset", "snapshot_term", "stable")

    def __init__(
        self, entries: Iterable[Entry] = (), offset: int = 0, snapshot_term: int = 0
    ) -> None:
        self.entries: list[Entry] = list(entries)
        self.offset = offset
        self.snapshot_term = snapshot_term
        self.stable = offset + len(self.entries)
        self.bytes = sum(len(entry.data) for entry in self.entries)
        for position, entry in enumerate(self.entries, start=offset + 1):
            if entry.index != position:
                raise ValueError(f"log entry at position {position} has index {entry.index}")

    @property
    def first_index(self) -> int:
        return self.offset + 1

    @property
    def last_index(self) -> int:
        return self.offset + len(self.entries)

    @property
    def last_term(self) -> int:
        return self.entries[-1].term if self.entries else self.snapshot_term

    def term_at(self, index: int) -> int | None:
        """Term of the entry at `index`; 0 for index 0; None if unknown (beyond the end
        or compacted away)."""
        if index == self.offset:
            return self.snapshot_term
        position = index - self.offset - 1
        if 0 <= position < len(self.entries):
            return self.entries[position].term
        return None

    def entry(self, index: int) -> Entry:
        position = index - self.offset - 1
        if position < 0:
            raise LogCompacted(f"entry {index} is compacted (snapshot at {self.offset})")
        return self.entries[position]

    def slice(self, low: int, high: int) -> list[Entry]:
        """Entries with low <= index < high."""
        if low <= self.offset:
            raise LogCompacted(f"entry {low} is compacted (snapshot at {self.offset})")
        return self.entries[low - self.offset - 1 : high - self.offset - 1]

    def append(self, entry: Entry) -> None:
        self.entries.append(entry)
        self.bytes += len(entry.data)

    def extend(self, entries: Sequence[Entry]) -> None:
        self.entries.extend(entries)
        self.bytes += sum(len(entry.data) for entry in entries)

    def truncate_after(self, index: int) -> None:
        """Drop every entry with an index greater than `index` (a conflicting suffix)."""
        position = index - self.offset
        self.bytes -= sum(len(entry.data) for entry in self.entries[position:])
        del self.entries[position:]
        if self.stable > index:
            self.stable = index

    def unstable(self) -> list[Entry]:
        return self.entries[self.stable - self.offset :]

    def mark_stable(self, index: int) -> None:
        # a later truncation may already have lowered `stable` below what was persisted
        if index > self.stable and index <= self.last_index:
            self.stable = index

    def compact(self, index: int) -> None:
        """Drop entries up to and including `index` (already in a snapshot)."""
        if index <= self.offset:
            return
        term = self.term_at(index)
        if term is None:
            raise ValueError(f"cannot compact to {index}: the log ends at {self.last_index}")
        position = index - self.offset
        self.bytes -= sum(len(entry.data) for entry in self.entries[:position])
        del self.entries[:position]
        self.offset = index
        self.snapshot_term = term

    def restore(self, index: int, term: int) -> None:
        """Replace the whole log by a snapshot ending at (index, term)."""
        self.entries.clear()
        self.bytes = 0
        self.offset = index
        self.snapshot_term = term
        self.stable = index

    def first_index_of_term(self, index: int) -> int:
        """First index of the run of entries sharing the term of `index` (the conflict
        hint of fast back-off). Terms never decrease along a log, so this is a bisection."""
        term = self.term_at(index)
        if term is None or index <= self.offset:
            return index
        position = bisect_left(self.entries, term, hi=index - self.offset, key=_term)
        return self.offset + position + 1

    def last_index_of_term(self, term: int) -> int:
        """Last index holding an entry of `term`, or 0 if the log has none."""
        position = bisect_right(self.entries, term, key=_term)
        if position > 0 and self.entries[position - 1].term == term:
            return self.offset + position
        if position == 0 and self.snapshot_term == term:
            return self.offset
        return 0

    def is_up_to_date(self, last_index: int, last_term: int) -> bool:
        """§5.4.1: is a log ending at (last_index, last_term) at least as up-to-date?"""
        my_term = self.last_term
        return last_term > my_term or (last_term == my_term and last_index >= self.last_index)


def _term(entry: Entry) -> int:
    return entry.term

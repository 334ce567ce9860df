"""A storage that lives as long as the process: for tests and the simulator, where
"durable" means "survives a simulated crash of the core", and speed matters because
the simulator persists every Ready of every node."""

from __future__ import annotations

from collections.abc import Sequence

from generated.raft_fsm import Entry
from runtime.membership import Configuration
from runtime.ready import HardState, PersistentState, Snapshot
from runtime.storage.base import check_batch, check_compaction, check_storable


class MemoryStorage:
    """Entries live in one list; position `i` holds index `offset + 1 + i`, where `offset`
    is the index before the first stored entry (the snapshot's, or less with a trailing log)."""

    __slots__ = ("_bootstrap", "_entries", "_hard_state", "_offset", "_snapshot")

    def __init__(self) -> None:
        self._entries: list[Entry] = []
        self._hard_state = HardState()
        self._snapshot: Snapshot | None = None
        self._offset = 0
        self._bootstrap: Configuration | None = None

    def initial_state(self) -> PersistentState:
        # A new list: the caller's log must not alias what a later persist truncates.
        return PersistentState(self._hard_state, self._snapshot, list(self._entries), self._bootstrap)

    def bootstrap(self, configuration: Configuration) -> None:
        self._bootstrap = configuration

    def persist(
        self, entries: Sequence[Entry], hard_state: HardState | None, snapshot: Snapshot | None
    ) -> None:
        check_batch(entries, snapshot, self._offset + 1, self._offset + len(self._entries))
        check_storable(entries, hard_state, snapshot)
        if snapshot is not None:
            self._snapshot = snapshot
            self._offset = snapshot.index
            self._entries = []
        if entries:
            del self._entries[entries[0].index - self._offset - 1 :]
            self._entries.extend(entries)
        if hard_state is not None:
            self._hard_state = hard_state

    def compact(self, snapshot: Snapshot, log_from: int | None = None) -> None:
        keep = snapshot.index + 1 if log_from is None else log_from
        stored = self._snapshot.index if self._snapshot is not None else 0
        check_compaction(snapshot, keep, stored, self._offset + 1, self._offset + len(self._entries))
        check_storable((), None, snapshot)
        del self._entries[: keep - 1 - self._offset]
        self._offset = keep - 1
        self._snapshot = snapshot

    def close(self) -> None:
        """Nothing to release; the state stays readable so a simulated restart can
        call `initial_state()` again."""

"""A storage wrapper that fails on demand, so tests can drive a node into the Error role
(principle 4: a node whose storage fails stops acknowledging) without a broken disk."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final, Literal

from generated.raft_fsm import Entry
from runtime.membership import Configuration
from runtime.ready import HardState, PersistentState, Snapshot
from runtime.storage.base import Storage, StorageError, describe_batch

FaultKind = Literal["io", "disk_full", "fsync"]

# The same wording SqliteStorage uses for the real failures, so tests match on one message.
_FAULTS: Final[dict[str, tuple[str, str]]] = {
    "io": ("I/O error", "disk I/O error (injected)"),
    "disk_full": ("disk full", "database or disk is full (injected)"),
    "fsync": ("fsync failed", "fsync returned EIO (injected)"),
}


class FaultyStorage:
    """Delegates to `inner`, except that after `fail_next(kind)` the next persist or
    compact raises StorageError and writes nothing, like a transaction rolled back."""

    def __init__(self, inner: Storage) -> None:
        self.inner = inner
        self._pending: FaultKind | None = None

    def fail_next(self, kind: FaultKind) -> None:
        if kind not in _FAULTS:
            raise ValueError(f"unknown fault kind {kind!r}; expected one of {sorted(_FAULTS)}")
        self._pending = kind

    def initial_state(self) -> PersistentState:
        return self.inner.initial_state()

    def persist(
        self, entries: Sequence[Entry], hard_state: HardState | None, snapshot: Snapshot | None
    ) -> None:
        self._inject(f"persisting {describe_batch(entries, hard_state, snapshot)}")
        self.inner.persist(entries, hard_state, snapshot)

    def compact(self, snapshot: Snapshot, log_from: int | None = None) -> None:
        self._inject(f"compacting the log up to {snapshot.index}")
        self.inner.compact(snapshot, log_from)

    def bootstrap(self, configuration: Configuration) -> None:
        self._inject("storing the bootstrap configuration")
        self.inner.bootstrap(configuration)

    def close(self) -> None:
        self.inner.close()

    def _inject(self, doing: str) -> None:
        if self._pending is None:
            return
        cause, detail = _FAULTS[self._pending]
        self._pending = None
        raise StorageError(f"{cause} while {doing} to {type(self.inner).__name__}: {detail}")

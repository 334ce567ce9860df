"""`Applier`: what every driver (the asyncio server, the simulator) does with a committed
entry — decode the payload, keep client sessions (exactly once), run the user's state
machine, turn a refusal into a result — and the snapshot of all of it.

It is deterministic: every node feeds it the same entries in the same order and gets the
same outcomes, session table and state.
"""

from __future__ import annotations

from typing import Any, Generic

import msgpack

from generated.raft_fsm import Entry, EntryKind
from runtime.errors import CommandRejected, SessionExpired, StaleCommand
from runtime.sessions import (
    DEFAULT_MAX_SESSIONS,
    DEFAULT_SESSION_TIMEOUT_MS,
    Command,
    Outcome,
    OutcomeKind,
    SessionTable,
    decode_entry,
)
from runtime.statemachine import CommandT, ResultT, StateMachine

SNAPSHOT_FORMAT = 1

_APPLIED = Outcome(OutcomeKind.applied)


class Applied(Generic[ResultT]):
    """The outcome of one entry, plus the result object itself when the state machine has
    just produced it (a duplicate's result exists only as bytes)."""

    __slots__ = ("fresh", "outcome", "value")

    def __init__(self, outcome: Outcome, value: ResultT | None = None, fresh: bool = False) -> None:
        self.outcome = outcome
        self.value = value
        self.fresh = fresh


class Applier(Generic[CommandT, ResultT]):
    """See the module docstring. `machine` is the user's state machine."""

    def __init__(
        self,
        machine: StateMachine[CommandT, ResultT],
        *,
        session_timeout_ms: int = DEFAULT_SESSION_TIMEOUT_MS,
        max_sessions: int = DEFAULT_MAX_SESSIONS,
    ) -> None:
        self.machine = machine
        self.sessions = SessionTable(session_timeout_ms, max_sessions)

    def apply(self, entry: Entry) -> Applied[ResultT] | None:
        """Apply one committed entry; None for entries without a client (no-ops)."""
        if entry.kind is not EntryKind.data:
            return None
        payload = decode_entry(entry.data)
        sessions = self.sessions
        if not isinstance(payload, Command):
            sessions.register(entry.index, payload.time_ms)
            return Applied(_APPLIED)
        if not payload.client:
            sessions.advance_clock(payload.time_ms)
            return self._run(payload, remember=False)
        known = sessions.check(payload)
        if known is not None:
            return Applied(known)
        applied = self._run(payload, remember=True)
        sessions.record(payload, applied.outcome)
        return applied

    def _run(self, payload: Command, remember: bool) -> Applied[ResultT]:
        machine = self.machine
        command = machine.decode(payload.data)
        try:
            value = machine.apply(command)
        except CommandRejected as exc:
            return Applied(Outcome(OutcomeKind.rejected, error=str(exc) or type(exc).__name__))
        outcome = Outcome(OutcomeKind.applied, machine.encode_result(value)) if remember else _APPLIED
        return Applied(outcome, value, fresh=True)

    def result(self, applied: Applied[ResultT]) -> ResultT:
        """The client's answer: the result, or the error the outcome stands for."""
        outcome = applied.outcome
        if outcome.kind is OutcomeKind.applied:
            if applied.fresh:
                return applied.value  # type: ignore[return-value]
            return self.machine.decode_result(outcome.result)
        if outcome.kind is OutcomeKind.rejected:
            raise CommandRejected(outcome.error)
        if outcome.kind is OutcomeKind.expired:
            raise SessionExpired(outcome.error)
        raise StaleCommand(outcome.error)

    # -- snapshots ---------------------------------------------------------------------------
    def snapshot(self) -> bytes:
        """Sessions and the user's state, as of the last applied entry."""
        return msgpack.packb(  # type: ignore[no-any-return]
            [SNAPSHOT_FORMAT, self.sessions.pack(), self.machine.snapshot()], use_bin_type=True
        )

    def restore(self, data: bytes) -> None:
        fields: Any = msgpack.unpackb(data, raw=False, use_list=True, strict_map_key=False)
        if not (isinstance(fields, list) and len(fields) == 3 and fields[0] == SNAPSHOT_FORMAT):
            raise ValueError(f"not a raftfsm snapshot (format {SNAPSHOT_FORMAT})")
        self.sessions.unpack(fields[1])
        self.machine.restore(fields[2])

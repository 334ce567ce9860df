"""Client sessions (Raft thesis §6.3): every command applies exactly once.

A client registers a session through the log and numbers its commands. The replicated
layer (not the user's state machine) remembers, per session, the result of every command
the client may still retry, so a retried command — the same (client, sequence number),
proposed again after an unknown outcome — returns the original result instead of being
applied a second time. Everything here is decided by the log alone: registration,
activity and expiry use the leader's clock *as written into the entries*, so every node
reaches the same session table, which is part of every snapshot.

Entry payloads (the `data` of data entries), msgpack arrays:

    [0, client, sequence, ack, time_ms, command]   a command (client 0: no session)
    [1, time_ms]                                   open a session; its id is the entry's index

`ack` is the lowest sequence number whose answer the client still waits for: answers to
lower numbers are forgotten (a retry of one of those is refused as stale).
"""

from __future__ import annotations

from enum import IntEnum
from typing import Any, Final

import msgpack
from attrs import Factory, define, frozen

COMMAND: Final = 0
REGISTER: Final = 1

DEFAULT_SESSION_TIMEOUT_MS: Final = 3_600_000
"""A session with no command for an hour (by the log's clock) expires."""
DEFAULT_MAX_SESSIONS: Final = 10_000
"""Past this many sessions, registering one expires the least recently active."""
MAX_ANSWERS: Final = 4_096
"""Answers one session keeps (commands not acknowledged yet); more is refused."""


class OutcomeKind(IntEnum):
    applied = 0
    """The state machine applied the command; `result` holds its encoded result."""
    rejected = 1
    """The state machine refused it (CommandRejected): nothing changed; `error` says why."""
    expired = 2
    """The session is unknown (expired, or never opened): the command was not applied."""
    stale = 3
    """The client acknowledged this sequence number already; its answer is forgotten."""


@frozen
class Outcome:
    """What applying one command gave, as every node computes it."""

    kind: OutcomeKind
    result: bytes = b""
    error: str = ""

    def pack(self) -> list[Any]:
        return [int(self.kind), self.result, self.error]

    @classmethod
    def unpack(cls, fields: Any) -> Outcome:
        kind, result, error = fields
        return cls(OutcomeKind(kind), result, error)


@frozen
class Command:
    """A decoded command entry."""

    client: int
    sequence: int
    ack: int
    time_ms: int
    data: bytes


@frozen
class Register:
    """A decoded session registration entry."""

    time_ms: int


def encode_command(data: bytes, time_ms: int, client: int = 0, sequence: int = 0, ack: int = 0) -> bytes:
    return msgpack.packb([COMMAND, client, sequence, ack or sequence, time_ms, data])  # type: ignore[no-any-return]


def encode_register(time_ms: int) -> bytes:
    return msgpack.packb([REGISTER, time_ms])  # type: ignore[no-any-return]


def decode_entry(data: bytes) -> Command | Register:
    """The payload of a committed data entry. Raises ValueError for anything else: entries
    are written by the leader's own driver, so a bad one is a bug, not an attack."""
    try:
        fields = msgpack.unpackb(data, use_list=True, raw=False)
    except (ValueError, msgpack.UnpackException) as exc:
        raise ValueError(f"not a raftfsm entry payload: {exc}") from None
    match fields:
        case [0, int(client), int(sequence), int(ack), int(time_ms), bytes(command)]:
            return Command(client, sequence, ack, time_ms, command)
        case [1, int(time_ms)]:
            return Register(time_ms)
    raise ValueError(f"not a raftfsm entry payload: {fields!r:.80}")


@define
class Session:
    client: int
    last_active_ms: int
    lowest: int = 1
    """Answers to sequence numbers below this are forgotten."""
    answers: dict[int, Outcome] = Factory(dict)


@define
class SessionTable:
    """The sessions of one replicated state machine; see the module docstring."""

    timeout_ms: int = DEFAULT_SESSION_TIMEOUT_MS
    max_sessions: int = DEFAULT_MAX_SESSIONS
    log_time_ms: int = 0
    """The latest time written into an applied entry: the log's clock (never goes back)."""
    sessions: dict[int, Session] = Factory(dict)

    def advance_clock(self, time_ms: int) -> None:
        if time_ms > self.log_time_ms:
            self.log_time_ms = time_ms
            horizon = time_ms - self.timeout_ms
            expired = [c for c, s in self.sessions.items() if s.last_active_ms < horizon]
            for client in expired:
                del self.sessions[client]

    def register(self, client: int, time_ms: int) -> None:
        self.advance_clock(time_ms)
        while len(self.sessions) >= self.max_sessions:
            oldest = min(self.sessions.values(), key=lambda s: (s.last_active_ms, s.client))
            del self.sessions[oldest.client]
        self.sessions[client] = Session(client, self.log_time_ms, 1, {})

    def check(self, command: Command) -> Outcome | None:
        """The answer to give without applying (a duplicate, an unknown session, a stale
        or excess sequence number), or None: apply it, then `record` the outcome."""
        self.advance_clock(command.time_ms)
        session = self.sessions.get(command.client)
        if session is None:
            return Outcome(OutcomeKind.expired, error=f"session {command.client} is unknown or expired")
        session.last_active_ms = self.log_time_ms
        if command.ack > session.lowest:
            session.answers = {seq: o for seq, o in session.answers.items() if seq >= command.ack}
            session.lowest = command.ack
        known = session.answers.get(command.sequence)
        if known is not None:
            return known
        if command.sequence < session.lowest:
            return Outcome(OutcomeKind.stale,
                           error=f"command {command.sequence} of session {command.client} was acknowledged already")
        if len(session.answers) >= MAX_ANSWERS:
            return Outcome(OutcomeKind.rejected,
                           error=f"session {command.client} has {MAX_ANSWERS} unacknowledged answers")
        return None

    def record(self, command: Command, outcome: Outcome) -> None:
        session = self.sessions.get(command.client)
        if session is not None:
            session.answers[command.sequence] = outcome

    # -- snapshots -----------------------------------------------------------------------------
    def pack(self) -> list[Any]:
        return [
            self.log_time_ms,
            [
                [s.client, s.last_active_ms, s.lowest, [[seq, *o.pack()] for seq, o in sorted(s.answers.items())]]
                for s in sorted(self.sessions.values(), key=lambda s: s.client)
            ],
        ]

    def unpack(self, fields: Any) -> None:
        log_time_ms, sessions = fields
        self.log_time_ms = log_time_ms
        self.sessions = {
            client: Session(client, last, lowest, {seq: Outcome.unpack(rest) for seq, *rest in answers})
            for client, last, lowest, answers in sessions
        }

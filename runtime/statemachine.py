"""The user's state machine, as a RaftServer drives it (the seed's RaftNodeStateMachine,
generic over command and result types)."""

from __future__ import annotations

from typing import Protocol, TypeVar

CommandT = TypeVar("CommandT")
ResultT = TypeVar("ResultT", covariant=True)


class StateMachine(Protocol[CommandT, ResultT]):
    """Deterministic: every node applies the same commands in the same order and must
    reach the same state. Commands travel as bytes; `encode`/`decode` convert them."""

    def encode(self, command: CommandT) -> bytes:
        """Turn a command into the bytes stored in the log."""
        ...

    def decode(self, data: bytes) -> CommandT:
        """The inverse of `encode`; it runs on every node for every committed entry."""
        ...

    def apply(self, command: CommandT) -> ResultT:
        """Execute one committed command; the leader returns the result to the client."""
        ...

    def snapshot(self) -> bytes:
        """The whole state as bytes, for log compaction and for slow followers."""
        ...

    def restore(self, data: bytes) -> None:
        """Replace the whole state by a snapshot."""
        ...

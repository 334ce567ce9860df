"""The one contract between raftfsm and an application's state machine (the seed's
RaftNodeStateMachine), generic over command and result types. The simulator and
`RaftServer` drive the same objects through the same `Applier`.

Rules a state machine must keep:

- **Deterministic.** Every node applies the same commands in the same order and must end
  in the same state and return the same results: no clocks, randomness or I/O in `apply`.
- **Refuse before changing anything.** `apply` may raise `CommandRejected` for a command
  it will not execute (a failed precondition, a bad argument); it must do so before it
  changes any state. The command then counts as applied-as-a-no-op on every node and the
  client gets the error. Any other exception is a bug in the state machine: the node
  stops (the error role) with the traceback in its log, and since `apply` is
  deterministic every node will stop on the same entry — fix the bug, then restart.
- **`query` only reads.** Linearizable reads (ReadIndex) call `query` on the state as of
  a committed index; it must not change state (it runs on one node only).
- **Results travel as bytes** (`encode_result`/`decode_result`): they are kept in client
  sessions, in snapshots, and sent to followers' clients.
"""

from __future__ import annotations

from typing import Protocol, TypeVar

from runtime.errors import CommandRejected

__all__ = ["CommandRejected", "CommandT", "ResultT", "StateMachine"]

CommandT = TypeVar("CommandT")
ResultT = TypeVar("ResultT")


class StateMachine(Protocol[CommandT, ResultT]):
    """See the module docstring."""

    def encode(self, command: CommandT) -> bytes:
        """Turn a command into the bytes stored in the log."""
        ...

    def decode(self, data: bytes) -> CommandT:
        """The inverse of `encode`; it runs on every node for every committed command."""
        ...

    def apply(self, command: CommandT) -> ResultT:
        """Execute one committed command and return its result; raise CommandRejected,
        before changing anything, to refuse it."""
        ...

    def query(self, command: CommandT) -> ResultT:
        """Answer a read-only command from the current state, changing nothing."""
        ...

    def encode_result(self, result: ResultT) -> bytes:
        """Turn a result into bytes (kept in sessions and snapshots)."""
        ...

    def decode_result(self, data: bytes) -> ResultT:
        """The inverse of `encode_result`."""
        ...

    def snapshot(self) -> bytes:
        """The whole state as bytes, for log compaction and for slow followers."""
        ...

    def restore(self, data: bytes) -> None:
        """Replace the whole state by a snapshot."""
        ...

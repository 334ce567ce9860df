"""Every exception raftfsm raises on purpose, under one base class, `RaftError`.

Catch `RaftError` for "anything raftfsm refused or reported"; the subclasses say what.
The modules that raise them import them from here (the old homes, `runtime.server`,
`runtime.storage.base`, `runtime.codec`, `runtime.sim`, `runtime.cluster` and
`runtime.transport.auth`, still re-export their names).

Some also derive from a built-in exception, so that generic code keeps working:
`TimeoutError` (`NoLeader`, `ApplyTimeout`), `TypeError` (`MissingCallbacks`),
`ValueError` (`SecretError`) and `AssertionError` (`InvariantViolation`: a checker found a
broken safety property, which test frameworks should report as a failed assertion).

What a client may conclude from each, for a command it asked `RaftServer.apply` to run:

- not applied, safe to retry: `NotLeader`, `NoLeader`, `Overloaded`, `ProposalDropped`,
  `NodeHalted` (raised for commands not proposed yet), `SessionExpired`;
- refused by the state machine, nothing changed: `CommandRejected` (retrying gives the
  same answer);
- may have been applied: `ApplyTimeout` and its subclass `OutcomeUnknown`;
- already answered: `StaleCommand`.
"""

from __future__ import annotations

__all__ = [
    "AppError",
    "ApplyTimeout",
    "ClusterError",
    "CommandRejected",
    "ConfigurationError",
    "CorruptStorage",
    "FrameError",
    "InvalidEvent",
    "InvariantViolation",
    "MembershipChangeRefused",
    "MissingCallbacks",
    "NoLeader",
    "NodeHalted",
    "NotLeader",
    "OutcomeUnknown",
    "Overloaded",
    "ProposalDropped",
    "RaftError",
    "ReadRefused",
    "SecretError",
    "SessionExpired",
    "StaleCommand",
    "StateMachineFailed",
    "StorageError",
]


class RaftError(Exception):
    """Base class of raftfsm's errors."""


class InvalidEvent(RaftError):
    """The spec declares this (role, event) pair an error."""

    def __init__(self, role: str, event: str, doc: str) -> None:
        self.state = role
        self.event = event
        super().__init__(
            f"event {event!r} is not allowed in role {role!r}" + (f": {doc}" if doc else "")
        )


class NotLeader(RaftError):
    """This node is not the leader; `leader_id` names the one it knows of, if any."""

    def __init__(self, node_id: str, leader_id: str | None, leader_address: str | None = None) -> None:
        self.node_id = node_id
        self.leader_id = leader_id
        self.leader_address = leader_address
        hint = f"; the leader is {leader_id}" if leader_id else "; no leader is known yet"
        if leader_address:
            hint += f" at {leader_address}"
        super().__init__(f"node {node_id} is not the leader{hint}")


class NodeHalted(RaftError):
    """The node hit a fatal (storage) error and is in the error role."""


class NoLeader(RaftError, TimeoutError):
    """No leader became known within the time asked for."""


class CommandRejected(RaftError):
    """Raised by a state machine's `apply` to refuse a command before changing anything:
    it is applied as a no-op on every node and the client gets this message."""


class SessionExpired(RaftError):
    """The client session is unknown or expired; the command was not applied. Open a new
    session (the outcome of commands still in flight under the old one is unknown)."""


class StaleCommand(RaftError):
    """The client acknowledged this sequence number already, so its answer is forgotten."""


class Overloaded(RaftError):
    """The leader has too many commands pending (accepted and not yet answered); this one was
    refused before it was proposed, so it was not applied. Retry later."""


class MissingCallbacks(RaftError, TypeError):
    """The handler object given to the dispatcher lacks callbacks the spec uses.

    `missing` maps each missing name to where the spec uses it (e.g. ``"after of
    heartbeat_timeout in leader (fsm_spec/raft.yaml:226)"``)."""

    def __init__(self, handlers: str, missing: dict[str, list[str]]) -> None:
        self.handlers = handlers
        self.missing = missing
        lines = [f"  {name}: {'; '.join(uses)}" for name, uses in sorted(missing.items())]
        super().__init__(
            f"{handlers} lacks {len(missing)} callback(s) the spec uses "
            "(`python -m generator scaffold` prints stubs):\n" + "\n".join(lines)
        )


class MembershipChangeRefused(RaftError):
    """The leader refused a configuration change or a leadership transfer; the message says
    why (one change at a time, not caught up, not a voter, ...). Nothing was changed."""


class ProposalDropped(RaftError):
    """The command was accepted by a leader that lost its office before committing it;
    another entry took its place. It was not applied; the client may retry."""


class ReadRefused(RaftError):
    """The leader lost office while confirming a read; nothing happened, retry."""


class StateMachineFailed(RaftError):
    """The state machine raised something other than CommandRejected: a bug in it."""


class ApplyTimeout(RaftError, TimeoutError):
    """The command was not committed in time. It may still be applied later."""


class OutcomeUnknown(ApplyTimeout):
    """The command was proposed, but this node can no longer tell whether it was applied
    (it halted or stopped, or caught up through a snapshot). Retrying may apply it twice."""


class StorageError(RaftError):
    """The medium failed (I/O error, full disk, lock held, wrong directory); the node can no
    longer promise durability and must stop acknowledging."""


class CorruptStorage(StorageError):
    """What is on disk is not a log this library wrote, or no longer reads back as one.
    Raised at open; nothing is repaired or dropped, so an operator can inspect the files."""


class FrameError(RaftError):
    """A frame (or a message meant to become one) does not fit the wire schema."""


class SecretError(RaftError, ValueError):
    """The cluster secret (or its file) is unusable; the message says why."""


class ClusterError(RaftError):
    """A node of a `LocalCluster` did not start, or the cluster did not reach the expected
    state in time."""


class InvariantViolation(RaftError, AssertionError):
    """A Raft safety or liveness property was broken (raised by the simulator's checkers).
    The message says which, where, and how to replay it.

    It is an `AssertionError` too: it reports a bug in the protocol or in a handler, never
    an operational condition, and test frameworks show it as a failed check. A `RaftServer`
    never raises it."""


class AppError(RaftError, ValueError):
    """`--app package.module:factory` (or `load_app`) names nothing importable, or something
    that does not make an App; the message says which."""


class ConfigurationError(RaftError, ValueError):
    """A cluster configuration (or a change to one) is malformed or not allowed."""

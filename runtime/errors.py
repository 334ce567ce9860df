"""Exceptions users of raftfsm meet."""

from __future__ import annotations


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

"""What crosses the boundary between the sans-I/O core and its driver."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from attrs import Factory, define, field, frozen

from generated.raft_fsm import Entry, Role, WireMessage
from runtime.membership import Configuration


@frozen
class HardState:
    """What must be durable before a node speaks: term, vote and commit index (§5, Figure 2)."""

    term: int = 0
    vote: str | None = None
    commit: int = 0


@frozen
class Snapshot:
    """A state-machine snapshot covering the log up to (index, term); `checksum` is the
    SHA-256 of `data` (computed when not given)."""

    index: int
    term: int
    configuration: Configuration
    data: bytes
    checksum: bytes = field(default=Factory(lambda self: hashlib.sha256(self.data).digest(), takes_self=True))


@frozen
class ReadState:
    """A read may be served once the state machine has applied `index` (thesis §6.4);
    `index` is None if the read was refused (this node or its leader lost office)."""

    request_id: int
    index: int | None


@define
class PendingRead:
    """A read the leader holds until a quorum confirmed its leadership in `round`
    (`origin`: the follower that asked, or None for this node's own client)."""

    request_id: int
    origin: str | None
    index: int | None
    round: int


@frozen
class SoftState:
    """Volatile facts a driver may want to show: the role and the known leader."""

    role: Role
    leader_id: str | None


@frozen
class PersistentState:
    """What a storage hands to a core at start: the last hard state, the last snapshot
    (if any) and the log entries after it."""

    hard_state: HardState
    snapshot: Snapshot | None
    entries: Sequence[Entry]
    configuration: Configuration | None = None
    """The bootstrap configuration stored with the node, if any: used when neither the
    snapshot nor the log holds one."""


@frozen
class Ready:
    """One batch of work for the driver, handled in this order:

    1. persist `snapshot` (it replaces the whole log), `entries` (they replace any stored
       entries from `entries[0].index` on) and `hard_state`, in one transaction;
    2. send `messages`;
    3. restore `snapshot` into the state machine, then apply `committed_entries`;
    0. if `configuration` is set, tell the transport who the peers are now;
    4. call `core.advance(ready)`;
    5. answer `read_states` once the state machine has applied their index.
    """

    messages: Sequence[WireMessage]
    entries: Sequence[Entry]
    hard_state: HardState | None
    committed_entries: Sequence[Entry]
    snapshot: Snapshot | None
    soft_state: SoftState | None
    read_states: Sequence[ReadState] = ()
    configuration: Configuration | None = None
    """The configuration in use changed (a membership change was appended, truncated or
    installed with a snapshot): the driver updates its transport's peers before sending."""

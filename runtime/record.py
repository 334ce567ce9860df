"""The node record: everything a Raft node knows, in one attrs object (the seed's RaftNode)."""

from __future__ import annotations

from collections import deque

from attrs import Factory, define

from generated.raft_fsm import INITIAL_ROLE, Role
from runtime.log import RaftLog
from runtime.ready import Snapshot


@define(slots=True)
class Peer:
    """What a node knows about one other voter (the seed's RaftNodePeer).

    `next_index`/`match_index` are the leader's replication progress (§5.3); `voted` and
    `can_vote` are the candidate's view of the election. `inflight` holds the last index of
    every AppendEntries sent and not yet answered (the pipelining window); `probing` means
    the leader does not know where the peer's log matches and sends one message at a time.
    """

    id: str
    next_index: int = 1
    match_index: int = 0
    voted: bool = False
    can_vote: bool = True
    probing: bool = True
    probe_sent: bool = False
    inflight: deque[int] = Factory(deque)
    recent_active: bool = False
    stalled: bool = False
    snapshot: Snapshot | None = None
    transfer_id: int = 0
    """The id of the snapshot transfer to this peer in progress (see consensus.compaction)."""
    snapshot_wait: int = 0
    snapshot_acked: int = 0
    snapshot_sent: int = 0
    snapshot_resent: int = -1
    read_round: int = 0
    """The highest ReadIndex round this peer echoed in this term (thesis §6.4)."""
    heard_tick: int = -(1 << 62)
    """The leader's tick count when this peer last answered (lease reads)."""
    sent_index: int = 0
    """The highest log index sent to this peer in this term (entries or snapshot): a reply
    acknowledging more is impossible."""


@define(slots=True)
class NodeRecord:
    """Persistent state (term, vote, log), volatile state (commit, applied, leader, role)
    and per-peer state. Only the dispatcher assigns `role`."""

    id: str
    peers: dict[str, Peer]
    log: RaftLog = Factory(RaftLog)
    role: Role = INITIAL_ROLE
    current_term: int = 0
    voted_for: str | None = None
    commit_index: int = 0
    last_applied: int = 0
    leader_id: str | None = None
    halt_reason: str | None = None

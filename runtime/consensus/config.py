"""`Config`: the tuning of one node, in ticks of the driver's clock."""

from __future__ import annotations

from attrs import frozen


@frozen
class Config:
    """Tuning of one node. Times are in ticks of the driver's clock."""

    election_ticks: int = 10
    """Election timeout T: followers campaign after a random timeout in [T, 2T)."""
    heartbeat_ticks: int = 1
    """The leader sends heartbeats this often; must be well below election_ticks."""
    max_entries_per_message: int = 512
    """At most this many entries in one AppendEntries (batching)."""
    max_bytes_per_message: int = 1 << 20
    """...and at most about this many bytes of entry data (at least one entry is sent)."""
    max_inflight: int = 16
    """AppendEntries sent to one follower and not yet answered (pipelining window)."""
    check_quorum: bool = True
    """A leader that hears from no quorum for an election timeout steps down."""
    pre_vote: bool = True
    """Ask before campaigning (thesis §9.6): a node cut off from the cluster does not raise
    its term, so it cannot depose a healthy leader when it comes back."""
    read_mode: str = "index"
    """How a leader confirms a linearizable read: "index" (ReadIndex, one heartbeat round
    per batch of reads) or "lease" (no round while a quorum answered within the last
    election_ticks - lease_drift_ticks ticks; assumes CheckQuorum and bounded clock drift)."""
    lease_drift_ticks: int = 2
    """Lease reads: how many ticks of an election timeout are set aside for clock drift."""
    max_promotion_lag: int = 1000
    """A learner is promoted to voter only once it is at most this many entries behind the
    leader's log."""
    max_snapshot_bytes: int = 1 << 32
    """An incoming snapshot larger than this is refused (its chunks are invalid messages)."""
    snapshot_timeout_ticks: int = 0
    """An unfinished incoming snapshot is dropped after this many ticks without a chunk;
    0 means four election timeouts."""
    seed: int | None = None
    """Seed of the node's own RNG (randomized election timeouts). None, the default, draws
    one from the operating system, so nodes built from the same Config time out at
    different moments; set it only to replay a run (the simulator gives each node its own)."""

    def __attrs_post_init__(self) -> None:
        if self.election_ticks < 2 or self.heartbeat_ticks < 1:
            raise ValueError("election_ticks must be >= 2 and heartbeat_ticks >= 1")
        if self.heartbeat_ticks >= self.election_ticks:
            raise ValueError("heartbeat_ticks must be smaller than election_ticks")
        if self.max_entries_per_message < 1 or self.max_inflight < 1:
            raise ValueError("max_entries_per_message and max_inflight must be >= 1")
        if self.read_mode not in ("index", "lease"):
            raise ValueError(f"read_mode must be 'index' or 'lease', not {self.read_mode!r}")
        if self.read_mode == "lease" and not (self.check_quorum and 0 < self.lease_drift_ticks < self.election_ticks):
            raise ValueError("lease reads need check_quorum and 0 < lease_drift_ticks < election_ticks")

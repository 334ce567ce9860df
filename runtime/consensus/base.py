"""State and helpers shared by every concern of the handlers.

`ConsensusBase` holds what the guards and actions of all concerns read and write besides
the `NodeRecord`: the outbox, timers, the node's RNG and the latest snapshot. Each concern
(election, replication, compaction) is a subclass; `Consensus` combines them. Methods one
concern calls on another are declared here, so each module type-checks on its own.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Sequence

from generated.raft_fsm import Entry, FatalError, WireMessage
from runtime.consensus.config import Config
from runtime.membership import Configuration
from runtime.ready import PendingRead, ReadState, Snapshot
from runtime.record import NodeRecord, Peer


class ConsensusBase:
    """See the module docstring. Outgoing messages are appended to `outbox`; the core
    hands them out in a Ready."""

    def __init__(self, record: NodeRecord, config: Config, configuration: Configuration) -> None:
        self.record = record
        self.config = config
        self.base_configuration = configuration
        """The configuration as of the log's offset (a snapshot's, or the bootstrap one)."""
        self.config_log: list[tuple[int, Configuration]] = []
        """(index, configuration) of every configuration entry in the log after the offset."""
        self.configuration = configuration
        """The latest configuration in the log, committed or not: the one this node uses."""
        self.known_ids: set[str] = set(configuration.ids)
        """Every node of every configuration this node has seen: it hears from all of them."""
        self.voters = configuration.voters
        self.quorum = len(self.voters) // 2 + 1
        self.self_votes = 1 if configuration.is_voter(record.id) else 0
        """1 if this node is a voter of its configuration (it counts itself toward quorums)."""
        self.config_commit_seen = 0
        """The last configuration entry the leader saw committed (configuration_committed)."""
        self.transfer_target: str | None = None
        """The voter this leader is handing over to, if any."""
        self.transfer_started = 0
        self.timeout_now_sent = False
        self.rng = random.Random(config.seed)
        self.outbox: list[WireMessage] = []
        self.next_msg_id = 1
        self.election_elapsed = 0
        self.heartbeat_elapsed = 0
        self.randomized_timeout = 0
        self.reset_election_timer()
        self.pending_broadcast = False
        self.snapshot: Snapshot | None = None
        """The latest snapshot this node has (made locally or installed); sent to laggards."""
        self.received_snapshot: Snapshot | None = None
        """A snapshot installed from the leader and not yet handed to the driver."""
        self._snapshot_chunks = bytearray()
        self._snapshot_stream: tuple[int, int, int] | None = None
        """(leader term, index, transfer id) of the transfer whose bytes are in _snapshot_chunks."""
        self._snapshot_ahead: dict[int, bytes] = {}
        """Chunks of that transfer that arrived ahead of a gap, by offset."""
        self._snapshot_hash = hashlib.sha256()
        self.transfers = 0
        """Snapshot transfers this node started as leader (the next transfer id)."""
        self._snapshot_idle = 0
        """Ticks since the last chunk of the unfinished incoming snapshot."""
        self.ticks = 0
        """Ticks since this node started (lease reads measure time in ticks)."""
        self.read_round = 0
        """The leader's ReadIndex round: every AppendEntries carries it, replies echo it."""
        self.read_round_wanted = False
        """A read waits for a round that has not been broadcast yet."""
        self.pending_reads: list[PendingRead] = []
        self.read_states: list[ReadState] = []
        """Reads answered since the last Ready, handed to the driver in the next one."""
        self.last_proposal = (0, 0, 0)
        """(first index, last index, term) of the latest accepted proposal."""

    # -- helpers -----------------------------------------------------------------------
    def _msg_id(self) -> int:
        self.next_msg_id += 1
        return self.next_msg_id

    def reset_election_timer(self) -> None:
        """§5.2: randomized election timeouts in [T, 2T) keep split votes rare."""
        self.election_elapsed = 0
        timeout = self.config.election_ticks
        self.randomized_timeout = timeout + self.rng.randrange(timeout)

    def _voting_peers(self) -> list[Peer]:
        return [p for p in self.record.peers.values() if p.can_vote]

    def drop_incoming_snapshot(self) -> None:
        """Forget an unfinished incoming snapshot (a new term, or its leader went quiet):
        a transfer that never finishes must not hold its memory for ever."""
        self._snapshot_stream = None
        self._snapshot_chunks = bytearray()
        self._snapshot_ahead = {}
        self._snapshot_idle = 0

    def age_incoming_snapshot(self) -> None:
        """One tick passed; drop an unfinished incoming snapshot that stalled."""
        if self._snapshot_stream is None:
            return
        self._snapshot_idle += 1
        limit = self.config.snapshot_timeout_ticks or 4 * self.config.election_ticks
        if self._snapshot_idle > limit:
            self.drop_incoming_snapshot()

    # -- provided by other concerns ------------------------------------------------------
    def replicate(self, peer: Peer, heartbeat: bool = False) -> None:
        raise NotImplementedError

    def maybe_commit(self) -> bool:
        raise NotImplementedError

    def _back_to_probe(self, peer: Peer, next_index: int) -> None:
        raise NotImplementedError

    def _send_snapshot(self, peer: Peer, heartbeat: bool) -> None:
        raise NotImplementedError

    def release_reads(self) -> None:
        raise NotImplementedError

    def note_entries(self, entries: Sequence[Entry]) -> None:
        raise NotImplementedError

    def note_truncation(self, index: int) -> None:
        raise NotImplementedError

    def maybe_send_timeout_now(self, peer: Peer) -> None:
        raise NotImplementedError

    def campaign(self, leadership_transfer: bool = False) -> None:
        raise NotImplementedError

    def note_compaction(self, offset: int) -> None:
        raise NotImplementedError

    def note_snapshot(self, configuration: Configuration) -> None:
        raise NotImplementedError

    def abort_reads(self) -> None:
        raise NotImplementedError

    # -- failure -----------------------------------------------------------------------------------
    def halt(self, message: FatalError, /) -> None:
        """Storage failed: forget everything not yet handed out and go quiet."""
        record = self.record
        record.halt_reason = message.reason
        record.leader_id = None
        self.outbox.clear()
        self.pending_broadcast = False
        self.received_snapshot = None

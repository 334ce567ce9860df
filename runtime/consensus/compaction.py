"""Log compaction (§7): chunked InstallSnapshot transfers, leader and follower side."""

from __future__ import annotations

from generated.raft_fsm import InstallSnapshot, InstallSnapshotReply
from runtime.consensus.base import ConsensusBase
from runtime.ready import Snapshot
from runtime.record import Peer


class Compaction(ConsensusBase):
    """Guards and actions of the snapshot rows of the spec."""

    def _send_snapshot(self, peer: Peer, heartbeat: bool) -> None:
        """Chunks go out in a window of max_inflight; each is answered with the offset the
        follower has reached. A repeated offset (a gap) resends that chunk once; a window
        unanswered for an election timeout is sent again."""
        if peer.snapshot is None:
            # the transfer keeps this snapshot even if we compact again meanwhile, or a
            # large snapshot would never finish under frequent compaction
            peer.snapshot = self.snapshot
            assert peer.snapshot is not None, "entries below the log offset exist only in a snapshot"
            peer.probing = True
            peer.probe_sent = True
            peer.stalled = False
            self._restart_snapshot(peer)
            return
        if heartbeat:
            peer.snapshot_wait += 1
            config = self.config
            if peer.snapshot_wait >= max(2, config.election_ticks // config.heartbeat_ticks):
                # unanswered for an election timeout: probe with one chunk, and resume the
                # window only once the follower answers
                peer.snapshot_sent = self._send_chunk(peer, peer.snapshot_acked)
                peer.snapshot_resent = -1

    def _restart_snapshot(self, peer: Peer) -> None:
        peer.snapshot_acked = peer.snapshot_sent = 0
        peer.snapshot_resent = -1
        self._pump_snapshot(peer, force=True)

    def _pump_snapshot(self, peer: Peer, force: bool = False) -> None:
        """Send chunks from snapshot_sent while the window allows (at least one if forced)."""
        snapshot = peer.snapshot
        assert snapshot is not None
        size = len(snapshot.data)
        chunk = max(1, self.config.max_bytes_per_message)
        window = chunk * self.config.max_inflight
        while (force or peer.snapshot_sent < size) and peer.snapshot_sent - peer.snapshot_acked < window:
            peer.snapshot_sent = self._send_chunk(peer, peer.snapshot_sent)
            force = False

    def _send_chunk(self, peer: Peer, offset: int) -> int:
        """Send the chunk at `offset`; return where it ends."""
        snapshot = peer.snapshot
        assert snapshot is not None
        record = self.record
        peer.snapshot_wait = 0
        if snapshot.index > peer.sent_index:
            peer.sent_index = snapshot.index
        part = snapshot.data[offset : offset + max(1, self.config.max_bytes_per_message)]
        end = offset + len(part)
        self.outbox.append(
            InstallSnapshot(self._msg_id(), record.id, peer.id, record.current_term, record.id,
                            snapshot.index, snapshot.term, snapshot.configuration, offset,
                            part, end >= len(snapshot.data))
        )
        return end

    def snapshot_from_current_leader(self, message: InstallSnapshot, /) -> bool:
        return message.term == self.record.current_term

    def accept_snapshot(self, message: InstallSnapshot, /) -> None:
        record = self.record
        record.leader_id = message.leader_id
        self.election_elapsed = 0
        index = message.last_included_index
        if index <= record.commit_index or record.log.term_at(index) == message.last_included_term:
            # we already hold everything up to the snapshot's last entry (committed here, or
            # present with its term, hence everything before it by Log Matching): keep the
            # log, including what follows, and just commit (§7). Answer once per transfer.
            record.commit_index = max(record.commit_index, index)
            self._snapshot_reply(message, message.offset + len(message.data), True)
            return
        self._snapshot_idle = 0
        stream = (index, message.last_included_term)
        if message.offset == 0 and stream != self._snapshot_stream:
            self._snapshot_stream = stream  # a new transfer (a repeated first chunk is a duplicate)
            self._snapshot_chunks = bytearray()
        elif stream != self._snapshot_stream:
            # a chunk of a transfer we do not hold: never splice two snapshots together
            self._snapshot_reply(message, 0, False)
            return
        elif message.offset != len(self._snapshot_chunks):
            # a duplicate, or a chunk went missing: say where we are
            self._snapshot_reply(message, len(self._snapshot_chunks), False)
            return
        self._snapshot_chunks += message.data
        if not message.done:
            self._snapshot_reply(message, len(self._snapshot_chunks), False)
            return
        snapshot = Snapshot(index, message.last_included_term, tuple(message.configuration),
                            bytes(self._snapshot_chunks))
        self._snapshot_stream = None
        self._snapshot_chunks = bytearray()
        record.log.restore(snapshot.index, snapshot.term)
        record.commit_index = snapshot.index
        self.snapshot = snapshot
        self.received_snapshot = snapshot
        self._snapshot_reply(message, len(snapshot.data), True)

    def reject_stale_snapshot(self, message: InstallSnapshot, /) -> None:
        self._snapshot_reply(message, 0, False)

    def _snapshot_reply(self, message: InstallSnapshot, next_offset: int, done: bool) -> None:
        record = self.record
        self.outbox.append(
            InstallSnapshotReply(self._msg_id(), record.id, message.sender, record.current_term,
                                 message.last_included_index, next_offset, done)
        )

    def handle_snapshot_reply(self, message: InstallSnapshotReply, /) -> None:
        record = self.record
        peer = record.peers.get(message.sender)
        if peer is None or message.term != record.current_term:
            return
        peer.recent_active = True
        peer.heard_tick = self.ticks
        index = message.last_included_index
        if message.done and index > peer.match_index:
            peer.match_index = index  # it holds everything up to the snapshot
            self.maybe_commit()
        if peer.snapshot is None or index != peer.snapshot.index:
            return  # an answer about an earlier transfer, or a duplicate
        if message.done:
            # replicate from what the follower now has
            peer.snapshot = None
            self._back_to_probe(peer, peer.match_index + 1)
            self.replicate(peer)
        elif message.next_offset == 0:
            self._restart_snapshot(peer)  # the follower lost the transfer: start over
        elif message.next_offset > peer.snapshot_acked:
            peer.snapshot_acked = message.next_offset
            peer.snapshot_sent = max(peer.snapshot_sent, message.next_offset)
            self._pump_snapshot(peer)
        elif message.next_offset == peer.snapshot_acked and peer.snapshot_resent != peer.snapshot_acked:
            peer.snapshot_resent = peer.snapshot_acked  # a gap at the follower: fill it once
            self._send_chunk(peer, peer.snapshot_acked)

"""Log compaction (§7): chunked InstallSnapshot transfers, leader and follower side.

A transfer is identified end to end by (leader term, snapshot index, transfer id); the
leader picks a new transfer id whenever it (re)starts sending a snapshot to a follower,
and every chunk carries the snapshot's size and SHA-256. The follower:

- keeps one transfer at a time, replacing it when a chunk of another transfer arrives,
  so chunks of two transfers (or two snapshots) are never combined;
- holds chunks that arrive ahead of a gap (up to a bound), so one lost chunk costs one
  resend, not a window;
- answers every chunk with how many bytes it holds contiguously (`next_offset`), 0 if it
  holds nothing of that transfer, and installs the snapshot only when the bytes match the
  checksum.

The leader moves its acknowledgement only forward; a reply about another transfer, or an
older acknowledgement, is stale (the spec's `snapshot_reply_is_stale`); a reply repeating
the acknowledged offset means the chunk there was lost and is resent once; a reply of 0
after progress means the follower lost the transfer (it restarted), which starts a new
transfer. A transfer nobody answers for an election timeout is probed with one chunk.
"""

from __future__ import annotations

import hashlib

from generated.raft_fsm import InstallSnapshot, InstallSnapshotReply
from runtime.consensus.base import ConsensusBase
from runtime.membership import Configuration
from runtime.ready import Snapshot
from runtime.record import Peer


class Compaction(ConsensusBase):
    """Guards and actions of the snapshot rows of the spec."""

    # -- leader --------------------------------------------------------------------------------
    def _send_snapshot(self, peer: Peer, heartbeat: bool) -> None:
        if peer.snapshot is None:
            # the transfer keeps this snapshot even if we compact again meanwhile, or a
            # large snapshot would never finish under frequent compaction
            assert self.snapshot is not None, "entries below the log offset exist only in a snapshot"
            peer.probing = True
            peer.probe_sent = True
            peer.stalled = False
            self._start_transfer(peer, self.snapshot)
            return
        if heartbeat:
            peer.snapshot_wait += 1
            config = self.config
            if peer.snapshot_wait >= max(2, config.election_ticks // config.heartbeat_ticks):
                # unanswered for an election timeout: probe with one chunk, and resume the
                # window only once the follower answers
                peer.snapshot_sent = max(peer.snapshot_sent, self._send_chunk(peer, peer.snapshot_acked))
                peer.snapshot_resent = peer.snapshot_acked

    def _start_transfer(self, peer: Peer, snapshot: Snapshot) -> None:
        self.transfers += 1
        peer.snapshot = snapshot
        peer.transfer_id = self.transfers
        peer.snapshot_acked = peer.snapshot_sent = 0
        peer.snapshot_resent = -1
        self._pump_snapshot(peer, force=True)

    def _pump_snapshot(self, peer: Peer, force: bool = False) -> None:
        """Send chunks from snapshot_sent while the window allows (at least one if forced)."""
        snapshot = peer.snapshot
        assert snapshot is not None
        size = len(snapshot.data)
        window = self._chunk_size() * self.config.max_inflight
        while (force or peer.snapshot_sent < size) and peer.snapshot_sent - peer.snapshot_acked < window:
            peer.snapshot_sent = self._send_chunk(peer, peer.snapshot_sent)
            force = False

    def _chunk_size(self) -> int:
        return max(1, self.config.max_bytes_per_message)

    def _send_chunk(self, peer: Peer, offset: int) -> int:
        """Send the chunk at `offset`; return where it ends."""
        snapshot = peer.snapshot
        assert snapshot is not None
        record = self.record
        peer.snapshot_wait = 0
        if snapshot.index > peer.sent_index:
            peer.sent_index = snapshot.index
        size = len(snapshot.data)
        part = snapshot.data[offset : offset + self._chunk_size()]
        end = offset + len(part)
        self.outbox.append(
            InstallSnapshot(self._msg_id(), record.id, peer.id, record.current_term, record.id,
                            snapshot.index, snapshot.term, snapshot.configuration.encode(), peer.transfer_id, size,
                            snapshot.checksum, offset, part, end >= size)
        )
        return end

    def snapshot_reply_is_stale(self, message: InstallSnapshotReply, /) -> bool:
        peer = self.record.peers.get(message.sender)
        if peer is None or message.term != self.record.current_term:
            return True
        snapshot = peer.snapshot
        if snapshot is None or message.transfer_id != peer.transfer_id or message.last_included_index != snapshot.index:
            # about another transfer; a late "done" of a finished one changes nothing either
            # except the match index, which only a current reply may raise
            return True
        return not message.done and 0 < message.next_offset < peer.snapshot_acked

    def note_peer_active(self, message: InstallSnapshotReply, /) -> None:
        peer = self.record.peers.get(message.sender)
        if peer is not None and message.term == self.record.current_term:
            peer.recent_active = True
            peer.heard_tick = self.ticks

    def handle_snapshot_reply(self, message: InstallSnapshotReply, /) -> None:
        peer = self.record.peers[message.sender]
        snapshot = peer.snapshot
        assert snapshot is not None, "guarded by snapshot_reply_is_stale"
        self.note_peer_active(message)
        if message.done:
            if snapshot.index > peer.match_index:
                peer.match_index = snapshot.index  # it holds everything up to the snapshot
                self.maybe_commit()
            peer.snapshot = None
            self._back_to_probe(peer, peer.match_index + 1)
            self.replicate(peer)
        elif message.next_offset > peer.snapshot_acked:
            peer.snapshot_acked = message.next_offset
            peer.snapshot_sent = max(peer.snapshot_sent, message.next_offset)
            peer.snapshot_resent = -1
            self._pump_snapshot(peer)
        elif message.next_offset == 0 and peer.snapshot_acked > 0:
            self._start_transfer(peer, snapshot)  # the follower lost the transfer: a new one
        elif peer.snapshot_resent != peer.snapshot_acked:
            # it repeats what it was acknowledged for: the chunk there was lost; send it once
            peer.snapshot_resent = peer.snapshot_acked
            self._send_chunk(peer, peer.snapshot_acked)

    # -- follower ------------------------------------------------------------------------------
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
            # log, including what follows, and just commit (§7)
            record.commit_index = max(record.commit_index, index)
            self._snapshot_reply(message, message.size, True)
            return
        self._snapshot_idle = 0
        stream = (message.term, index, message.transfer_id)
        if stream != self._snapshot_stream:
            self.drop_incoming_snapshot()
            self._snapshot_stream = stream
            self._snapshot_hash = hashlib.sha256()
        chunks = self._snapshot_chunks
        held = len(chunks)
        offset = message.offset
        if offset > held:
            # ahead of a gap: hold it (within a bound) until the gap is filled
            if offset - held <= self._chunk_size() * max(2, 2 * self.config.max_inflight):
                self._snapshot_ahead[offset] = message.data
            self._snapshot_reply(message, held, False)
            return
        if offset + len(message.data) > held:
            self._append_chunk(message.data[held - offset :])
            ahead = self._snapshot_ahead
            while ahead:
                held = len(chunks)
                start = min(ahead)
                if start > held:
                    break
                data = ahead.pop(start)
                if start + len(data) > held:
                    self._append_chunk(data[held - start :])
        if len(chunks) < message.size:
            self._snapshot_reply(message, len(chunks), False)
            return
        if len(chunks) != message.size or self._snapshot_hash.digest() != message.checksum:
            # damaged in transit or in memory: never install it; start over
            self.drop_incoming_snapshot()
            self._snapshot_reply(message, 0, False)
            return
        snapshot = Snapshot(index, message.last_included_term, Configuration.decode(message.configuration),
                            bytes(chunks), message.checksum)
        self.drop_incoming_snapshot()
        record.log.restore(snapshot.index, snapshot.term)
        self.note_snapshot(snapshot.configuration)
        record.commit_index = snapshot.index
        self.snapshot = snapshot
        self.received_snapshot = snapshot
        self._snapshot_reply(message, len(snapshot.data), True)

    def _append_chunk(self, data: bytes) -> None:
        self._snapshot_chunks += data
        self._snapshot_hash.update(data)

    def reject_stale_snapshot(self, message: InstallSnapshot, /) -> None:
        self._snapshot_reply(message, 0, False)

    def _snapshot_reply(self, message: InstallSnapshot, next_offset: int, done: bool) -> None:
        record = self.record
        self.outbox.append(
            InstallSnapshotReply(self._msg_id(), record.id, message.sender, record.current_term,
                                 message.last_included_index, message.transfer_id, next_offset, done)
        )

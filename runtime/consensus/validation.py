"""The core's trust boundary: messages that are well-formed but impossible.

The codec has already checked every field's type and range. What is left are messages
that no correct peer sends: an AppendEntries whose entries are not contiguous, carry a
term above the leader's own or would overwrite a committed entry; a reply acknowledging
entries that were never sent; a term no storage can hold. `RaftCore.step` asks
`invalid_reason` before anything else and drops such a message without a trace in the
node's state, so a buggy or forged message can at worst be ignored, never halt the node
(the error role is for local storage and state-machine failures only).

The checks are cheap (the ends of the entry list, a few comparisons) because they run
for every message.
"""

from __future__ import annotations

from generated.raft_fsm import (
    AppendEntries,
    AppendEntriesReply,
    InstallSnapshot,
    InstallSnapshotReply,
    PreVote,
    RequestVote,
    Role,
    WireMessage,
)
from runtime.consensus.base import ConsensusBase
from runtime.limits import MAX_TERM
from runtime.membership import Configuration, ConfigurationError


class Validation(ConsensusBase):
    """`invalid_reason(message)`: None for a message the handlers may see, else why not."""

    def invalid_reason(self, message: WireMessage) -> str | None:
        if message.term > MAX_TERM:
            return f"term {message.term} is larger than storage can hold ({MAX_TERM})"
        kind = type(message)
        if kind is AppendEntries:
            return self._invalid_append(message)  # type: ignore[arg-type]
        if kind is AppendEntriesReply:
            return self._invalid_append_reply(message)  # type: ignore[arg-type]
        if kind is InstallSnapshot:
            return self._invalid_snapshot(message)  # type: ignore[arg-type]
        if kind is InstallSnapshotReply:
            return self._invalid_snapshot_reply(message)  # type: ignore[arg-type]
        if kind is RequestVote or kind is PreVote:
            return self._invalid_vote_request(message)  # type: ignore[arg-type]
        return None

    def _invalid_vote_request(self, message: RequestVote | PreVote) -> str | None:
        if message.candidate_id != message.sender:
            return f"candidate_id {message.candidate_id!r} is not the sender"
        if message.last_log_term > message.term:
            return f"last_log_term {message.last_log_term} is above the election's term {message.term}"
        if (message.last_log_index == 0) != (message.last_log_term == 0):
            return f"last log entry ({message.last_log_index}, {message.last_log_term}) is impossible"
        return None

    def _invalid_append(self, message: AppendEntries) -> str | None:
        if message.leader_id != message.sender:
            return f"leader_id {message.leader_id!r} is not the sender"
        prev_index, prev_term = message.prev_log_index, message.prev_log_term
        if (prev_index == 0) != (prev_term == 0):
            return f"previous entry ({prev_index}, {prev_term}) is impossible"
        if prev_term > message.term:
            return f"prev_log_term {prev_term} is above the leader's term {message.term}"
        entries = message.entries
        if entries:
            first, last = entries[0], entries[-1]
            if first.index != prev_index + 1 or last.index != prev_index + len(entries):
                return (f"{len(entries)} entries span {first.index}..{last.index}, "
                        f"not contiguous from prev_log_index {prev_index} + 1")
            if first.term < max(prev_term, 1) or last.term > message.term:
                return (f"entry terms {first.term}..{last.term} are outside {max(prev_term, 1)}..{message.term} "
                        "(at least the previous entry's, at most the leader's)")
            term = first.term
            for position, entry in enumerate(entries):
                if entry.index != prev_index + 1 + position:
                    return f"entry {position} has index {entry.index}, expected {prev_index + 1 + position}"
                if entry.term < term:
                    return f"entry terms decrease at index {entry.index} ({term} then {entry.term})"
                term = entry.term
        if message.term < self.record.current_term:
            return None  # stale: it will only be answered with our term
        return self._conflicts_with_committed(message)

    def _conflicts_with_committed(self, message: AppendEntries) -> str | None:
        """A leader's log holds every committed entry (§5.4.1, Leader Completeness), so an
        AppendEntries that disagrees with this node's log at or below its commit index
        cannot come from a correct leader; following it would rewrite committed history."""
        log = self.record.log
        commit = self.record.commit_index
        prev_index = message.prev_log_index
        if log.offset <= prev_index <= commit:
            local = log.term_at(prev_index)
            if local is not None and local != message.prev_log_term:
                return (f"prev entry ({prev_index}, term {message.prev_log_term}) conflicts with the committed "
                        f"entry of term {local}")
        for entry in message.entries:
            index = entry.index
            if index > commit:
                break
            if index <= log.offset:
                continue
            local = log.term_at(index)
            if local is not None and local != entry.term:
                return f"entry {index} of term {entry.term} would overwrite a committed entry of term {local}"
        return None

    def _invalid_append_reply(self, message: AppendEntriesReply) -> str | None:
        if message.conflict_term > message.term:
            return f"conflict_term {message.conflict_term} is above the follower's term {message.term}"
        record = self.record
        if record.role is not Role.leader or message.term != record.current_term:
            return None  # not ours to judge: it is ignored as a late reply
        peer = record.peers.get(message.sender)
        if peer is None:
            return None  # not a member any more: its reply is ignored
        if message.success and message.match_index > peer.sent_index:
            return f"match_index {message.match_index} is beyond what was sent to it ({peer.sent_index})"
        if not message.success and message.reject_index > peer.sent_index:
            return f"reject_index {message.reject_index} is beyond what was sent to it ({peer.sent_index})"
        return None

    def _invalid_snapshot(self, message: InstallSnapshot) -> str | None:
        if message.leader_id != message.sender:
            return f"leader_id {message.leader_id!r} is not the sender"
        if message.last_included_index < 1 or message.last_included_term < 1:
            return (f"a snapshot must cover at least one entry, not "
                    f"({message.last_included_index}, {message.last_included_term})")
        if message.last_included_term > message.term:
            return f"last_included_term {message.last_included_term} is above the leader's term {message.term}"
        if message.size > self.config.max_snapshot_bytes:
            return f"a snapshot of {message.size} bytes is over the limit of {self.config.max_snapshot_bytes}"
        end = message.offset + len(message.data)
        if end > message.size:
            return f"chunk ends at byte {end}, beyond the snapshot's {message.size} bytes"
        if len(message.checksum) != 32:
            return f"checksum of {len(message.checksum)} bytes is not a SHA-256"
        try:
            Configuration.decode(message.configuration)
        except ConfigurationError as exc:
            return f"its configuration is malformed: {exc}"
        if message.term < self.record.current_term:
            return None
        log = self.record.log
        index = message.last_included_index
        if log.offset < index <= self.record.commit_index:
            local = log.term_at(index)
            if local is not None and local != message.last_included_term:
                return (f"snapshot at ({index}, term {message.last_included_term}) conflicts with the committed "
                        f"entry of term {local}")
        return None

    def _invalid_snapshot_reply(self, message: InstallSnapshotReply) -> str | None:
        record = self.record
        if record.role is not Role.leader or message.term != record.current_term:
            return None
        peer = record.peers.get(message.sender)
        if peer is None:
            return None  # not a member any more: its reply is ignored
        if message.last_included_index > peer.sent_index:
            return (f"acknowledges a snapshot at {message.last_included_index}, beyond what was sent to it "
                    f"({peer.sent_index})")
        snapshot = peer.snapshot
        if snapshot is not None and message.last_included_index == snapshot.index \
                and message.next_offset > len(snapshot.data):
            return f"next_offset {message.next_offset} is beyond the snapshot's {len(snapshot.data)} bytes"
        return None

"""Leadership transfer (Raft thesis §3.10).

The leader stops accepting proposals (clients get a retry answer), brings the target up to
date, and sends it `TimeoutNow`; the target campaigns at once, without PreVote, and its
RequestVotes carry `leadership_transfer` so that voters set leader stickiness aside. A
transfer not done within an election timeout is abandoned (the leader's CheckQuorum row
runs `expire_transfer`), and the leader accepts proposals again.
"""

from __future__ import annotations

from generated.raft_fsm import Proposal, TimeoutNow, TransferRequest
from runtime.consensus.base import ConsensusBase
from runtime.errors import MembershipChangeRefused
from runtime.record import Peer


class Transfer(ConsensusBase):
    """Guards and actions of the transfer rows."""

    def _transfer_target(self, message: TransferRequest) -> str | None:
        if message.target is not None:
            return message.target
        peers = [p for p in self.record.peers.values() if p.can_vote]
        if not peers:
            return None
        return max(peers, key=lambda p: (p.match_index, p.id)).id

    def _transfer_refusal(self, message: TransferRequest) -> str | None:
        if self.transfer_target is not None:
            return f"a leadership transfer to {self.transfer_target} is under way"
        target = self._transfer_target(message)
        if target is None:
            return "there is no other voter to hand over to"
        if target == self.record.id:
            return f"{target} is the leader already"
        if not self.configuration.is_voter(target):
            return f"{target} is not a voter ({self.configuration.describe()})"
        return None

    def transfer_allowed(self, message: TransferRequest, /) -> bool:
        return self._transfer_refusal(message) is None

    def refuse_transfer(self, message: TransferRequest, /) -> None:
        raise MembershipChangeRefused(self._transfer_refusal(message) or "refused")

    def transferring(self, message: Proposal, /) -> bool:
        return self.transfer_target is not None

    def start_transfer(self, message: TransferRequest, /) -> None:
        target = self._transfer_target(message)
        assert target is not None, "guarded by transfer_allowed"
        self.transfer_target = target
        self.transfer_started = self.ticks
        self.timeout_now_sent = False
        peer = self.record.peers[target]
        self.maybe_send_timeout_now(peer)
        if not self.timeout_now_sent:
            self.replicate(peer)

    def maybe_send_timeout_now(self, peer: Peer) -> None:
        """Once the target holds the whole log, tell it to campaign (once per transfer)."""
        record = self.record
        if (self.transfer_target == peer.id and not self.timeout_now_sent
                and peer.match_index >= record.log.last_index):
            self.timeout_now_sent = True
            self.outbox.append(TimeoutNow(self._msg_id(), record.id, peer.id, record.current_term))

    def expire_transfer(self) -> None:
        if self.transfer_target is not None and self.ticks - self.transfer_started >= self.config.election_ticks:
            self.transfer_target = None
            self.timeout_now_sent = False

    def from_leader_to_voter(self, message: TimeoutNow, /) -> bool:
        record = self.record
        return (message.term == record.current_term and message.sender == record.leader_id
                and bool(self.self_votes))

    def start_transfer_election(self, message: TimeoutNow, /) -> None:
        self.campaign(leadership_transfer=True)

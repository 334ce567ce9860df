"""Messages no correct node sends, for the simulator's forger and the fuzz tests.

Two kinds: messages from a stranger (a sender outside the configuration, any content),
and messages of a cluster member made impossible by one mutation that the core's
validation must recognise (entries that are not contiguous, terms above the message's,
acknowledgements of what was never sent, a term storage cannot hold...). A plausible
forgery in a member's name cannot be told from the real thing by Raft itself: keeping
those out is the transport's job (mutual TLS or the cluster secret), so they are not
generated here.
"""

from __future__ import annotations

import random

import attrs

from generated.raft_fsm import (
    AppendEntries,
    AppendEntriesReply,
    Entry,
    EntryKind,
    InstallSnapshot,
    InstallSnapshotReply,
    PreVote,
    PreVoteReply,
    RequestVote,
    RequestVoteReply,
    WireMessage,
)
from runtime.limits import MAX_WIRE_INT
from runtime.membership import Configuration

STRANGER = "mallory"
"""The sender id of messages from outside the configuration."""

_BIG = 10**12
"""An index far beyond anything a simulated log reaches."""


def _number(rng: random.Random) -> int:
    return rng.choice((0, 1, 2, 7, rng.randrange(100), _BIG, MAX_WIRE_INT))


def _entries(rng: random.Random, first: int, term: int) -> tuple[Entry, ...]:
    return tuple(
        Entry(max(1, term - rng.randrange(2)), first + i, EntryKind.data, b"forged") for i in range(rng.randrange(4))
    )


def from_stranger(rng: random.Random, receiver: str, msg_id: int) -> WireMessage:
    """Any message, with any fields in range, claiming to come from `STRANGER`."""
    term = _number(rng)
    sender = STRANGER
    kind = rng.randrange(8)
    if kind == 0:
        return RequestVote(msg_id, sender, receiver, term, sender, _number(rng), _number(rng))
    if kind == 1:
        return RequestVoteReply(msg_id, sender, receiver, term, True)
    if kind == 2:
        return PreVote(msg_id, sender, receiver, term, sender, _number(rng), _number(rng))
    if kind == 3:
        return PreVoteReply(msg_id, sender, receiver, term, True)
    if kind == 4:
        prev = _number(rng)
        return AppendEntries(msg_id, sender, receiver, term, sender, prev, _number(rng),
                             _entries(rng, prev + 1, term), _number(rng), _number(rng))
    if kind == 5:
        return AppendEntriesReply(msg_id, sender, receiver, term, True, _number(rng), 0, 0, 0, _number(rng))
    if kind == 6:
        return InstallSnapshot(msg_id, sender, receiver, term, sender, _number(rng), _number(rng),
                               Configuration.voters_only((sender,)).encode(), _number(rng), 6, bytes(32), 0,
                               b"forged", True)
    return InstallSnapshotReply(msg_id, sender, receiver, term, _number(rng), _number(rng), _number(rng), True)


def impossible(rng: random.Random, message: WireMessage) -> WireMessage | None:
    """`message` (a real one) with one mutation that makes it invalid, or None if this
    message type has none that is invalid whatever the receiver's state."""
    choices: list[WireMessage] = [attrs.evolve(message, term=MAX_WIRE_INT + 1)]
    if isinstance(message, AppendEntries):
        choices.append(attrs.evolve(message, leader_id=_other(message)))
        choices.append(attrs.evolve(message, prev_log_term=message.term + 1,
                                    prev_log_index=max(1, message.prev_log_index)))
        if message.entries:
            first = message.entries[0]
            gap = (*message.entries, attrs.evolve(first, index=message.entries[-1].index + 2))
            choices.append(attrs.evolve(message, entries=gap))
            choices.append(attrs.evolve(message, entries=(attrs.evolve(first, term=message.term + 1),
                                                          *message.entries[1:])))
    elif isinstance(message, AppendEntriesReply):
        choices.append(attrs.evolve(message, conflict_term=message.term + 1))
    elif isinstance(message, InstallSnapshot):
        choices.append(attrs.evolve(message, leader_id=_other(message)))
        choices.append(attrs.evolve(message, configuration=b"\x90"))  # an empty list: no voter
        choices.append(attrs.evolve(message, last_included_term=message.term + 1))
        choices.append(attrs.evolve(message, last_included_index=0))
        choices.append(attrs.evolve(message, size=message.offset + len(message.data) - 1))
        choices.append(attrs.evolve(message, checksum=b"short"))
    elif isinstance(message, RequestVote | PreVote):
        choices.append(attrs.evolve(message, candidate_id=_other(message)))
        choices.append(attrs.evolve(message, last_log_term=message.term + 1))
    return rng.choice(choices)


def _other(message: WireMessage) -> str:
    return STRANGER if message.sender != STRANGER else message.receiver


__all__ = ["STRANGER", "from_stranger", "impossible"]

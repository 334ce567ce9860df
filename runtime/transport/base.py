"""What the server needs from a network: fire-and-forget sends, callback deliveries.

Raft tolerates lost, duplicated and reordered messages and retries on its own timers,
so a transport never blocks or raises because a peer is slow or gone: it drops. That
keeps one dead node from stalling the leader's loop for everyone else.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from generated.raft_fsm import WireMessage

OnMessage = Callable[[WireMessage], None]
"""Called on the event loop for every message that passed the schema and sender checks;
the transport is given it at construction."""


class Transport(Protocol):
    """A node's link to its peers; implementations take an `OnMessage` when built."""

    async def start(self) -> None:
        """Begin listening; peers may be dialled lazily on the first send."""

    def send(self, message: WireMessage) -> None:
        """Queue `message` for `message.receiver` and return at once.

        An unreachable or slow peer means the message may be dropped, never that this
        call waits or raises: the sender's Raft timers retry.
        """

    async def stop(self) -> None:
        """Close every connection and stop delivering; safe to call more than once."""

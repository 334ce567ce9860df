"""The guards and actions of the generated `RaftHandlers`, one module per concern.

The dispatcher calls these; none of them changes the role (the table does). Section
numbers refer to the Raft paper (Ongaro & Ousterhout, "In Search of an Understandable
Consensus Algorithm", extended version) and to Ongaro's thesis where marked.

- `election`: terms, votes, PreVote, CheckQuorum
- `replication`: AppendEntries both ways, commitment, proposals
- `compaction`: InstallSnapshot both ways
- `reads`: ReadIndex and lease reads (thesis §6.4), follower reads
- `membership`: configuration changes one server at a time, learners (thesis §4.1)
- `transfer`: leadership transfer (thesis §3.10)
- `validation`: the messages no correct peer sends, dropped before any of the above
"""

from __future__ import annotations

from typing import ClassVar

from runtime.consensus.compaction import Compaction
from runtime.consensus.config import Config
from runtime.consensus.election import Election
from runtime.consensus.membership import Membership
from runtime.consensus.reads import Reads
from runtime.consensus.replication import Replication
from runtime.consensus.transfer import Transfer
from runtime.consensus.validation import Validation

__all__ = ["Config", "Consensus"]


class Consensus(Validation, Election, Replication, Compaction, Reads, Membership, Transfer):
    """Implements every guard and action of the spec over one `NodeRecord`."""

    RAFT_HELPERS: ClassVar[frozenset[str]] = frozenset({
        "invalid_reason", "flush", "replicate", "maybe_commit", "drop_incoming_snapshot", "age_incoming_snapshot",
        "abort_reads", "committed_in_term", "confirmed_round", "release_reads", "start_read_round",
        "apply_configuration", "note_entries", "note_truncation", "note_compaction", "note_snapshot",
        "configuration_at", "maybe_send_timeout_now", "campaign",
    })
    """Public methods that are not callbacks of the spec (the core and other handlers call
    them); `python -m generator` warns about any other public method no row names."""

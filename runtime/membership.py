"""Cluster membership: who the voters and learners are, and where to reach them.

A `Configuration` travels in `configuration` log entries (and in snapshots); every node
uses the latest one in its log, committed or not (single-server changes, Raft thesis §4.1).
It is pure data with a canonical encoding, so every node decodes the same entry to the
same configuration.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import msgpack
from attrs import evolve, frozen

from runtime.errors import ConfigurationError

__all__ = ["Configuration", "ConfigurationError", "Member"]


@frozen
class Member:
    """One node of the cluster. A voter counts toward quorums and may campaign; a learner
    (the seed's `canVote = false`) only receives the log."""

    id: str
    voter: bool = True
    raft_address: str = ""
    """HOST:PORT of its Raft transport ("" when the driver needs none, as in the simulator)."""
    http_address: str = ""
    """HOST:PORT of its client API ("" if it has none)."""


@frozen
class Configuration:
    """The members, sorted by id (so equal configurations encode to equal bytes)."""

    members: tuple[Member, ...]

    @classmethod
    def of(cls, members: Iterable[Member]) -> Configuration:
        ordered = tuple(sorted(members, key=lambda m: m.id))
        ids = [m.id for m in ordered]
        if len(set(ids)) != len(ids):
            raise ConfigurationError(f"a node appears twice in {ids}")
        if not any(m.voter for m in ordered):
            raise ConfigurationError("a configuration needs at least one voter")
        for member in ordered:
            if not member.id or not isinstance(member.id, str):
                raise ConfigurationError(f"bad node id {member.id!r}")
        return cls(ordered)

    @classmethod
    def voters_only(cls, voters: Iterable[str], addresses: Mapping[str, str] | None = None,
                    http: Mapping[str, str] | None = None) -> Configuration:
        addresses = addresses or {}
        http = http or {}
        return cls.of(Member(v, True, addresses.get(v, ""), http.get(v, "")) for v in voters)

    # -- views -----------------------------------------------------------------------------
    @property
    def voters(self) -> tuple[str, ...]:
        return tuple(m.id for m in self.members if m.voter)

    @property
    def learners(self) -> tuple[str, ...]:
        return tuple(m.id for m in self.members if not m.voter)

    @property
    def ids(self) -> tuple[str, ...]:
        return tuple(m.id for m in self.members)

    def member(self, node_id: str) -> Member | None:
        for member in self.members:
            if member.id == node_id:
                return member
        return None

    def is_voter(self, node_id: str) -> bool:
        member = self.member(node_id)
        return member is not None and member.voter

    def describe(self) -> str:
        learners = f"; learners {', '.join(self.learners)}" if self.learners else ""
        return f"voters {', '.join(self.voters)}{learners}"

    # -- changes (one server at a time) --------------------------------------------------------
    def with_learner(self, member: Member) -> Configuration:
        if self.member(member.id) is not None:
            raise ConfigurationError(f"{member.id} is already a member ({self.describe()})")
        return Configuration.of((*self.members, evolve(member, voter=False)))

    def promoted(self, node_id: str) -> Configuration:
        member = self.member(node_id)
        if member is None:
            raise ConfigurationError(f"{node_id} is not a member ({self.describe()})")
        if member.voter:
            raise ConfigurationError(f"{node_id} is a voter already")
        return Configuration.of(evolve(m, voter=True) if m.id == node_id else m for m in self.members)

    def without(self, node_id: str) -> Configuration:
        if self.member(node_id) is None:
            raise ConfigurationError(f"{node_id} is not a member ({self.describe()})")
        return Configuration.of(m for m in self.members if m.id != node_id)

    def voter_changes(self, other: Configuration) -> int:
        """How many voters one of the two has and the other has not."""
        return len(set(self.voters) ^ set(other.voters))

    # -- encoding --------------------------------------------------------------------------
    def encode(self) -> bytes:
        return msgpack.packb(  # type: ignore[no-any-return]
            [[m.id, m.voter, m.raft_address, m.http_address] for m in self.members], use_bin_type=True
        )

    @classmethod
    def decode(cls, data: bytes) -> Configuration:
        try:
            fields: Any = msgpack.unpackb(data, raw=False, use_list=True)
        except (ValueError, TypeError, msgpack.UnpackException) as exc:
            raise ConfigurationError(f"not a configuration: {exc}") from None
        if not isinstance(fields, list):
            raise ConfigurationError("not a configuration")
        members = []
        for item in fields:
            match item:
                case [str(node_id), bool(voter), str(raft), str(http)]:
                    members.append(Member(node_id, voter, raft, http))
                case _:
                    raise ConfigurationError(f"not a configuration member: {item!r:.60}")
        return cls.of(members)

    def to_json(self) -> list[dict[str, object]]:
        return [{"id": m.id, "voter": m.voter, "raft": m.raft_address, "http": m.http_address}
                for m in self.members]

    @classmethod
    def from_json(cls, data: object) -> Configuration:
        if not isinstance(data, list):
            raise ConfigurationError("a configuration is a list of members")
        members = []
        for item in data:
            if not isinstance(item, dict) or not isinstance(item.get("id"), str):
                raise ConfigurationError(f"not a member: {item!r:.60}")
            members.append(Member(item["id"], bool(item.get("voter", True)), str(item.get("raft", "")),
                                  str(item.get("http", ""))))
        return cls.of(members)

"""Wire layouts and their negotiation, without sockets: what two nodes built from
different specs agree on (runtime/layout.py), and how a codec channel encodes for, and
decodes from, an older or newer peer (runtime/codec.py). The specs are the real one and
versions of it from tests/spec_versions.py, rendered by the generator."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import attrs
import msgpack
import pytest

from generated import raft_fsm
from generator import compat
from runtime import codec
from runtime.codec import DEFAULT, SCHEMA_DIGEST, Codec, FrameError, Incompatible, decode, encode
from runtime.layout import EnumLayout, FieldLayout, Layout, LayoutError, TypeLayout, negotiate
from runtime.transport.tcp import MAX_LAYOUT
from tests import spec_versions


@attrs.frozen
class Versions:
    next: ModuleType
    retyped: ModuleType
    removed: ModuleType
    directory: Path


@pytest.fixture(scope="module")
def versions(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Versions]:
    directory = tmp_path_factory.mktemp("specs")
    yield Versions(
        next=spec_versions.generated_module(directory / "next", spec_versions.NEXT, "raft_fsm_negotiation_next",
                                            spec_versions.NEXT_ROWS),
        retyped=spec_versions.generated_module(directory / "retyped", spec_versions.RETYPED,
                                               "raft_fsm_negotiation_retyped"),
        removed=spec_versions.generated_module(directory / "removed", spec_versions.REMOVED,
                                               "raft_fsm_negotiation_removed"),
        directory=directory,
    )


@pytest.fixture(scope="module")
def new(versions: Versions) -> Codec:
    return Codec(versions.next)


def entry(module: ModuleType, index: int, **extra: Any) -> Any:
    return module.Entry(term=2, index=index, kind=module.EntryKind.data, data=b"x%d" % index, **extra)


def append_entries(module: ModuleType, *entries: Any) -> Any:
    return module.AppendEntries(msg_id=1, sender="n1", receiver="n2", term=2, leader_id="n1", prev_log_index=0,
                                prev_log_term=0, entries=entries, leader_commit=0, read_round=3)


def reply(module: ModuleType, **extra: Any) -> Any:
    return module.AppendEntriesReply(msg_id=1, sender="n2", receiver="n1", term=2, success=True, match_index=5,
                                     reject_index=0, conflict_index=0, conflict_term=0, read_round=3, **extra)


# ------------------------------------------------------------------ the layout


def test_the_layout_round_trips_and_its_digest_is_the_schema_digest() -> None:
    layout = DEFAULT.layout
    assert Layout.unpack(DEFAULT.layout_bytes) == layout
    assert layout.digest() == SCHEMA_DIGEST == DEFAULT.digest
    assert [m.name for m in layout.messages] == [cls.__name__ for cls in raft_fsm.WIRE_MESSAGES]
    assert [r.name for r in layout.records] == ["Entry"]
    assert layout.enums == (EnumLayout("EntryKind", (("unknown", 0), ("configuration", 1), ("data", 2),
                                                     ("noop", 3))),)
    entries = layout.messages[4].fields[7]
    assert entries == FieldLayout("entries", "list[Entry]", False)
    # a few KB at most: well under what a node reads from a peer
    assert len(DEFAULT.layout_bytes) < MAX_LAYOUT / 10


def test_the_layout_says_which_fields_have_defaults(versions: Versions) -> None:
    layout = Codec(versions.next).layout
    reply_fields = next(m for m in layout.messages if m.name == "AppendEntriesReply").fields
    assert reply_fields[-1] == FieldLayout("hint", "int", True)
    assert not any(f.has_default for f in reply_fields[:-1])


@pytest.mark.parametrize(("data", "error"), [
    (b"\xc1", "not msgpack"),
    (msgpack.packb({"messages": []}), "the layout must be an array, got dict"),
    (msgpack.packb([[], []]), "expected [messages, records, enums], got 2 parts"),
    (msgpack.packb([[["A", [["x", "int", 1]]]], [], []]), "a field of A must be [name, type, has_default]"),
    (msgpack.packb([[["A", [["x", "int", False], ["x", "str", False]]]], [], []]), "A has a field name twice"),
    (msgpack.packb([[["A", []]], [["A", []]], []]), "a type name appears twice"),
    (msgpack.packb([[["", []]], [], []]), "the name of a message must be a non-empty string"),
    (msgpack.packb([[["A" * 300, []]], [], []]), "the name of a message must be a non-empty string of at most 200"),
    (msgpack.packb([[], [], [["E", [["a", 1], ["b", 1]]]]]), "E has a number twice"),
    (msgpack.packb([[], [], [["E", [["a", "1"]]]]]), "a value of E must be [member, number]"),
])
def test_a_malformed_layout_is_refused(data: bytes, error: str) -> None:
    with pytest.raises(LayoutError, match=None) as info:
        Layout.unpack(data)
    assert str(info.value).startswith(error), str(info.value)


# ------------------------------------------------------------------ the rule


def test_the_same_layout_is_the_identity_channel_with_the_plain_functions() -> None:
    assert negotiate(DEFAULT.layout, DEFAULT.layout).newer == "same"
    channel = DEFAULT.channel(SCHEMA_DIGEST)
    assert channel is DEFAULT.identity and channel.identical
    assert channel.encode is encode and channel.decode is decode  # the fast path: nothing added per frame


def test_a_compatible_successor_extends_the_layout_both_ways_round(new: Codec) -> None:
    older = negotiate(DEFAULT.layout, new.layout)
    assert older.newer == "there"
    assert older.tags == len(raft_fsm.WIRE_MESSAGES) == 11
    assert older.counts["AppendEntriesReply"] == 10 and older.widths["AppendEntriesReply"] == 11
    assert older.counts["Entry"] == 4 and older.widths["Entry"] == 5
    assert older.enums["EntryKind"] == {0, 1, 2, 3}
    assert older.extensions == ("AppendEntriesReply.hint is only in its spec",
                                "message Nudge (tag 11) is only in its spec",
                                "Entry.crc is only in its spec", "EntryKind.marker (4) is only in its spec")
    newer = negotiate(new.layout, DEFAULT.layout)
    assert newer.newer == "here"
    assert (newer.tags, newer.counts, newer.widths, newer.enums) == (older.tags, older.counts, older.widths,
                                                                     older.enums)


def test_the_classifier_and_the_handshake_agree_on_the_successors(versions: Versions) -> None:
    next_spec = versions.directory / "next" / "raft.yaml"
    assert compat.main(spec_versions.SPEC, next_spec) == 0
    for name in ("retyped", "removed"):
        assert compat.main(spec_versions.SPEC, versions.directory / name / "raft.yaml") == 1


@pytest.mark.parametrize(("version", "here", "there"), [
    ("retyped", "AppendEntries.entries changed type list[Entry] -> list[Record]",
     "AppendEntries.entries changed type list[Record] -> list[Entry]"),
    ("removed", "AppendEntriesReply.read_round is not in its spec and has no default here",
     "AppendEntriesReply.read_round (int) is only in its spec, without a default"),
])
def test_a_breaking_successor_is_refused_naming_the_first_difference(versions: Versions, version: str,
                                                                      here: str, there: str) -> None:
    other = Codec(getattr(versions, version))
    with pytest.raises(Incompatible) as info:
        DEFAULT.channel(other.digest, other.layout)
    assert info.value.difference == here
    with pytest.raises(Incompatible) as info:
        other.channel(DEFAULT.digest, DEFAULT.layout)
    assert info.value.difference == there
    with pytest.raises(Incompatible):  # the refusal is remembered: the layout is not needed again
        DEFAULT.channel(other.digest)


def _edit_message(layout: Layout, name: str, fields: tuple[FieldLayout, ...]) -> Layout:
    return attrs.evolve(layout, messages=tuple(attrs.evolve(m, fields=fields) if m.name == name else m
                                               for m in layout.messages))


def _reply_fields() -> tuple[FieldLayout, ...]:
    return next(m for m in DEFAULT.layout.messages if m.name == "AppendEntriesReply").fields


def _layouts() -> Iterator[tuple[str, Layout, str]]:
    """(case, the peer's layout, the difference this node names)."""
    base = DEFAULT.layout
    fields = _reply_fields()
    hint = FieldLayout("hint", "int", True)
    yield "field without a default", _edit_message(base, "AppendEntriesReply", (*fields, FieldLayout("x", "int", False))), \
        "AppendEntriesReply.x (int) is only in its spec, without a default"
    yield "field renamed", _edit_message(base, "AppendEntriesReply", (*fields[:-1], FieldLayout("round", "int", False))), \
        "AppendEntriesReply field 9 is read_round: int here but round: int in its spec"
    yield "fields swapped", _edit_message(base, "AppendEntriesReply", (*fields[:-2], fields[-1], fields[-2])), \
        "AppendEntriesReply field 8 is conflict_term: int here but read_round: int in its spec"
    inserted = attrs.evolve(base, messages=(*base.messages[:3], TypeLayout("TimeoutNow", ()), *base.messages[3:]))
    yield "message inserted", inserted, "message tag 3 is PreVoteReply here but TimeoutNow in its spec"
    yield "message removed at the end", attrs.evolve(base, messages=base.messages[:-1]), None
    mixed = _edit_message(attrs.evolve(base, messages=base.messages[:-1]), "AppendEntriesReply", (*fields, hint))
    yield "each side extends", mixed, \
        ("message TimeoutNow (tag 10) is only in this node's spec, but AppendEntriesReply.hint is only in its "
         "spec: neither spec extends the other")
    renumbered = attrs.evolve(base, enums=(EnumLayout("EntryKind", (("unknown", 0), ("configuration", 1),
                                                                   ("data", 2), ("noop", 4))),))
    yield "enum value renumbered", renumbered, \
        "EntryKind.noop (4) is only in its spec, but EntryKind.noop (3) is only in this node's spec: neither spec " \
        "extends the other"
    as_enum = attrs.evolve(base, records=(), enums=(*base.enums, EnumLayout("Entry", (("x", 1),))))
    yield "record turned enum", as_enum, "Entry is a record here but an enum in its spec"
    undeclared = attrs.evolve(base, records=())
    yield "record undeclared", undeclared, "AppendEntries.entries is an Entry, which its spec does not declare"
    renamed_member = attrs.evolve(base, enums=(EnumLayout("EntryKind", (("unknown", 0), ("configuration", 1),
                                                                       ("data", 2), ("no_op", 3))),))
    yield "enum member renamed", renamed_member, None


@pytest.mark.parametrize(("theirs", "difference"), [case[1:] for case in _layouts()],
                         ids=[case[0] for case in _layouts()])
def test_the_rule_on_hand_made_layouts(theirs: Layout, difference: str | None) -> None:
    if difference is None:
        negotiate(DEFAULT.layout, theirs)
        return
    with pytest.raises(Incompatible) as info:
        negotiate(DEFAULT.layout, theirs)
    assert info.value.difference == difference


def test_layouts_that_differ_only_off_the_wire_use_the_plain_functions() -> None:
    fields = _reply_fields()
    theirs = _edit_message(DEFAULT.layout, "AppendEntriesReply",
                           (*fields[:-1], attrs.evolve(fields[-1], has_default=True)))
    channel = DEFAULT.channel(theirs.digest(), theirs)
    assert channel.common is not None and channel.common.newer == "same"
    assert channel.encode is encode and channel.decode is decode


# ------------------------------------------------------------------ encoding and decoding across versions


def test_an_older_node_sends_everything_it_has_and_the_newer_one_fills_the_defaults(new: Codec,
                                                                                     versions: Versions) -> None:
    to_new = DEFAULT.channel(new.digest, new.layout)
    from_old = new.channel(DEFAULT.digest, DEFAULT.layout)
    assert to_new.encode is encode  # nothing to trim or filter for a newer peer
    body = to_new.encode(reply(raft_fsm))
    assert body is not None
    assert from_old.decode(body) == reply(versions.next, hint=0)
    body = to_new.encode(append_entries(raft_fsm, entry(raft_fsm, 1), entry(raft_fsm, 2)))
    assert body is not None
    assert from_old.decode(body) == append_entries(versions.next, entry(versions.next, 1, crc=0),
                                                   entry(versions.next, 2, crc=0))


def test_a_newer_node_trims_what_the_older_one_does_not_know(new: Codec, versions: Versions) -> None:
    to_old = new.channel(DEFAULT.digest, DEFAULT.layout)
    from_new = DEFAULT.channel(new.digest, new.layout)
    body = to_old.encode(reply(versions.next, hint=7))
    assert body is not None
    assert len(msgpack.unpackb(body)) == 1 + 10
    assert from_new.decode(body) == reply(raft_fsm)
    body = to_old.encode(append_entries(versions.next, entry(versions.next, 1, crc=99)))
    assert body is not None
    assert msgpack.unpackb(body)[8] == [[2, 1, 2, b"x1"]]
    assert from_new.decode(body) == append_entries(raft_fsm, entry(raft_fsm, 1))


def test_a_newer_node_never_sends_a_type_or_enum_value_the_older_one_lacks(new: Codec, versions: Versions) -> None:
    to_old = new.channel(DEFAULT.digest, DEFAULT.layout)
    timeout_now = versions.next.Nudge(msg_id=1, sender="n2", receiver="n1", term=2, reason="test")
    assert to_old.encode(timeout_now) is None
    assert to_old.lacks(timeout_now) == "its spec has no Nudge"
    marked = append_entries(versions.next, entry(versions.next, 1),
                            versions.next.Entry(term=2, index=2, kind=versions.next.EntryKind.marker, data=b""))
    assert to_old.encode(marked) is None
    assert to_old.lacks(marked) == "AppendEntries.entries[1].kind: <EntryKind.marker: 4> is not in its spec"
    # between two new nodes both go out
    assert new.encode(timeout_now) and new.encode(marked)
    # our own bugs are still errors, not silent drops
    with pytest.raises(FrameError, match="Proposal is not a wire message"):
        to_old.encode(versions.next.Proposal(commands=()))
    unknown = versions.next.Entry(term=2, index=1, kind=versions.next.EntryKind.unknown, data=b"")
    with pytest.raises(FrameError, match=r"entries\[0\]\.kind: <EntryKind\.unknown: 0> cannot be sent"):
        to_old.encode(append_entries(versions.next, unknown))


def test_decoding_from_a_newer_peer_drops_trailing_fields_it_says_have_defaults(new: Codec,
                                                                                 versions: Versions) -> None:
    from_new = DEFAULT.channel(new.digest, new.layout)
    untrimmed = new.encode(reply(versions.next, hint=7))  # all 11 fields
    assert from_new.decode(untrimmed) == reply(raft_fsm)
    untrimmed = new.encode(append_entries(versions.next, entry(versions.next, 1, crc=5)))
    assert from_new.decode(untrimmed) == append_entries(raft_fsm, entry(raft_fsm, 1))
    too_long = msgpack.packb([*msgpack.unpackb(untrimmed), 1])
    with pytest.raises(FrameError, match=r"^AppendEntries: expected 10 fields of AppendEntries, got 11$"):
        from_new.decode(too_long)
    wire = msgpack.unpackb(new.encode(reply(versions.next)))
    with pytest.raises(FrameError, match=r"^AppendEntriesReply: expected 10\.\.11 fields of AppendEntriesReply, "
                                         r"got 12$"):
        from_new.decode(msgpack.packb([*wire, 1]))
    with pytest.raises(FrameError, match=r"^AppendEntriesReply: expected 10\.\.11 fields of AppendEntriesReply, "
                                         r"got 9$"):
        from_new.decode(msgpack.packb(wire[:-2]))
    with pytest.raises(FrameError, match=r"unknown message tag 11 \(known: 0\.\.10\)"):
        from_new.decode(new.encode(versions.next.Nudge(msg_id=1, sender="n2", receiver="n1", term=2,
                                                            reason="x")))


def test_decoding_from_an_older_peer_still_checks_every_field(new: Codec) -> None:
    from_old = new.channel(DEFAULT.digest, DEFAULT.layout)
    wire = msgpack.unpackb(encode(append_entries(raft_fsm, entry(raft_fsm, 1))))
    wire[8][0][2] = 4  # marker: the older peer cannot have sent it, and it is checked like any value
    assert from_old.decode(msgpack.packb(wire)).entries[0].kind.name == "marker"
    wire[8][0][2] = 9
    with pytest.raises(FrameError, match=r"^AppendEntries\.entries\[0\]\.kind: 9 is not a valid EntryKind$"):
        from_old.decode(msgpack.packb(wire))
    wire[8][0] = [2, 1, 2]
    with pytest.raises(FrameError, match=r"^AppendEntries\.entries\[0\]: expected 4\.\.5 fields of Entry, got 3$"):
        from_old.decode(msgpack.packb(wire))


def test_channels_are_compiled_once_per_peer_layout(new: Codec) -> None:
    first = new.channel(DEFAULT.digest, DEFAULT.layout)
    assert new.channel(DEFAULT.digest) is first
    assert first.describe().startswith("an older spec: this node sends it only what it knows (AppendEntriesReply.hint")


def test_a_codec_keeps_a_bounded_number_of_peer_layouts() -> None:
    fresh = Codec(raft_fsm)
    base = fresh.layout
    for number in range(codec.MAX_CHANNELS + 5):
        extra = TypeLayout(f"Extra{number}", (FieldLayout("x", "int", False),))
        theirs = attrs.evolve(base, records=(*base.records, extra))
        fresh.channel(theirs.digest(), theirs)
    assert len(fresh._channels) == codec.MAX_CHANNELS

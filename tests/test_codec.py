"""The wire codec: every message the spec declares survives a round trip, and every way a
frame can be malformed is refused with a FrameError that names the exact field
(nothing unsafe on the wire)."""

from __future__ import annotations

from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from generated import raft_fsm
from generated.raft_fsm import (
    FIELD_TYPES,
    WIRE_MESSAGES,
    AppendEntries,
    Entry,
    EntryKind,
    InstallSnapshot,
    Proposal,
    RequestVote,
    RequestVoteReply,
)
from runtime import codec
from runtime.codec import SCHEMA_DIGEST, FrameError, decode, encode
from runtime.errors import RaftError
from runtime.limits import MAX_WIRE_INT
from runtime.membership import Configuration

# ------------------------------------------------------------------ strategies from the spec

SCALARS: dict[str, st.SearchStrategy[Any]] = {
    "int": st.integers(min_value=0, max_value=MAX_WIRE_INT),  # terms, indexes, offsets: 0..2^63-1
    "bool": st.booleans(),
    "str": st.text(max_size=20),
    "bytes": st.binary(max_size=64),
    "float": st.floats(allow_nan=False),
}

_TAGS = len(WIRE_MESSAGES)


def strategy(spec: str) -> st.SearchStrategy[Any]:
    if spec.endswith("?"):
        return st.none() | strategy(spec[:-1])
    if spec.startswith("list["):
        return st.lists(strategy(spec[5:-1]), max_size=6).map(tuple)
    if spec in SCALARS:
        return SCALARS[spec]
    if spec in FIELD_TYPES:
        cls = getattr(raft_fsm, spec)
        return st.builds(cls, **{name: strategy(t) for name, t in FIELD_TYPES[spec]})
    enum_type = getattr(raft_fsm, spec)
    return st.sampled_from([m for m in enum_type if m.name != codec.PLACEHOLDER_MEMBER])


any_wire_message = st.one_of([strategy(cls.__name__) for cls in WIRE_MESSAGES])


def append_entries(entries: int = 4) -> AppendEntries:
    return AppendEntries(
        msg_id=7, sender="n1", receiver="n2", term=3, leader_id="n1", prev_log_index=10,
        prev_log_term=2, leader_commit=9, read_round=0,
        entries=tuple(Entry(term=3, index=11 + i, kind=EntryKind.data, data=b"cmd%d" % i) for i in range(entries)),
    )


def install_snapshot() -> InstallSnapshot:
    return InstallSnapshot(
        msg_id=1, sender="n1", receiver="n2", term=4, leader_id="n1", last_included_index=100,
        last_included_term=3, configuration=Configuration.voters_only(("n1", "n2", "n3")).encode(), transfer_id=1, size=5, checksum=bytes(32),
        offset=0, data=b"state", done=True,
    )


def request_vote() -> RequestVote:
    return RequestVote(msg_id=1, sender="n1", receiver="n2", term=5, candidate_id="n1",
                       last_log_index=3, last_log_term=2)


def raw(message: Any) -> list[Any]:
    """The frame of `message` as plain msgpack values, to be tampered with."""
    return msgpack.unpackb(encode(message), raw=False)  # type: ignore[no-any-return]


def packed(value: Any) -> bytes:
    return msgpack.packb(value, use_bin_type=True)  # type: ignore[no-any-return]


def refused(data: bytes) -> str:
    with pytest.raises(FrameError) as info:
        decode(data)
    return str(info.value)


# ------------------------------------------------------------------ round trips


@settings(derandomize=True, max_examples=300, deadline=None)
@given(any_wire_message)
def test_every_wire_message_survives_a_round_trip(message: Any) -> None:
    assert decode(encode(message)) == message


@pytest.mark.parametrize("cls", WIRE_MESSAGES, ids=lambda cls: cls.__name__)
def test_each_kind_is_tagged_by_its_position_in_WIRE_MESSAGES(cls: type) -> None:
    values = {
        "int": 1, "bool": True, "str": "n1", "bytes": b"\x00\xff", "float": 0.5,
        "list[Entry]": (Entry(1, 1, EntryKind.noop, b""),), "list[str]": ("n1", "n2"),
    }
    message = cls(**{name: values[spec] for name, spec in FIELD_TYPES[cls.__name__]})
    frame = raw(message)
    assert frame[0] == WIRE_MESSAGES.index(cls)
    assert len(frame) == 1 + len(FIELD_TYPES[cls.__name__])
    assert decode(encode(message)) == message


def test_lists_decode_to_tuples_and_enums_to_members() -> None:
    message = decode(encode(append_entries()))
    assert isinstance(message, AppendEntries)
    assert isinstance(message.entries, tuple)
    assert message.entries[0].kind is EntryKind.data
    assert message == append_entries()


def test_entries_travel_as_plain_arrays_with_the_kind_as_an_int() -> None:
    frame = raw(append_entries(1))
    assert frame[8] == [[3, 11, int(EntryKind.data), b"cmd0"]]


def test_frame_error_is_a_raft_error() -> None:
    assert issubclass(FrameError, RaftError)


def test_schema_digest_is_the_sha256_of_the_layout_recomputed_the_same() -> None:
    assert len(SCHEMA_DIGEST) == 64
    int(SCHEMA_DIGEST, 16)
    assert codec.Codec(raft_fsm).digest == SCHEMA_DIGEST
    assert codec.DEFAULT.layout.digest() == SCHEMA_DIGEST


# ------------------------------------------------------------------ malformed frames


def tampered(message: Any, path: tuple[int, ...], value: Any) -> bytes:
    frame = raw(message)
    target = frame
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = value
    return packed(frame)


MALFORMED = [
    # (case id, bytes, exact error message)
    ("not msgpack", b"\xc1", "not a msgpack frame: FormatError: "),
    ("empty", b"", "not a msgpack frame: ValueError: Unpack failed: incomplete input"),
    ("truncated", encode(append_entries())[:-3], "not a msgpack frame: ValueError: Unpack failed: incomplete input"),
    ("trailing bytes", encode(request_vote()) + b"\x00", "not a msgpack frame: ExtraData: unpack(b) received extra data."),
    ("invalid utf-8 in a str", encode(request_vote()).replace(b"\xa2n1", b"\xa2\xff\xfe", 1),
     "not a msgpack frame: UnicodeDecodeError: 'utf-8' codec can't decode byte 0xff in position 0: invalid start byte"),
    ("map with int keys", packed({1: 2}), "not a msgpack frame: ValueError: int is not allowed for map key when strict_map_key=True"),
    ("map frame", packed({"tag": 0}), "a frame must be an array [tag, fields...], got dict {'tag': 0}"),
    ("scalar frame", packed(5), "a frame must be an array [tag, fields...], got int 5"),
    ("empty array", packed([]), "a frame must be an array [tag, fields...], got list ()"),
    ("unknown tag", packed([_TAGS, 1]), f"unknown message tag {_TAGS} (known: 0..{_TAGS - 1})"),
    ("negative tag", packed([-1]), f"unknown message tag -1 (known: 0..{_TAGS - 1})"),
    ("bool tag", packed([True]), f"unknown message tag True (known: 0..{_TAGS - 1})"),
    ("str tag", packed(["RequestVote"]), f"unknown message tag 'RequestVote' (known: 0..{_TAGS - 1})"),
    ("too few fields", packed(raw(request_vote())[:-1]), "RequestVote: expected 8 fields of RequestVote, got 7"),
    ("too many fields", packed([*raw(request_vote()), 1]), "RequestVote: expected 8 fields of RequestVote, got 9"),
    ("bool for int", tampered(request_vote(), (4,), True), "RequestVote.term: expected int, got bool True"),
    ("float for int", tampered(request_vote(), (6,), 1.0), "RequestVote.last_log_index: expected int, got float 1.0"),
    ("nil for int", tampered(request_vote(), (1,), None), "RequestVote.msg_id: expected int, got NoneType None"),
    ("int for bool", tampered(RequestVoteReply(1, "n2", "n1", 5, True), (5,), 1),
     "RequestVoteReply.vote_granted: expected bool, got int 1"),
    ("bytes for str", tampered(request_vote(), (2,), b"n1"), "RequestVote.sender: expected str, got bytes b'n1'"),
    ("str for bytes", tampered(install_snapshot(), (13,), "state"), "InstallSnapshot.data: expected bytes, got str 'state'"),
    ("map for int", tampered(request_vote(), (4,), {"a": 1}), "RequestVote.term: expected int, got dict {'a': 1}"),
    ("ext for int", tampered(request_vote(), (4,), msgpack.ExtType(5, b"xx")),
     "RequestVote.term: expected int, got ExtType ExtType(code=5, data=b'xx')"),
    ("scalar for list", tampered(append_entries(), (8,), 5), "AppendEntries.entries: expected list[Entry], got int 5"),
    ("wrong list element", tampered(append_entries(), (8, 1), 7),
     "AppendEntries.entries[1]: expected Entry (an array of 4 fields), got int 7"),
    ("entry not an array", tampered(append_entries(), (8, 2), 3),
     "AppendEntries.entries[2]: expected Entry (an array of 4 fields), got int 3"),
    ("entry arity", tampered(append_entries(), (8, 3), [3, 14, 2]), "AppendEntries.entries[3]: expected 4 fields of Entry, got 3"),
    ("entry field type", tampered(append_entries(), (8, 1, 3), "text"),
     "AppendEntries.entries[1].data: expected bytes, got str 'text'"),
    ("invalid enum value", tampered(append_entries(), (8, 3, 2), 9), "AppendEntries.entries[3].kind: 9 is not a valid EntryKind"),
    ("placeholder enum value", tampered(append_entries(), (8, 0, 2), 0),
     "AppendEntries.entries[0].kind: 0 (EntryKind.unknown) is never valid on the wire"),
    ("bool enum value", tampered(append_entries(), (8, 0, 2), True),
     "AppendEntries.entries[0].kind: expected EntryKind (an int), got bool True"),
    ("str enum value", tampered(append_entries(), (8, 0, 2), "data"),
     "AppendEntries.entries[0].kind: expected EntryKind (an int), got str 'data'"),
    ("deep nesting", b"\x91" * 5000, "not a msgpack frame: StackError: "),
]


@pytest.mark.parametrize(("data", "message"), [case[1:] for case in MALFORMED], ids=[case[0] for case in MALFORMED])
def test_malformed_frames_are_refused_with_a_precise_error(data: bytes, message: str) -> None:
    assert refused(data) == message


def test_the_first_bad_field_is_named_even_when_later_ones_are_fine() -> None:
    frame = raw(append_entries(8))
    frame[8][5][1] = "eleven"
    assert refused(packed(frame)) == "AppendEntries.entries[5].index: expected int, got str 'eleven'"


def test_long_values_are_abbreviated_in_errors() -> None:
    error = refused(tampered(request_vote(), (4,), "x" * 1000))
    assert error.startswith("RequestVote.term: expected int, got str 'xxxx")
    assert error.endswith("...") and len(error) < 100


# ------------------------------------------------------------------ spec types the spec does not use yet


@pytest.mark.parametrize(
    ("spec", "good", "bad", "error"),
    [
        ("float", 0.5, 1, "X: expected float, got int 1"),
        ("int?", None, "1", "X: expected int, got str '1'"),
        ("list[EntryKind]", (1, 2, 3), (1, 9), "X[1]: 9 is not a valid EntryKind"),
        ("list[int?]", (1, None), (None, True), "X[1]: expected int, got bool True"),
        ("Entry?", None, (1, 1, 1), "X: expected 4 fields of Entry, got 3"),
        ("list[Entry]", ((1, 1, 1, b""),), ((1, 1, 1, b""), (1, 2, 4, b"")), "X[1].kind: 4 is not a valid EntryKind"),
    ],
)
def test_every_spec_type_decodes_strictly(spec: str, good: Any, bad: Any, error: str) -> None:
    decoder = codec._Builder(raft_fsm, codec._FULL).decoder(spec)
    decoder(good)
    with pytest.raises(codec._Invalid) as info:
        decoder(bad)
    assert f"{info.value.where('X')}: {info.value.reason}" == error


# ------------------------------------------------------------------ encoding our own mistakes


def test_encoding_a_message_that_is_not_on_the_wire_fails() -> None:
    with pytest.raises(FrameError, match="Proposal is not a wire message"):
        encode(Proposal(commands=(b"x",)))  # type: ignore[arg-type]


def test_encoding_the_placeholder_entry_kind_fails_where_it_is() -> None:
    message = append_entries(3)
    entries = list(message.entries)
    entries[2] = Entry(term=3, index=13, kind=EntryKind.unknown, data=b"")
    with pytest.raises(FrameError, match=r"^AppendEntries\.entries\[2\]\.kind: <EntryKind\.unknown: 0> cannot be sent"):
        encode(AppendEntries(**{**_fields(message), "entries": tuple(entries)}))


def test_encoding_an_int_beyond_64_bits_fails() -> None:
    with pytest.raises(FrameError, match="RequestVote: cannot encode"):
        encode(RequestVote(**{**_fields(request_vote()), "term": 2**64}))


def _fields(message: Any) -> dict[str, Any]:
    return {name: getattr(message, name) for name, _ in FIELD_TYPES[type(message).__name__]}

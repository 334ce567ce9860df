"""msgpack encoding of the wire messages, driven by the generated schema.

A message travels as a msgpack array ``[tag, field1, field2, ...]``: the tag is the
message's position in ``WIRE_MESSAGES`` and the fields follow ``FIELD_TYPES`` order.
Records (``Entry``) nest as arrays in their own field order, enums travel as ints.
Arrays rather than maps keep frames small and make the arity check trivial.

Decoding is the trust boundary: every field of every frame is
checked against the spec types before a message object exists, with an error that names
the exact place (``AppendEntries.entries[3].kind: 9 is not a valid EntryKind``). The
encoder trusts the types ``mypy --strict`` already checked on our side.

A `Codec` is built from one generated module (``DEFAULT``: ``generated.raft_fsm``; the
module-level ``encode``/``decode`` are its). Both directions are compiled once from
``FIELD_TYPES``, so a spec edit needs no codec edit, and the per-frame work is a few
C-level calls plus one attrs constructor per record.

Nodes built from compatible specs (runtime/layout.py, docs/spec-evolution.md) talk
through a `Channel` per peer layout: ``Codec.channel`` compiles encoders that send only
the message types, trailing fields and enum values the peer knows (``encode`` returns
None for a message the peer cannot receive) and decoders that fill the trailing fields
an older peer lacks from their defaults and drop those a newer peer adds. A peer with
the same layout gets ``Codec.identity``, whose functions are the plain ones: the common
case costs nothing more per frame.
"""

from __future__ import annotations

import enum
import hashlib
from collections import OrderedDict
from collections.abc import Callable, Mapping
from operator import attrgetter, itemgetter
from types import ModuleType
from typing import Any, Final

import attrs
import msgpack

from generated import raft_fsm
from generated.raft_fsm import WireMessage
from runtime.errors import FrameError
from runtime.layout import Common, Incompatible, Layout, layout_of, negotiate
from runtime.limits import MAX_WIRE_INT

__all__ = ["DEFAULT", "SCHEMA_DIGEST", "Channel", "Codec", "FrameError", "Incompatible", "decode", "encode"]

PLACEHOLDER_MEMBER: Final = "unknown"
"""An enum member with this name is the seed's "never written" value; neither direction
accepts it, because a frame carrying it can only come from a bug or a forger."""


class _Invalid(Exception):
    """Raised deep inside a decoder; each enclosing list/record adds its path segment on
    the way out, so the success path pays nothing for precise error messages."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.segments: list[str] = []  # innermost first

    def where(self, root: str) -> str:
        return root + "".join(reversed(self.segments))


class _Unknown(_Invalid):
    """A value of ours that the peer's spec lacks (an enum value it does not have): the
    message cannot go to that peer."""


_Convert = Callable[[Any], Any]
_ValuesOf = Callable[[Any], list[Any]]
_Encoders = dict[type, tuple[str, int, _ValuesOf]]
_Decoders = tuple[tuple[str, _Convert], ...]

_SCALARS: Final[dict[str, type]] = {"int": int, "bool": bool, "str": str, "bytes": bytes, "float": float}

MAX_CHANNELS: Final = 16
"""Peer layouts a codec keeps compiled channels (or refusals) for; a cluster mid-upgrade
has two."""


def _describe(value: object) -> str:
    text = repr(value)
    if len(text) > 40:
        text = text[:37] + "..."
    kind = "list" if type(value) is tuple else type(value).__name__
    return f"{kind} {text}"


@attrs.frozen
class _View:
    """The part of the layout one channel uses; None everywhere means all of it."""

    counts: Mapping[str, int] | None = None
    """Leading fields per message or record sent (and expected at least)."""
    widths: Mapping[str, int] | None = None
    """The most fields per message or record accepted (from a newer peer)."""
    enums: Mapping[str, frozenset[int]] | None = None
    """Enum values that may be sent."""


_FULL: Final = _View()


class _Builder:
    """Compiles the converters of one module's types for one view."""

    def __init__(self, module: ModuleType, view: _View) -> None:
        self.module = module
        self.field_types: Mapping[str, tuple[tuple[str, str], ...]] = module.FIELD_TYPES
        self.view = view
        self._record_decoders: dict[str, _Convert] = {}

    def enum_type(self, name: str) -> type[enum.IntEnum] | None:
        candidate = getattr(self.module, name, None)
        if isinstance(candidate, type) and issubclass(candidate, enum.IntEnum):
            return candidate
        return None

    def record_type(self, name: str) -> type[Any]:
        cls = getattr(self.module, name)
        names = tuple(field.name for field in attrs.fields(cls))
        declared = tuple(field for field, _ in self.field_types[name])
        if names != declared:  # the generator broke its own contract; fail at build, not per frame
            raise RuntimeError(f"{name}: attrs fields {names} differ from FIELD_TYPES {declared}")
        return cls  # type: ignore[no-any-return]

    def wire_type(self, spec: str) -> type | None:
        """The one Python type a field must have straight out of msgpack, if there is one."""
        if spec in _SCALARS:
            return _SCALARS[spec]
        if self.enum_type(spec) is not None:
            return int
        return None

    def messages(self, tags: int) -> tuple[_Decoders, _Encoders]:
        """Decoders by tag and encoders by class of the first `tags` wire messages."""
        decoders = []
        encoders = {}
        for tag, cls in enumerate(self.module.WIRE_MESSAGES[:tags]):
            name = cls.__name__
            decoders.append((name, self.record_decoder(name)))
            encoders[cls] = (name, tag, self.fields_encoder(name))
        return tuple(decoders), encoders

    # ------------------------------------------------------------------------ decoding

    def decoder(self, spec: str) -> _Convert:
        if spec.endswith("?"):
            return _optional_decoder(self.decoder(spec[:-1]))
        if spec.startswith("list[") and spec.endswith("]"):
            return self.list_decoder(spec[5:-1])
        if spec in _SCALARS:
            return _scalar_decoder(spec, _SCALARS[spec])
        enum_type = self.enum_type(spec)
        if enum_type is not None:
            return _enum_decoder(enum_type)
        if spec in self.field_types:
            return self.record_decoder(spec)
        raise RuntimeError(f"unknown spec type {spec!r}")

    def list_decoder(self, item_spec: str) -> _Convert:
        item = self.decoder(item_spec)
        plain = _SCALARS.get(item_spec)

        def find_culprit(value: tuple[Any, ...]) -> None:
            for index, element in enumerate(value):
                try:
                    item(element)
                except _Invalid as exc:
                    exc.segments.append(f"[{index}]")
                    raise

        def sequence(value: Any) -> Any:
            if type(value) is not tuple:  # unpacked with use_list=False: arrays are tuples
                raise _Invalid(f"expected list[{item_spec}], got {_describe(value)}")
            if plain is not None:
                for element in value:
                    if type(element) is not plain:
                        find_culprit(value)
                return value
            try:
                return tuple([item(element) for element in value])
            except _Invalid:
                find_culprit(value)
                raise

        return sequence

    def record_decoder(self, name: str) -> _Convert:
        """Exactly the spec's fields; on a channel to another layout, any count between
        the common one and the longer side's (missing trailing fields take their
        defaults, unknown trailing ones are dropped)."""
        known = self._record_decoders.get(name)
        if known is not None:
            return known
        self.record_type(name)
        fields = self.field_types[name]
        ours = len(fields)
        least = ours if self.view.counts is None else self.view.counts.get(name, ours)
        most = ours if self.view.widths is None else max(ours, self.view.widths.get(name, ours))
        if least == ours == most:
            decoder = self._exact_record_decoder(name, fields)
        else:
            decoder = self._flexible_record_decoder(name, fields, least, most)
        self._record_decoders[name] = decoder
        return decoder

    def _flexible_record_decoder(self, name: str, fields: tuple[tuple[str, str], ...], least: int,
                                 most: int) -> _Convert:
        ours = len(fields)
        # attrs fills the fields a shorter frame lacks from their defaults (the
        # negotiation checked that they have some)
        by_count = {count: self._exact_record_decoder(name, fields[:count]) for count in range(least, ours + 1)}
        longest = by_count[ours]
        span = f"{least}..{most}"

        def record(value: Any) -> Any:
            if type(value) is tuple:
                decode = by_count.get(len(value))
                if decode is not None:
                    return decode(value)
                if ours < len(value) <= most:  # a newer peer's trailing fields, with defaults there
                    return longest(value[:ours])
                raise _Invalid(f"expected {span} fields of {name}, got {len(value)}")
            raise _Invalid(f"expected {name} (an array of {span} fields), got {_describe(value)}")

        return record

    def _exact_record_decoder(self, name: str, fields: tuple[tuple[str, str], ...]) -> _Convert:
        cls = getattr(self.module, name)
        arity = len(fields)
        decoders = tuple(self.decoder(spec) for _, spec in fields)
        # Fast path: one C-level comparison checks every field whose wire type is fixed;
        # only enums, lists, records and optionals run Python code.
        fixed = [(i, t) for i, (_, spec) in enumerate(fields) if (t := self.wire_type(spec)) is not None]
        fixed_types = tuple(t for _, t in fixed)
        pick: Callable[[tuple[Any, ...]], tuple[Any, ...]] | None = None  # None: every field is fixed
        if len(fixed) == arity:
            pass
        elif len(fixed) >= 2:
            pick = itemgetter(*(i for i, _ in fixed))
        elif fixed:
            only = fixed[0][0]
            pick = lambda value: (value[only],)  # noqa: E731
        else:
            pick = lambda value: ()  # noqa: E731
        # Enum fields whose int-ness the fast path already checked need only a dict lookup.
        enum_members = tuple(
            (i, {m.value: m for m in enum_type if m.name != PLACEHOLDER_MEMBER})
            for i, (_, spec) in enumerate(fields)
            if (enum_type := self.enum_type(spec)) is not None
        )
        converters = tuple(
            (i, f".{field}", decoders[i])
            for i, (field, spec) in enumerate(fields)
            if self.wire_type(spec) is None
        )
        # Every int on the wire is in 0..MAX_WIRE_INT (terms, indexes, offsets): one C-level
        # min/max over the int fields, and the precise message only on failure.
        ints: Callable[[tuple[Any, ...]], tuple[int, ...]] | None = None
        int_positions = [i for i, (_, spec) in enumerate(fields) if spec == "int"]
        if len(int_positions) >= 2:
            ints = itemgetter(*int_positions)
        elif int_positions:
            only_int = int_positions[0]
            ints = lambda value: (value[only_int],)  # noqa: E731

        def find_culprit(value: tuple[Any, ...]) -> None:
            for (field, _), decoder, element in zip(fields, decoders, value, strict=True):
                try:
                    decoder(element)
                except _Invalid as exc:
                    exc.segments.append(f".{field}")
                    raise

        def record(value: Any) -> Any:
            if type(value) is not tuple:
                raise _Invalid(f"expected {name} (an array of {arity} fields), got {_describe(value)}")
            if len(value) != arity:
                raise _Invalid(f"expected {arity} fields of {name}, got {len(value)}")
            if tuple(map(type, value if pick is None else pick(value))) != fixed_types:
                find_culprit(value)
            if ints is not None:
                numbers = ints(value)
                if min(numbers) < 0 or max(numbers) > MAX_WIRE_INT:
                    find_culprit(value)
            if not enum_members and not converters:
                return cls(*value)
            values = list(value)
            for index, members in enum_members:
                member = members.get(values[index])
                if member is None:
                    find_culprit(value)
                values[index] = member
            for index, segment, convert in converters:
                try:
                    values[index] = convert(values[index])
                except _Invalid as exc:
                    exc.segments.append(segment)
                    raise
            return cls(*values)

        return record

    # ------------------------------------------------------------------------ encoding

    def encoder(self, spec: str) -> _Convert | None:
        """None means the value goes to msgpack as it is."""
        if spec.endswith("?"):
            inner = self.encoder(spec[:-1])
            if inner is None:
                return None
            return lambda value: None if value is None else inner(value)
        if spec.startswith("list[") and spec.endswith("]"):
            return self.list_encoder(spec[5:-1])
        if spec == "float":
            return float  # an int-valued float must still travel as a float
        if spec in _SCALARS:
            return None
        enum_type = self.enum_type(spec)
        if enum_type is not None:
            return self.enum_encoder(enum_type)
        if spec in self.field_types:
            self.record_type(spec)
            return self.fields_encoder(spec)
        raise RuntimeError(f"unknown spec type {spec!r}")

    def enum_encoder(self, enum_type: type[enum.IntEnum]) -> _Convert:
        allowed = None if self.view.enums is None else self.view.enums.get(enum_type.__name__)
        sendable = [m for m in enum_type if m.name != PLACEHOLDER_MEMBER]
        values = {m: m.value for m in sendable if allowed is None or m.value in allowed}
        unknown_to_peer = frozenset(m for m in sendable if m not in values)

        def member(value: Any) -> Any:
            try:
                return values[value]
            except (KeyError, TypeError):
                if isinstance(value, enum_type) and value in unknown_to_peer:
                    raise _Unknown(f"{value!r} is not in its spec") from None
                raise _Invalid(f"{value!r} cannot be sent as a {enum_type.__name__}") from None

        return member

    def list_encoder(self, item_spec: str) -> _Convert | None:
        item = self.encoder(item_spec)
        if item is None:
            return None  # msgpack packs any sequence of plain values as an array

        def sequence(value: Any) -> Any:
            try:
                return [item(element) for element in value]
            except _Invalid:
                for index, element in enumerate(value):
                    try:
                        item(element)
                    except _Invalid as exc:
                        exc.segments.append(f"[{index}]")
                        raise
                raise

        return sequence

    def fields_encoder(self, name: str) -> _ValuesOf:
        """The field values of a message or record, as many as the view sends."""
        fields = self.field_types[name]
        if self.view.counts is not None:
            fields = fields[: self.view.counts.get(name, len(fields))]
        if not fields:
            return lambda record: []
        getter = attrgetter(*(field for field, _ in fields))
        single = len(fields) == 1
        converters = tuple(
            (i, f".{field}", convert)
            for i, (field, spec) in enumerate(fields)
            if (convert := self.encoder(spec)) is not None
        )

        def values_of(record: Any) -> list[Any]:
            values = [getter(record)] if single else list(getter(record))
            for index, segment, convert in converters:
                try:
                    values[index] = convert(values[index])
                except _Invalid as exc:
                    exc.segments.append(segment)
                    raise
            return values

        return values_of


def _scalar_decoder(name: str, cls: type) -> _Convert:
    if cls is int:
        def integer(value: Any) -> Any:
            if type(value) is int:  # exact: True is not an int
                if 0 <= value <= MAX_WIRE_INT:
                    return value
                raise _Invalid(f"{value} is outside 0..{MAX_WIRE_INT}")
            raise _Invalid(f"expected {name}, got {_describe(value)}")

        return integer

    def scalar(value: Any) -> Any:
        if type(value) is cls:  # exact: b"" is not a str
            return value
        raise _Invalid(f"expected {name}, got {_describe(value)}")

    return scalar


def _enum_decoder(enum_type: type[enum.IntEnum]) -> _Convert:
    members = {m.value: m for m in enum_type if m.name != PLACEHOLDER_MEMBER}
    name = enum_type.__name__

    def member(value: Any) -> Any:
        if type(value) is int:
            found = members.get(value)
            if found is not None:
                return found
            if value in enum_type._value2member_map_:
                raise _Invalid(f"{value} ({name}.{enum_type(value).name}) is never valid on the wire")
            raise _Invalid(f"{value} is not a valid {name}")
        raise _Invalid(f"expected {name} (an int), got {_describe(value)}")

    return member


def _optional_decoder(inner: _Convert) -> _Convert:
    def optional(value: Any) -> Any:
        return None if value is None else inner(value)

    return optional


# ---------------------------------------------------------------------------- frames


def _make_encode(encoders: _Encoders) -> Callable[[Any], bytes]:
    packb = msgpack.packb

    def encode(message: Any) -> bytes:
        """The msgpack body of one frame (without the transport's length prefix)."""
        try:
            name, tag, values_of = encoders[type(message)]
        except KeyError:
            raise FrameError(f"{type(message).__name__} is not a wire message") from None
        try:
            values = values_of(message)
        except _Invalid as exc:
            raise FrameError(f"{exc.where(name)}: {exc.reason}") from None
        values.insert(0, tag)
        try:
            return packb(values, use_bin_type=True)  # type: ignore[no-any-return]
        except (TypeError, ValueError, OverflowError) as exc:
            raise FrameError(f"{name}: cannot encode: {exc}") from None

    return encode


def _make_channel_encode(encoders: _Encoders, ours: frozenset[type]) -> Callable[[Any], bytes | None]:
    packb = msgpack.packb

    def encode(message: Any) -> bytes | None:
        """Like `Codec.encode`, but None for a message the peer cannot receive."""
        try:
            name, tag, values_of = encoders[type(message)]
        except KeyError:
            if type(message) in ours:
                return None
            raise FrameError(f"{type(message).__name__} is not a wire message") from None
        try:
            values = values_of(message)
        except _Unknown:
            return None
        except _Invalid as exc:
            raise FrameError(f"{exc.where(name)}: {exc.reason}") from None
        values.insert(0, tag)
        try:
            return packb(values, use_bin_type=True)  # type: ignore[no-any-return]
        except (TypeError, ValueError, OverflowError) as exc:
            raise FrameError(f"{name}: cannot encode: {exc}") from None

    return encode


def _make_decode(decoders: _Decoders) -> Callable[[bytes], Any]:
    unpackb = msgpack.unpackb
    count = len(decoders)

    def decode(data: bytes) -> Any:
        """The message in one frame body; FrameError names the first thing that is wrong."""
        try:
            frame = unpackb(data, raw=False, strict_map_key=True, use_list=False)
        except (ValueError, msgpack.UnpackException) as exc:
            raise FrameError(f"not a msgpack frame: {type(exc).__name__}: {exc}") from None
        if type(frame) is not tuple or not frame:
            raise FrameError(f"a frame must be an array [tag, fields...], got {_describe(frame)}")
        tag = frame[0]
        if type(tag) is not int or not 0 <= tag < count:
            raise FrameError(f"unknown message tag {tag!r} (known: 0..{count - 1})")
        name, decoder = decoders[tag]
        try:
            return decoder(frame[1:])
        except _Invalid as exc:
            raise FrameError(f"{exc.where(name)}: {exc.reason}") from None

    return decode


# ---------------------------------------------------------------------------- codecs


class Channel:
    """How this node encodes for, and decodes from, peers of one layout."""

    def __init__(self, peer_digest: str, common: Common | None, encode: Callable[[Any], bytes | None],
                 decode: Callable[[bytes], Any], encoders: _Encoders | None = None) -> None:
        self.peer_digest = peer_digest
        self.common = common
        """None for the identity channel (the peer has this node's layout)."""
        self.encode = encode
        """The frame body for `message`, or None if the peer's spec lacks its type or an
        enum value in it (then it must not be sent)."""
        self.decode = decode
        """The message in a frame from the peer; FrameError if it does not fit."""
        self._encoders = encoders

    @property
    def identical(self) -> bool:
        """True if both sides send and expect exactly this node's layout."""
        return self.common is None

    def lacks(self, message: Any) -> str:
        """Why `encode` gave None for `message` (for the log)."""
        if self._encoders is None:
            return "nothing: its spec has everything this node's has"
        entry = self._encoders.get(type(message))
        if entry is None:
            return f"its spec has no {type(message).__name__}"
        name, _, values_of = entry
        try:
            values_of(message)
        except _Invalid as exc:
            return f"{exc.where(name)}: {exc.reason}"
        return "nothing"

    def describe(self) -> str:
        """How the peer's layout relates to ours, for the log."""
        if self.common is None:
            return "the same wire layout"
        if self.common.newer == "same":
            return "the same wire layout (the specs differ only off the wire: defaults or member names)"
        extensions = "; ".join(self.common.extensions)
        if self.common.newer == "here":
            return f"an older spec: this node sends it only what it knows ({extensions})"
        return f"a newer spec: it sends this node only what this node knows ({extensions})"


class Codec:
    """The wire codec of one generated module: `encode`/`decode` for peers with the same
    layout, `channel` for peers of another one."""

    def __init__(self, module: ModuleType) -> None:
        self.module = module
        self.layout: Layout = layout_of(module)
        self.layout_bytes: bytes = self.layout.pack()
        """The canonical layout, as the handshake sends it when digests differ."""
        self.digest: str = hashlib.sha256(self.layout_bytes).hexdigest()
        """SHA-256 of `layout_bytes` (hex): what the hello carries."""
        decoders, encoders = _Builder(module, _FULL).messages(len(module.WIRE_MESSAGES))
        self._wire_types = frozenset(encoders)
        self.encode: Callable[[Any], bytes] = _make_encode(encoders)
        """The frame body of a message (without the transport's length prefix)."""
        self.decode: Callable[[bytes], Any] = _make_decode(decoders)
        """The message in one frame body; FrameError names the first thing that is wrong."""
        self.identity = Channel(self.digest, None, self.encode, self.decode)
        """The channel to peers with this very layout: the plain functions."""
        self._channels: OrderedDict[str, Channel | Incompatible] = OrderedDict()

    def channel(self, peer_digest: str, peer_layout: Layout | None = None) -> Channel:
        """The channel to a peer whose layout has `peer_digest` (the layout itself is
        needed unless it is ours or was seen before); raises Incompatible."""
        if peer_digest == self.digest:
            return self.identity
        known = self._channels.get(peer_digest)
        if known is None:
            if peer_layout is None:
                raise KeyError(peer_digest)
            try:
                known = self._compile(peer_digest, negotiate(self.layout, peer_layout))
            except Incompatible as exc:
                known = exc
            self._channels[peer_digest] = known
            while len(self._channels) > MAX_CHANNELS:
                self._channels.popitem(last=False)
        if isinstance(known, Incompatible):
            raise Incompatible(known.difference)
        return known

    def _compile(self, peer_digest: str, common: Common) -> Channel:
        if common.newer == "same":
            # same on the wire (e.g. a changed default): the plain functions do
            return Channel(peer_digest, common, self.encode, self.decode)
        build = _Builder(self.module, _View(common.counts, common.widths, common.enums))
        decoders, encoders = build.messages(common.tags)
        decode = _make_decode(decoders)
        if common.newer == "there":
            # the peer knows all we have: we send exactly what we send each other
            return Channel(peer_digest, common, self.encode, decode)
        return Channel(peer_digest, common, _make_channel_encode(encoders, self._wire_types), decode, encoders)


DEFAULT: Final = Codec(raft_fsm)
"""The codec of generated.raft_fsm, which this node's Raft code uses."""

SCHEMA_DIGEST: Final = DEFAULT.digest
"""Fingerprint of the wire layout (tags, fields, types, defaults present, enum values):
SHA-256 of the canonical layout, in hex. Hellos carry it; when two differ, the nodes
exchange their layouts and negotiate (docs/spec-evolution.md)."""

encode: Final[Callable[[WireMessage], bytes]] = DEFAULT.encode
"""The msgpack body of one frame (without the transport's length prefix)."""

decode: Final[Callable[[bytes], WireMessage]] = DEFAULT.decode
"""The message in one frame body; FrameError names the first thing that is wrong."""

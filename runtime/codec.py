"""msgpack encoding of the wire messages, driven by the generated schema.

A message travels as a msgpack array ``[tag, field1, field2, ...]``: the tag is the
message's position in ``WIRE_MESSAGES`` and the fields follow ``FIELD_TYPES`` order.
Records (``Entry``) nest as arrays in their own field order, enums travel as ints.
Arrays rather than maps keep frames small and make the arity check trivial.

Decoding is the trust boundary: every field of every frame is
checked against the spec types before a message object exists, with an error that names
the exact place (``AppendEntries.entries[3].kind: 9 is not a valid EntryKind``). The
encoder trusts the types ``mypy --strict`` already checked on our side.

Both directions are compiled once at import from ``FIELD_TYPES``, so a spec edit needs no
codec edit, and the per-frame work is a few C-level calls plus one attrs constructor
per record.
"""

from __future__ import annotations

import enum
import hashlib
import json
from collections.abc import Callable
from operator import attrgetter, itemgetter
from typing import Any, Final

import attrs
import msgpack

from generated import raft_fsm
from generated.raft_fsm import FIELD_TYPES, WIRE_MESSAGES, WireMessage
from runtime.errors import FrameError
from runtime.limits import MAX_WIRE_INT

__all__ = ["SCHEMA_DIGEST", "FrameError", "decode", "encode"]

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


_Convert = Callable[[Any], Any]

_SCALARS: Final[dict[str, type]] = {"int": int, "bool": bool, "str": str, "bytes": bytes, "float": float}


def _describe(value: object) -> str:
    text = repr(value)
    if len(text) > 40:
        text = text[:37] + "..."
    kind = "list" if type(value) is tuple else type(value).__name__
    return f"{kind} {text}"


def _enum_type(name: str) -> type[enum.IntEnum] | None:
    candidate = getattr(raft_fsm, name, None)
    if isinstance(candidate, type) and issubclass(candidate, enum.IntEnum):
        return candidate
    return None


def _record_type(name: str) -> type[Any]:
    cls = getattr(raft_fsm, name)
    names = tuple(field.name for field in attrs.fields(cls))
    declared = tuple(field for field, _ in FIELD_TYPES[name])
    if names != declared:  # the generator broke its own contract; fail at import, not per frame
        raise RuntimeError(f"{name}: attrs fields {names} differ from FIELD_TYPES {declared}")
    return cls  # type: ignore[no-any-return]


def _wire_type(spec: str) -> type | None:
    """The one Python type a field must have straight out of msgpack, if there is one."""
    if spec in _SCALARS:
        return _SCALARS[spec]
    if _enum_type(spec) is not None:
        return int
    return None


# ---------------------------------------------------------------------------- decoding


def _decoder(spec: str) -> _Convert:
    if spec.endswith("?"):
        return _optional_decoder(_decoder(spec[:-1]))
    if spec.startswith("list[") and spec.endswith("]"):
        return _list_decoder(spec[5:-1])
    if spec in _SCALARS:
        return _scalar_decoder(spec, _SCALARS[spec])
    enum_type = _enum_type(spec)
    if enum_type is not None:
        return _enum_decoder(enum_type)
    if spec in FIELD_TYPES:
        return _record_decoder(spec)
    raise RuntimeError(f"unknown spec type {spec!r}")


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


def _list_decoder(item_spec: str) -> _Convert:
    item = _decoder(item_spec)
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


def _record_decoder(name: str) -> _Convert:
    cls = _record_type(name)
    fields = FIELD_TYPES[name]
    arity = len(fields)
    decoders = tuple(_decoder(spec) for _, spec in fields)
    # Fast path: one C-level comparison checks every field whose wire type is fixed;
    # only enums, lists, records and optionals run Python code.
    fixed = [(i, t) for i, (_, spec) in enumerate(fields) if (t := _wire_type(spec)) is not None]
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
        if (enum_type := _enum_type(spec)) is not None
    )
    converters = tuple(
        (i, f".{field}", decoders[i])
        for i, (field, spec) in enumerate(fields)
        if _wire_type(spec) is None
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


# ---------------------------------------------------------------------------- encoding


def _encoder(spec: str) -> _Convert | None:
    """None means the value goes to msgpack as it is."""
    if spec.endswith("?"):
        inner = _encoder(spec[:-1])
        if inner is None:
            return None
        return lambda value: None if value is None else inner(value)
    if spec.startswith("list[") and spec.endswith("]"):
        return _list_encoder(spec[5:-1])
    if spec == "float":
        return float  # an int-valued float must still travel as a float
    if spec in _SCALARS:
        return None
    enum_type = _enum_type(spec)
    if enum_type is not None:
        return _enum_encoder(enum_type)
    if spec in FIELD_TYPES:
        return _record_encoder(spec)
    raise RuntimeError(f"unknown spec type {spec!r}")


def _enum_encoder(enum_type: type[enum.IntEnum]) -> _Convert:
    values = {m: m.value for m in enum_type if m.name != PLACEHOLDER_MEMBER}

    def member(value: Any) -> Any:
        try:
            return values[value]
        except (KeyError, TypeError):
            raise _Invalid(f"{value!r} cannot be sent as a {enum_type.__name__}") from None

    return member


def _list_encoder(item_spec: str) -> _Convert | None:
    item = _encoder(item_spec)
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


def _fields_encoder(name: str) -> Callable[[Any], list[Any]]:
    fields = FIELD_TYPES[name]
    getter = attrgetter(*(field for field, _ in fields))
    single = len(fields) == 1
    converters = tuple(
        (i, f".{field}", convert)
        for i, (field, spec) in enumerate(fields)
        if (convert := _encoder(spec)) is not None
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


def _record_encoder(name: str) -> _Convert:
    _record_type(name)
    return _fields_encoder(name)


# ---------------------------------------------------------------------------- tables


def _message_codecs() -> tuple[
    tuple[tuple[str, _Convert], ...], dict[type, tuple[str, int, Callable[[Any], list[Any]]]]
]:
    decoders = []
    encoders = {}
    for tag, cls in enumerate(WIRE_MESSAGES):
        name = cls.__name__
        _record_type(name)
        decoders.append((name, _record_decoder(name)))
        encoders[cls] = (name, tag, _fields_encoder(name))
    return tuple(decoders), encoders


_DECODERS, _ENCODERS = _message_codecs()


def _schema_digest() -> str:
    enums = {
        name: [[m.name, m.value] for m in enum_type]
        for name in sorted({spec.strip("?").removeprefix("list[").rstrip("]?")
                            for fields in FIELD_TYPES.values() for _, spec in fields})
        if (enum_type := _enum_type(name)) is not None
    }
    layout = {
        "messages": [[cls.__name__, FIELD_TYPES[cls.__name__]] for cls in WIRE_MESSAGES],
        "records": {name: fields for name, fields in sorted(FIELD_TYPES.items())},
        "enums": enums,
    }
    return hashlib.sha256(json.dumps(layout, sort_keys=True).encode()).hexdigest()[:16]


SCHEMA_DIGEST: Final = _schema_digest()
"""Fingerprint of the wire layout (tags, fields, types, enum values). Nodes compare it in
their handshake so that peers built from different specs fail with a clear message
instead of a stream of confusing decode errors."""


# ---------------------------------------------------------------------------- public


def encode(message: WireMessage) -> bytes:
    """The msgpack body of one frame (without the transport's length prefix)."""
    try:
        name, tag, values_of = _ENCODERS[type(message)]
    except KeyError:
        raise FrameError(f"{type(message).__name__} is not a wire message") from None
    try:
        values = values_of(message)
    except _Invalid as exc:
        raise FrameError(f"{exc.where(name)}: {exc.reason}") from None
    values.insert(0, tag)
    try:
        return msgpack.packb(values, use_bin_type=True)  # type: ignore[no-any-return]
    except (TypeError, ValueError, OverflowError) as exc:
        raise FrameError(f"{name}: cannot encode: {exc}") from None


def decode(data: bytes) -> WireMessage:
    """The message in one frame body; FrameError names the first thing that is wrong."""
    try:
        frame = msgpack.unpackb(data, raw=False, strict_map_key=True, use_list=False)
    except (ValueError, msgpack.UnpackException) as exc:
        raise FrameError(f"not a msgpack frame: {type(exc).__name__}: {exc}") from None
    if type(frame) is not tuple or not frame:
        raise FrameError(f"a frame must be an array [tag, fields...], got {_describe(frame)}")
    tag = frame[0]
    if type(tag) is not int or not 0 <= tag < len(_DECODERS):
        raise FrameError(f"unknown message tag {tag!r} (known: 0..{len(_DECODERS) - 1})")
    name, decoder = _DECODERS[tag]
    try:
        return decoder(frame[1:])  # type: ignore[no-any-return]
    except _Invalid as exc:
        raise FrameError(f"{exc.where(name)}: {exc.reason}") from None

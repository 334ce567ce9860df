"""The wire layout of a spec, as two nodes exchange it in their handshake, and the rule
that decides whether nodes built from two specs can talk (docs/spec-evolution.md).

A layout lists every wire message in tag order with its fields (name, spec type, whether
the field has a default), the records with theirs, and the enums that travel, with their
values. Its digest (SHA-256 of the canonical msgpack form) is what a hello carries.

Two layouts are compatible when one *extends* the other: same message at every shared
tag, the longer side's extra messages only after the shorter side's last; for every
message and record both have, the same leading fields (name and type), the longer side's
extra fields all with defaults; every enum value of the shorter side in the longer side.
The shorter one is then the *common* layout: what a node sends to, and expects from,
that peer. Anything else (a field removed, retyped, renamed or moved; a message moved;
one side extending in one place and the other side in another) is breaking, and the
first such difference is named from this node's point of view ("here" is this node's
spec, "its spec" the peer's).
"""

from __future__ import annotations

import enum
import hashlib
from collections.abc import Mapping
from types import MappingProxyType, ModuleType
from typing import Any, Final, Literal

import attrs
import msgpack
from attrs import frozen

__all__ = [
    "SCALARS",
    "Common",
    "EnumLayout",
    "FieldLayout",
    "Incompatible",
    "Layout",
    "LayoutError",
    "TypeLayout",
    "base_type",
    "layout_of",
    "negotiate",
]

SCALARS: Final = frozenset({"int", "bool", "str", "bytes", "float"})
MAX_NAME: Final = 200
"""Longest name or type text accepted in a peer's layout."""

Side = Literal["here", "there"]


class LayoutError(ValueError):
    """A peer's layout is not a layout (malformed msgpack or structure)."""


class Incompatible(Exception):
    """The two layouts cannot talk; `difference` names the first thing that breaks."""

    def __init__(self, difference: str) -> None:
        super().__init__(difference)
        self.difference = difference


@frozen
class FieldLayout:
    name: str
    type: str
    has_default: bool


@frozen
class TypeLayout:
    """A wire message (with the envelope's fields first) or a record."""

    name: str
    fields: tuple[FieldLayout, ...]


@frozen
class EnumLayout:
    name: str
    values: tuple[tuple[str, int], ...]
    """(member, number), by number."""


@frozen
class Layout:
    messages: tuple[TypeLayout, ...]
    """Wire messages; the position is the tag."""
    records: tuple[TypeLayout, ...]
    """By name."""
    enums: tuple[EnumLayout, ...]
    """The enums some field uses, by name."""

    def pack(self) -> bytes:
        """The canonical form: what the handshake sends and the digest is taken of."""
        def kind(t: TypeLayout) -> list[Any]:
            return [t.name, [[f.name, f.type, f.has_default] for f in t.fields]]

        packed: bytes = msgpack.packb(
            [[kind(m) for m in self.messages], [kind(r) for r in self.records],
             [[e.name, [list(v) for v in e.values]] for e in self.enums]],
            use_bin_type=True,
        )
        return packed

    def digest(self) -> str:
        return hashlib.sha256(self.pack()).hexdigest()

    @classmethod
    def unpack(cls, data: bytes) -> Layout:
        """A peer's layout, checked for shape (never trusted further than that)."""
        try:
            raw = msgpack.unpackb(data, raw=False, strict_map_key=True, use_list=False)
        except (ValueError, msgpack.UnpackException) as exc:
            raise LayoutError(f"not msgpack ({type(exc).__name__}: {exc})") from None
        parts = _tuple(raw, "the layout")
        if len(parts) != 3:
            raise LayoutError(f"expected [messages, records, enums], got {len(parts)} parts")
        messages = tuple(_type_layout(item, "a message") for item in _tuple(parts[0], "the messages"))
        records = tuple(_type_layout(item, "a record") for item in _tuple(parts[1], "the records"))
        enums = tuple(_enum_layout(item) for item in _tuple(parts[2], "the enums"))
        names = [t.name for t in (*messages, *records)] + [e.name for e in enums]
        if len(set(names)) != len(names):
            raise LayoutError("a type name appears twice")
        return cls(messages, records, enums)


def _tuple(value: object, what: str) -> tuple[Any, ...]:
    if type(value) is not tuple:
        raise LayoutError(f"{what} must be an array, got {type(value).__name__}")
    return value


def _name(value: object, what: str) -> str:
    if type(value) is not str or not value or len(value) > MAX_NAME:
        raise LayoutError(f"{what} must be a non-empty string of at most {MAX_NAME} characters, got {value!r:.40}")
    return value


def _type_layout(item: object, what: str) -> TypeLayout:
    pair = _tuple(item, what)
    if len(pair) != 2:
        raise LayoutError(f"{what} must be [name, fields]")
    name = _name(pair[0], f"the name of {what}")
    fields = []
    for raw in _tuple(pair[1], f"the fields of {name}"):
        field = _tuple(raw, f"a field of {name}")
        if len(field) != 3 or type(field[2]) is not bool:
            raise LayoutError(f"a field of {name} must be [name, type, has_default]")
        fields.append(FieldLayout(_name(field[0], f"a field name of {name}"),
                                  _name(field[1], f"a field type of {name}"), field[2]))
    if len({f.name for f in fields}) != len(fields):
        raise LayoutError(f"{name} has a field name twice")
    return TypeLayout(name, tuple(fields))


def _enum_layout(item: object) -> EnumLayout:
    pair = _tuple(item, "an enum")
    if len(pair) != 2:
        raise LayoutError("an enum must be [name, values]")
    name = _name(pair[0], "the name of an enum")
    values = []
    for raw in _tuple(pair[1], f"the values of {name}"):
        value = _tuple(raw, f"a value of {name}")
        if len(value) != 2 or type(value[1]) is not int:
            raise LayoutError(f"a value of {name} must be [member, number]")
        values.append((_name(value[0], f"a member of {name}"), value[1]))
    if len({number for _, number in values}) != len(values):
        raise LayoutError(f"{name} has a number twice")
    return EnumLayout(name, tuple(values))


def base_type(spec: str) -> str:
    """The named or scalar type under `?` and `list[...]`."""
    while True:
        if spec.endswith("?"):
            spec = spec[:-1]
        elif spec.startswith("list[") and spec.endswith("]"):
            spec = spec[5:-1]
        else:
            return spec


def layout_of(module: ModuleType) -> Layout:
    """The layout of a generated module (its WIRE_MESSAGES, FIELD_TYPES, attrs defaults
    and enums)."""
    field_types: Mapping[str, tuple[tuple[str, str], ...]] = module.FIELD_TYPES
    wire_names = [cls.__name__ for cls in module.WIRE_MESSAGES]

    def kind(name: str) -> TypeLayout:
        defaults = {f.name: f.default is not attrs.NOTHING for f in attrs.fields(getattr(module, name))}
        return TypeLayout(name, tuple(FieldLayout(field, spec, defaults[field]) for field, spec in field_types[name]))

    enums = []
    for name in sorted({base_type(spec) for fields in field_types.values() for _, spec in fields}):
        candidate = getattr(module, name, None)
        if isinstance(candidate, type) and issubclass(candidate, enum.IntEnum):
            enums.append(EnumLayout(name, tuple(sorted(((m.name, m.value) for m in candidate),
                                                       key=lambda pair: pair[1]))))
    return Layout(
        messages=tuple(kind(name) for name in wire_names),
        records=tuple(kind(name) for name in sorted(field_types) if name not in wire_names),
        enums=tuple(enums),
    )


# ---------------------------------------------------------------------------- negotiation


@frozen
class Common:
    """What two compatible layouts share, seen from this node."""

    newer: Literal["same", "here", "there"]
    """Which side's spec extends the other ("same": they agree on everything the wire
    carries, e.g. they differ only in defaults or member names)."""
    tags: int
    """Message types both know: tags 0..tags-1."""
    counts: Mapping[str, int]
    """Per message and record both know: the leading fields both know."""
    widths: Mapping[str, int]
    """Per message and record both know: the most fields either side has (a frame from
    a newer peer may carry this many; the extra ones have defaults there)."""
    enums: Mapping[str, frozenset[int]]
    """Per enum both know: the values both know (the only ones sent)."""
    extensions: tuple[str, ...]
    """What the newer side has that the other lacks, for the log."""


class _Walk:
    def __init__(self, mine: Layout, theirs: Layout) -> None:
        self.mine, self.theirs = mine, theirs
        self.newer: Side | None = None
        self.first: str = ""
        self.extensions: list[str] = []
        self.counts: dict[str, int] = {}
        self.widths: dict[str, int] = {}
        self.enums: dict[str, frozenset[int]] = {}
        self.kinds_here = _kinds(mine)
        self.kinds_there = _kinds(theirs)

    def extends(self, side: Side, what: str) -> None:
        """`what` (one side has it, the other lacks it) is fine if that side is newer in
        every such respect."""
        if self.newer is None:
            self.newer, self.first = side, what
        elif self.newer != side:
            raise Incompatible(f"{what}, but {self.first}: neither spec extends the other")
        self.extensions.append(what)

    def messages(self) -> None:
        here, there = self.mine.messages, self.theirs.messages
        for tag in range(max(len(here), len(there))):
            if tag >= len(there):
                self.extends("here", f"message {here[tag].name} (tag {tag}) is only in this node's spec")
            elif tag >= len(here):
                self.extends("there", f"message {there[tag].name} (tag {tag}) is only in its spec")
            elif here[tag].name != there[tag].name:
                raise Incompatible(f"message tag {tag} is {here[tag].name} here but {there[tag].name} in its spec")
            else:
                self.fields(here[tag], there[tag])

    def records(self) -> None:
        here = {r.name: r for r in self.mine.records}
        there = {r.name: r for r in self.theirs.records}
        for name in sorted(here.keys() | there.keys()):
            if name not in there:
                self.extends("here", f"record {name} is only in this node's spec")
            elif name not in here:
                self.extends("there", f"record {name} is only in its spec")
            else:
                self.fields(here[name], there[name])

    def fields(self, here: TypeLayout, there: TypeLayout) -> None:
        owner = here.name
        for i in range(max(len(here.fields), len(there.fields))):
            if i >= len(there.fields):
                field = here.fields[i]
                if not field.has_default:
                    raise Incompatible(f"{owner}.{field.name} is not in its spec and has no default here")
                self.extends("here", f"{owner}.{field.name} is only in this node's spec")
            elif i >= len(here.fields):
                field = there.fields[i]
                if not field.has_default:
                    raise Incompatible(f"{owner}.{field.name} ({field.type}) is only in its spec, without a default")
                self.extends("there", f"{owner}.{field.name} is only in its spec")
            else:
                a, b = here.fields[i], there.fields[i]
                if a.name != b.name:
                    raise Incompatible(f"{owner} field {i} is {a.name}: {a.type} here but {b.name}: {b.type} "
                                       "in its spec")
                if a.type != b.type:
                    raise Incompatible(f"{owner}.{a.name} changed type {a.type} -> {b.type}")
                self.named_type(owner, a)
        self.counts[owner] = min(len(here.fields), len(there.fields))
        self.widths[owner] = max(len(here.fields), len(there.fields))

    def named_type(self, owner: str, field: FieldLayout) -> None:
        """A shared field's record or enum must be one in both layouts (a layout that
        names a type it does not declare is malformed)."""
        name = base_type(field.type)
        if name in SCALARS:
            return
        here, there = self.kinds_here.get(name), self.kinds_there.get(name)
        if there is None:
            raise Incompatible(f"{owner}.{field.name} is {_a(name)}, which its spec does not declare")
        if here is None:
            raise Incompatible(f"{owner}.{field.name} is {_a(name)}, which this node's spec does not declare")
        if here != there:
            raise Incompatible(f"{name} is {_a(here)} here but {_a(there)} in its spec")

    def enum_values(self) -> None:
        here = {e.name: e for e in self.mine.enums}
        there = {e.name: e for e in self.theirs.enums}
        for name in sorted(here.keys() | there.keys()):
            if name not in there:
                self.extends("here", f"enum {name} is only in this node's spec")
                continue
            if name not in here:
                self.extends("there", f"enum {name} is only in its spec")
                continue
            mine = dict((number, member) for member, number in here[name].values)
            theirs = dict((number, member) for member, number in there[name].values)
            for number in sorted(mine.keys() | theirs.keys()):
                if number not in theirs:
                    self.extends("here", f"{name}.{mine[number]} ({number}) is only in this node's spec")
                elif number not in mine:
                    self.extends("there", f"{name}.{theirs[number]} ({number}) is only in its spec")
            self.enums[name] = frozenset(mine.keys() & theirs.keys())


def _kinds(layout: Layout) -> dict[str, str]:
    kinds = {r.name: "record" for r in layout.records}
    kinds.update((e.name, "enum") for e in layout.enums)
    return kinds


def _a(word: str) -> str:
    return f"an {word}" if word[0].lower() in "aeiou" else f"a {word}"


def negotiate(mine: Layout, theirs: Layout) -> Common:
    """What this node (layout `mine`) and a peer (layout `theirs`) share; raises
    Incompatible naming the first difference that breaks (messages in tag order with
    their fields, then records, then enums)."""
    walk = _Walk(mine, theirs)
    walk.messages()
    walk.records()
    walk.enum_values()
    return Common(
        newer=walk.newer or "same",
        tags=min(len(mine.messages), len(theirs.messages)),
        counts=MappingProxyType(walk.counts),
        widths=MappingProxyType(walk.widths),
        enums=MappingProxyType(walk.enums),
        extensions=tuple(walk.extensions),
    )

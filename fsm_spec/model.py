"""The validated spec, as attrs records the generator renders from.

Everything here is immutable and ordered as in the YAML file, so rendering is
deterministic whatever PYTHONHASHSEED says.
"""

from __future__ import annotations

from attrs import frozen

PRIMITIVES: dict[str, str] = {
    "int": "int",
    "bool": "bool",
    "str": "str",
    "bytes": "bytes",
    "float": "float",
}


@frozen
class TypeRef:
    """A field type: a primitive, an enum, a record message, `list[T]` or `T?`."""

    text: str
    kind: str  # "primitive" | "enum" | "record" | "list" | "optional"
    element: TypeRef | None = None

    @property
    def python(self) -> str:
        if self.kind == "list":
            assert self.element is not None
            return f"Sequence[{self.element.python}]"
        if self.kind == "optional":
            assert self.element is not None
            return f"{self.element.python} | None"
        return PRIMITIVES.get(self.text, self.text)


@frozen
class StateSpec:
    name: str
    doc: str
    initial: bool
    final: bool
    line: int


@frozen
class EnumValue:
    name: str
    value: int
    doc: str


@frozen
class EnumSpec:
    name: str
    doc: str
    values: tuple[EnumValue, ...]
    line: int


@frozen
class FieldSpec:
    name: str
    type: TypeRef
    doc: str
    line: int


@frozen
class MessageSpec:
    """`wire` messages travel between nodes and start with the envelope fields;
    `record` messages are nested inside wire messages; `local` ones never leave a node."""

    name: str
    kind: str
    doc: str
    fields: tuple[FieldSpec, ...]
    line: int


@frozen
class EventSpec:
    name: str
    payload: str | None
    doc: str
    line: int


@frozen
class RowSpec:
    """One row of the table. `kind` is transition, internal, ignore or error."""

    trigger: str
    sources: tuple[str, ...]
    dest: str | None
    kind: str
    prepare: tuple[str, ...]
    conditions: tuple[str, ...]
    unless: tuple[str, ...]
    before: tuple[str, ...]
    after: tuple[str, ...]
    doc: str
    line: int

    @property
    def guarded(self) -> bool:
        return bool(self.conditions or self.unless)

    @property
    def label(self) -> str:
        """`trigger [guards] / actions`, as drawn on the diagram."""
        guards = [*self.conditions, *(f"not {name}" for name in self.unless)]
        text = self.trigger
        if guards:
            text += " [" + " and ".join(guards) + "]"
        actions = [*self.prepare, *self.before, *self.after]
        if actions:
            text += " / " + ", ".join(actions)
        return text


@frozen
class Callback:
    """A guard or action name with the payload type of the events that call it."""

    name: str
    payload: str | None
    is_guard: bool


@frozen
class Spec:
    name: str
    path: str
    sha256: str
    states: tuple[StateSpec, ...]
    enums: tuple[EnumSpec, ...]
    envelope: tuple[FieldSpec, ...]
    envelope_doc: str
    messages: tuple[MessageSpec, ...]
    events: tuple[EventSpec, ...]
    rows: tuple[RowSpec, ...]
    callbacks: tuple[Callback, ...]

    def state(self, name: str) -> StateSpec:
        return next(s for s in self.states if s.name == name)

    def event(self, name: str) -> EventSpec:
        return next(e for e in self.events if e.name == name)

    def rows_for(self, state: str, event: str) -> tuple[RowSpec, ...]:
        return tuple(r for r in self.rows if r.trigger == event and state in r.sources)

    @property
    def initial(self) -> StateSpec:
        return next(s for s in self.states if s.initial)

    @property
    def guards(self) -> tuple[Callback, ...]:
        return tuple(c for c in self.callbacks if c.is_guard)

    @property
    def actions(self) -> tuple[Callback, ...]:
        return tuple(c for c in self.callbacks if not c.is_guard)

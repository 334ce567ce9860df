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
    """A role. `on_enter` / `on_exit` name actions run when a transition row enters or
    leaves it (the `transitions` library's state callbacks: not for internal rows, and
    both for a reflexive row whose dest is its source)."""

    name: str
    doc: str
    initial: bool
    final: bool
    line: int
    on_enter: tuple[str, ...] = ()
    on_exit: tuple[str, ...] = ()


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
class Default:
    """A field's default: the value as loaded from YAML and its Python source text."""

    value: object
    python: str


@frozen
class FieldSpec:
    name: str
    type: TypeRef
    doc: str
    line: int
    default: Default | None = None


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
    test: str | None = None
    """The recipe (in the row-test fixtures) that drives this row; None: by convention."""

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
    """A guard or action name with the payload type it is called with (None: no argument).

    `uses` are the spec lines of the rows (and states, for on_enter/on_exit) that name
    it, in order; `declared` is the line of its entry under `callbacks:`, or 0."""

    name: str
    payload: str | None
    is_guard: bool
    uses: tuple[int, ...] = ()
    declared: int = 0
    doc: str = ""

    @property
    def line(self) -> int:
        """Where to point at it: its first use, else its declaration."""
        return self.uses[0] if self.uses else self.declared


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

    def message(self, name: str) -> MessageSpec:
        return next(m for m in self.messages if m.name == name)

    def callback(self, name: str) -> Callback:
        return next(c for c in self.callbacks if c.name == name)

    @property
    def state_callbacks(self) -> tuple[Callback, ...]:
        """Actions named by some state's on_enter or on_exit."""
        names = {n for s in self.states for n in (*s.on_enter, *s.on_exit)}
        return tuple(c for c in self.callbacks if c.name in names)

    @property
    def initial(self) -> StateSpec:
        return next(s for s in self.states if s.initial)

    @property
    def guards(self) -> tuple[Callback, ...]:
        return tuple(c for c in self.callbacks if c.is_guard)

    @property
    def actions(self) -> tuple[Callback, ...]:
        return tuple(c for c in self.callbacks if not c.is_guard)

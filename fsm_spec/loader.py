"""Load `raft.yaml`, validate it and build the `Spec` model.

All problems are collected and reported together, each as `file:line: reason`, so a
protocol developer fixes a broken spec in one round instead of one error at a time.
"""

from __future__ import annotations

import hashlib
import itertools
import keyword
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import attrs
import yaml

from fsm_spec.model import (
    PRIMITIVES,
    Callback,
    Default,
    EnumSpec,
    EnumValue,
    EventSpec,
    FieldSpec,
    MessageSpec,
    RowSpec,
    Spec,
    StateSpec,
    TypeRef,
)

DEFAULT_SPEC = Path(__file__).with_name("raft.yaml")

CALLBACK_KEYS = ("prepare", "conditions", "unless", "before", "after")
ROW_KEYS = {"trigger", "source", "dest", "ignore", "error", "doc", "test", *CALLBACK_KEYS}
STATE_CALLBACK_KEYS = ("on_enter", "on_exit")
MESSAGE_KINDS = ("wire", "record", "local")
NO_PAYLOAD = "none"
"""`callbacks: {name: {payload: none}}` declares a callback that takes no argument."""


@attrs.frozen
class Problem:
    line: int
    message: str


class SpecError(Exception):
    """The spec is invalid. `problems` holds every problem found, in line order."""

    def __init__(self, path: str, problems: Iterable[Problem]) -> None:
        self.path = path
        self.problems = sorted(problems, key=lambda p: p.line)
        super().__init__("\n".join(self.lines()))

    def lines(self) -> list[str]:
        return [f"{self.path}:{p.line}: {p.message}" for p in self.problems]


class _Map(dict[str, Any]):
    """A YAML mapping that remembers where it and each of its keys started."""

    line: int = 0
    key_lines: dict[str, int]


class _Seq(list[Any]):
    line: int = 0
    item_lines: list[int]


class _LineLoader(yaml.SafeLoader):
    """SafeLoader that records line numbers and rejects duplicate keys
    (PyYAML silently keeps the last one)."""

    duplicates: list[Problem]

    def construct_mapping(  # type: ignore[override]
        self, node: yaml.MappingNode, deep: bool = False
    ) -> _Map:
        result = _Map()
        result.line = node.start_mark.line + 1
        result.key_lines = {}
        for key_node, value_node in node.value:
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            if not isinstance(key, str):
                key = str(key)
            if key in result:
                self.duplicates.append(Problem(line, f"duplicate key {key!r}"))
                continue
            result[key] = self.construct_object(value_node, deep=True)
            result.key_lines[key] = line
        return result

    def construct_sequence(
        self, node: yaml.SequenceNode, deep: bool = False
    ) -> _Seq:
        result = _Seq(self.construct_object(child, deep=True) for child in node.value)
        result.line = node.start_mark.line + 1
        result.item_lines = [child.start_mark.line + 1 for child in node.value]
        return result


_LineLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _LineLoader.construct_mapping
)
_LineLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_SEQUENCE_TAG, _LineLoader.construct_sequence
)


def parse_yaml(text: str, path: str) -> tuple[Any, list[Problem]]:
    loader = _LineLoader(text)
    loader.duplicates = []
    try:
        data = loader.get_single_data()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else 1
        raise SpecError(path, [Problem(line, f"YAML syntax error: {exc.problem}")]) from exc
    finally:
        loader.dispose()
    return data, loader.duplicates


def load_spec(path: str | Path = DEFAULT_SPEC, *, implicit_payloads: bool = False) -> Spec:
    """Read, validate and model a spec file; raise SpecError listing every problem.

    `implicit_payloads` accepts specs written before payloads were explicit: a callback
    run after events with different payload types then takes no argument, as it used to
    (`compat` reads old specs this way)."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise SpecError(str(path), [Problem(0, f"cannot read spec: {exc.strerror}")]) from exc
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SpecError(str(path), [Problem(1, f"spec is not UTF-8: {exc.reason}")]) from exc
    spec, problems, _ = validate(text, str(path), implicit_payloads=implicit_payloads)
    if problems:
        raise SpecError(str(path), problems)
    assert spec is not None
    return spec


def load_spec_with_warnings(path: str | Path = DEFAULT_SPEC) -> tuple[Spec, list[str]]:
    path = Path(path)
    spec, problems, warnings = validate(path.read_text(encoding="utf-8"), str(path))
    if problems:
        raise SpecError(str(path), problems)
    assert spec is not None
    return spec, [f"{path}:{w.line}: warning: {w.message}" for w in warnings]


def validate(
    text: str, path: str, *, implicit_payloads: bool = False
) -> tuple[Spec | None, list[Problem], list[Problem]]:
    """Return (spec or None, problems, warnings)."""
    data, duplicates = parse_yaml(text, path)
    checker = _Checker(path, hashlib.sha256(text.encode("utf-8")).hexdigest(), implicit_payloads)
    checker.problems.extend(duplicates)
    spec = checker.build(data)
    return (spec if not checker.problems else None), checker.problems, checker.warnings


_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class _Checker:
    def __init__(self, path: str, sha256: str, implicit_payloads: bool = False) -> None:
        self.path = path
        self.sha256 = sha256
        self.implicit_payloads = implicit_payloads
        self.problems: list[Problem] = []
        self.warnings: list[Problem] = []

    # -- helpers ---------------------------------------------------------------
    def error(self, line: int, message: str) -> None:
        self.problems.append(Problem(line, message))

    def mapping(self, value: Any, line: int, what: str) -> _Map | None:
        if isinstance(value, _Map):
            return value
        if value is None:
            empty = _Map()
            empty.line = line
            empty.key_lines = {}
            return empty
        self.error(line, f"{what} must be a mapping, not {type(value).__name__}")
        return None

    def keys(self, node: _Map, allowed: Iterable[str], what: str) -> None:
        allowed = set(allowed)
        for key in node:
            if key not in allowed:
                self.error(
                    node.key_lines[key],
                    f"unknown key {key!r} in {what} (expected one of: {', '.join(sorted(allowed))})",
                )

    def identifier(self, name: str, line: int, what: str) -> bool:
        if not _NAME_RE.match(name):
            self.error(line, f"{what} name {name!r} is not a Python identifier")
            return False
        if keyword.iskeyword(name) or keyword.issoftkeyword(name):
            self.error(line, f"{what} name {name!r} clashes with a Python keyword")
            return False
        return True

    def doc(self, node: _Map, what: str) -> str:
        doc = node.get("doc", "")
        if not isinstance(doc, str):
            self.error(node.key_lines.get("doc", node.line), f"{what}: doc must be a string")
            return ""
        return " ".join(doc.split())

    def flag(self, node: _Map, key: str, what: str) -> bool:
        value = node.get(key, False)
        if not isinstance(value, bool):
            self.error(node.key_lines.get(key, node.line), f"{what}: {key} must be true or false")
            return False
        return value

    def names(self, value: Any, line: int, what: str) -> tuple[str, ...]:
        if value is None:
            return ()
        items = list(value) if isinstance(value, list) else [value]
        out: list[str] = []
        for item in items:
            if not isinstance(item, str):
                self.error(line, f"{what} must be a name or a list of names, not {item!r}")
                continue
            if self.identifier(item, line, what):
                out.append(item)
        return tuple(out)

    # -- the whole document ----------------------------------------------------
    def build(self, data: Any) -> Spec | None:
        root = self.mapping(data, 1, "the spec")
        if root is None:
            return None
        self.keys(
            root,
            ("name", "states", "enums", "envelope", "messages", "events", "callbacks", "transitions"),
            "the spec",
        )
        for required in ("states", "events", "transitions"):
            if required not in root:
                self.error(root.line, f"missing top-level key {required!r}")
        name = root.get("name", "raft")
        if not isinstance(name, str) or not self.identifier(name, root.key_lines.get("name", 1), "spec"):
            name = "raft"
        states = self.states(root.get("states"), root.key_lines.get("states", 1))
        enums = self.enums(root.get("enums"), root.key_lines.get("enums", 1))
        envelope, envelope_doc = self.envelope(root.get("envelope"), root.key_lines.get("envelope", 1))
        messages = self.messages(
            root.get("messages"), root.key_lines.get("messages", 1), enums, envelope
        )
        events = self.events(root.get("events"), root.key_lines.get("events", 1), messages)
        declared = self.declarations(root.get("callbacks"), root.key_lines.get("callbacks", 1), messages)
        rows = self.rows(root.get("transitions"), root.key_lines.get("transitions", 1), states, events)
        self.check_table(states, events, rows)
        callbacks = self.callbacks(states, events, rows, declared)
        return Spec(
            name=name,
            path=self.path,
            sha256=self.sha256,
            states=states,
            enums=enums,
            envelope=envelope,
            envelope_doc=envelope_doc,
            messages=messages,
            events=events,
            rows=rows,
            callbacks=callbacks,
        )

    def states(self, value: Any, line: int) -> tuple[StateSpec, ...]:
        node = self.mapping(value, line, "states")
        if node is None:
            return ()
        out: list[StateSpec] = []
        for name, body in node.items():
            key_line = node.key_lines[name]
            if not self.identifier(name, key_line, "state"):
                continue
            body = self.mapping(body, key_line, f"state {name!r}")
            if body is None:
                continue
            self.keys(body, ("initial", "final", "doc", *STATE_CALLBACK_KEYS), f"state {name!r}")
            on_enter, on_exit = (
                self.names(body.get(key), body.key_lines.get(key, key_line), key) for key in STATE_CALLBACK_KEYS
            )
            out.append(
                StateSpec(
                    name=name,
                    doc=self.doc(body, f"state {name!r}"),
                    initial=self.flag(body, "initial", f"state {name!r}"),
                    final=self.flag(body, "final", f"state {name!r}"),
                    line=key_line,
                    on_enter=on_enter,
                    on_exit=on_exit,
                )
            )
        initial = [s for s in out if s.initial]
        if len(initial) != 1:
            where = initial[1].line if len(initial) > 1 else line
            self.error(
                where,
                f"exactly one state must be initial, found {len(initial)}"
                + (f" ({', '.join(s.name for s in initial)})" if initial else ""),
            )
        for state in out:
            if state.initial and state.final:
                self.error(state.line, f"state {state.name!r} cannot be both initial and final")
        return tuple(out)

    def enums(self, value: Any, line: int) -> tuple[EnumSpec, ...]:
        node = self.mapping(value, line, "enums")
        if node is None:
            return ()
        out: list[EnumSpec] = []
        for name, body in node.items():
            key_line = node.key_lines[name]
            if not self.identifier(name, key_line, "enum"):
                continue
            if name in PRIMITIVES:
                self.error(key_line, f"enum name {name!r} clashes with a built-in type")
                continue
            body = self.mapping(body, key_line, f"enum {name!r}")
            if body is None:
                continue
            self.keys(body, ("doc", "values"), f"enum {name!r}")
            values_node = self.mapping(body.get("values"), key_line, f"enum {name!r} values")
            values: list[EnumValue] = []
            seen: set[int] = set()
            for value_name, value_body in (values_node or {}).items():
                value_line = values_node.key_lines[value_name] if values_node else key_line
                if not self.identifier(value_name, value_line, "enum value"):
                    continue
                vb = self.mapping(value_body, value_line, f"enum value {value_name!r}")
                if vb is None:
                    continue
                self.keys(vb, ("value", "doc"), f"enum value {value_name!r}")
                number = vb.get("value")
                if not isinstance(number, int) or isinstance(number, bool):
                    self.error(value_line, f"enum value {value_name!r} needs an integer 'value'")
                    continue
                if number in seen:
                    self.error(value_line, f"enum {name!r} uses the value {number} twice")
                seen.add(number)
                values.append(EnumValue(value_name, number, self.doc(vb, f"enum value {value_name!r}")))
            if not values:
                self.error(key_line, f"enum {name!r} has no values")
            out.append(EnumSpec(name, self.doc(body, f"enum {name!r}"), tuple(values), key_line))
        return tuple(out)

    def fields(
        self,
        value: Any,
        line: int,
        owner: str,
        types: dict[str, str] | None,
        enums: tuple[EnumSpec, ...] = (),
    ) -> tuple[FieldSpec, ...]:
        """The fields of a message (`types` names the enums and records it may use) or of
        the envelope (`types` is None: primitives only, and no defaults)."""
        node = self.mapping(value, line, f"{owner} fields")
        if node is None:
            return ()
        out: list[FieldSpec] = []
        first_default: FieldSpec | None = None
        for name, body in node.items():
            key_line = node.key_lines[name]
            if not self.identifier(name, key_line, "field"):
                continue
            body = self.mapping(body, key_line, f"field {owner}.{name}")
            if body is None:
                continue
            self.keys(body, ("type", "doc", "default"), f"field {owner}.{name}")
            type_text = body.get("type")
            if not isinstance(type_text, str):
                self.error(key_line, f"field {owner}.{name} needs a 'type'")
                continue
            ref = self.type_ref(type_text, key_line, f"field {owner}.{name}", types)
            if ref is None:
                continue
            default: Default | None = None
            if "default" in body:
                default_line = body.key_lines["default"]
                if types is None:
                    self.error(default_line, f"field {owner}.{name}: envelope fields take no default")
                else:
                    default = self.default(body["default"], ref, default_line, f"field {owner}.{name}", enums)
            field = FieldSpec(name, ref, self.doc(body, f"field {owner}.{name}"), key_line, default)
            if default is not None and first_default is None:
                first_default = field
            elif default is None and first_default is not None and "default" not in body:
                self.error(
                    key_line,
                    f"field {owner}.{name} has no default but follows {owner}.{first_default.name} "
                    f"(line {first_default.line}), which has one: fields with defaults come last",
                )
            out.append(field)
        return tuple(out)

    def default(
        self, value: Any, ref: TypeRef, line: int, what: str, enums: tuple[EnumSpec, ...]
    ) -> Default | None:
        """Check that a `default:` fits the field's type; return it with its Python text."""
        if ref.kind == "optional":
            assert ref.element is not None
            if value is None:
                return Default(None, "None")
            return self.default(value, ref.element, line, what, enums)
        if value is None:
            self.error(line, f"{what}: default null needs an optional type ({ref.text}?)")
            return None
        wrong = f"{what}: default {value!r} does not fit the type {ref.text}"
        if ref.kind == "list":
            assert ref.element is not None
            if not isinstance(value, list):
                self.error(line, wrong)
                return None
            items = [self.default(item, ref.element, line, what, enums) for item in value]
            if any(item is None for item in items):
                return None
            texts = [item.python for item in items if item is not None]
            return Default(tuple(item.value for item in items if item is not None),
                           "(" + "".join(f"{t}, " for t in texts).rstrip() + ")")
        if ref.kind == "record":
            self.error(line, f"{what}: a record field takes no default (make it optional, {ref.text}?, "
                             "with default null)")
            return None
        if ref.kind == "enum":
            enum_spec = next(e for e in enums if e.name == ref.text)
            names = [v.name for v in enum_spec.values]
            if not isinstance(value, str) or value not in names:
                self.error(line, f"{what}: default {value!r} is not a member of {ref.text} "
                                 f"({', '.join(names)})")
                return None
            return Default(value, f"{ref.text}.{value}")
        kind = ref.text
        if kind == "bool" and isinstance(value, bool):
            return Default(value, repr(value))
        if kind == "int" and isinstance(value, int) and not isinstance(value, bool):
            return Default(value, repr(value))
        if kind == "float" and isinstance(value, int | float) and not isinstance(value, bool):
            return Default(float(value), repr(float(value)))
        if kind == "str" and isinstance(value, str):
            return Default(value, repr(value))
        if kind == "bytes" and isinstance(value, bytes | str):
            data = value.encode("utf-8") if isinstance(value, str) else value
            return Default(data, repr(data))
        self.error(line, wrong)
        return None

    def type_ref(
        self, text: str, line: int, what: str, types: dict[str, str] | None
    ) -> TypeRef | None:
        text = text.strip()
        if text.endswith("?"):
            inner = self.type_ref(text[:-1], line, what, types)
            return TypeRef(text, "optional", inner) if inner is not None else None
        if text.startswith("list[") and text.endswith("]"):
            inner = self.type_ref(text[5:-1], line, what, types)
            return TypeRef(text, "list", inner) if inner is not None else None
        if text in PRIMITIVES:
            return TypeRef(text, "primitive")
        if types is not None and text in types:
            return TypeRef(text, types[text])
        self.error(line, f"{what}: unknown type {text!r}")
        return None

    def envelope(self, value: Any, line: int) -> tuple[tuple[FieldSpec, ...], str]:
        node = self.mapping(value, line, "envelope")
        if node is None:
            return (), ""
        self.keys(node, ("doc", "fields"), "envelope")
        return (
            self.fields(node.get("fields"), node.key_lines.get("fields", line), "envelope", None),
            self.doc(node, "envelope"),
        )

    def messages(
        self, value: Any, line: int, enums: tuple[EnumSpec, ...], envelope: tuple[FieldSpec, ...]
    ) -> tuple[MessageSpec, ...]:
        node = self.mapping(value, line, "messages")
        if node is None:
            return ()
        types: dict[str, str] = {e.name: "enum" for e in enums}
        bodies: list[tuple[str, int, _Map, str]] = []
        for name, body in node.items():
            key_line = node.key_lines[name]
            if not self.identifier(name, key_line, "message"):
                continue
            if name in types or name in PRIMITIVES:
                self.error(key_line, f"message name {name!r} clashes with an enum or a built-in type")
                continue
            body = self.mapping(body, key_line, f"message {name!r}")
            if body is None:
                continue
            self.keys(body, ("kind", "doc", "fields"), f"message {name!r}")
            kind = body.get("kind", "wire")
            if kind not in MESSAGE_KINDS:
                self.error(
                    body.key_lines.get("kind", key_line),
                    f"message {name!r}: kind must be one of {', '.join(MESSAGE_KINDS)}",
                )
                kind = "wire"
            if kind == "record":
                types[name] = "record"
            bodies.append((name, key_line, body, kind))
        envelope_names = {f.name for f in envelope}
        out: list[MessageSpec] = []
        for name, key_line, body, kind in bodies:
            fields = self.fields(body.get("fields"), body.key_lines.get("fields", key_line), name, types, enums)
            if kind == "wire":
                for f in fields:
                    if f.name in envelope_names:
                        self.error(f.line, f"field {name}.{f.name} clashes with an envelope field")
            out.append(MessageSpec(name, kind, self.doc(body, f"message {name!r}"), fields, key_line))
        return tuple(out)

    def events(
        self, value: Any, line: int, messages: tuple[MessageSpec, ...]
    ) -> tuple[EventSpec, ...]:
        node = self.mapping(value, line, "events")
        if node is None:
            return ()
        payloads = {m.name: m for m in messages}
        out: list[EventSpec] = []
        for name, body in node.items():
            key_line = node.key_lines[name]
            if not self.identifier(name, key_line, "event"):
                continue
            body = self.mapping(body, key_line, f"event {name!r}")
            if body is None:
                continue
            self.keys(body, ("payload", "doc"), f"event {name!r}")
            payload = body.get("payload")
            if payload is not None:
                message = payloads.get(payload) if isinstance(payload, str) else None
                if message is None:
                    self.error(
                        body.key_lines.get("payload", key_line),
                        f"event {name!r}: payload type {payload!r} is not a declared message",
                    )
                    payload = None
                elif message.kind == "record":
                    self.error(
                        body.key_lines.get("payload", key_line),
                        f"event {name!r}: payload {payload!r} is a record, not a wire or local message",
                    )
                    payload = None
            out.append(EventSpec(name, payload, self.doc(body, f"event {name!r}"), key_line))
        return tuple(out)

    def rows(
        self,
        value: Any,
        line: int,
        states: tuple[StateSpec, ...],
        events: tuple[EventSpec, ...],
    ) -> tuple[RowSpec, ...]:
        if not isinstance(value, _Seq):
            if value is not None:
                self.error(line, "transitions must be a list of rows")
            return ()
        state_names = [s.name for s in states]
        event_names = {e.name for e in events}
        out: list[RowSpec] = []
        for body, item_line in zip(value, value.item_lines, strict=True):
            node = self.mapping(body, item_line, "a transition row")
            if node is None:
                continue
            self.keys(node, ROW_KEYS, "a transition row")
            row_line = node.line
            trigger = node.get("trigger")
            ok = True
            if not isinstance(trigger, str):
                self.error(row_line, "transition row needs a 'trigger'")
                ok = False
            elif trigger not in event_names:
                self.error(row_line, f"unknown event {trigger!r} in trigger")
                ok = False
            source = node.get("source")
            sources: list[str] = []
            if source == "*":
                sources = list(state_names)
            elif source is None:
                self.error(row_line, "transition row needs a 'source'")
                ok = False
            else:
                for s in source if isinstance(source, list) else [source]:
                    if s not in state_names:
                        self.error(row_line, f"unknown state {s!r} in source")
                        ok = False
                    elif s in sources:
                        self.error(row_line, f"state {s!r} listed twice in source")
                    else:
                        sources.append(s)
            ignore = self.flag(node, "ignore", "transition row")
            is_error = self.flag(node, "error", "transition row")
            callbacks = {
                key: self.names(node.get(key), node.key_lines.get(key, row_line), key)
                for key in CALLBACK_KEYS
            }
            dest = node.get("dest")
            if ignore or is_error:
                if ignore and is_error:
                    self.error(row_line, "a row cannot be both 'ignore' and 'error'")
                if "dest" in node or any(callbacks.values()):
                    self.error(
                        row_line, "an 'ignore' or 'error' row takes no dest and no callbacks"
                    )
                kind = "ignore" if ignore else "error"
                dest = None
            elif "dest" not in node:
                self.error(row_line, "transition row needs a 'dest' (a state, or null for internal)")
                ok = False
                kind = "internal"
            elif dest is None:
                kind = "internal"
            elif dest not in state_names:
                self.error(row_line, f"unknown state {dest!r} in dest")
                ok = False
                kind = "transition"
            else:
                kind = "transition"
            test = node.get("test")
            if test is not None:
                if not isinstance(test, str) or not self.identifier(test, node.key_lines["test"], "test recipe"):
                    if not isinstance(test, str):
                        self.error(node.key_lines["test"], f"test must name a recipe, not {test!r}")
                    test = None
                elif kind == "error":
                    self.error(node.key_lines["test"], "an 'error' row is not tested: it takes no 'test'")
            if not ok or not isinstance(trigger, str):
                continue
            out.append(
                RowSpec(
                    trigger=trigger,
                    sources=tuple(sources),
                    dest=dest,
                    kind=kind,
                    doc=self.doc(node, "transition row"),
                    line=row_line,
                    test=test,
                    **callbacks,
                )
            )
        return tuple(out)

    def check_table(
        self, states: tuple[StateSpec, ...], events: tuple[EventSpec, ...], rows: tuple[RowSpec, ...]
    ) -> None:
        if not states or not events:
            return
        finals = {s.name for s in states if s.final}
        for row in rows:
            if row.kind == "transition":
                for source in row.sources:
                    if source in finals:
                        self.error(
                            row.line,
                            f"row leaves final state {source!r} (final states only take "
                            "internal, ignore or error rows)",
                        )
        # every pair covered; no row can be unreachable
        for state in states:
            for event in events:
                pair_rows = [r for r in rows if r.trigger == event.name and state.name in r.sources]
                if not pair_rows:
                    self.error(
                        event.line,
                        f"no row for state {state.name!r} and event {event.name!r} "
                        "(add a transition, an internal row, 'ignore' or 'error')",
                    )
                    continue
                for earlier, later in itertools.pairwise(pair_rows):
                    if not earlier.guarded:
                        self.error(
                            later.line,
                            f"row can never fire for state {state.name!r} and event "
                            f"{event.name!r}: the row at line {earlier.line} has no guard",
                        )
                        break
        # reachability from the initial state
        initial = [s for s in states if s.initial]
        if len(initial) == 1:
            reached = {initial[0].name}
            frontier = [initial[0].name]
            while frontier:
                current = frontier.pop()
                for row in rows:
                    if row.kind == "transition" and current in row.sources and row.dest not in reached:
                        assert row.dest is not None
                        reached.add(row.dest)
                        frontier.append(row.dest)
            for state in states:
                if state.name not in reached:
                    self.error(state.line, f"state {state.name!r} is unreachable from {initial[0].name!r}")
        for state in states:
            if state.final:
                continue
            exits = [
                r for r in rows
                if r.kind == "transition" and state.name in r.sources and r.dest != state.name
            ]
            if not exits:
                self.error(state.line, f"non-final state {state.name!r} has no way out")
        for event in events:
            handled = [r for r in rows if r.trigger == event.name and r.kind in ("transition", "internal")]
            if not handled:
                self.warnings.append(
                    Problem(event.line, f"event {event.name!r} is declared but never handled")
                )

    def declarations(
        self, value: Any, line: int, messages: tuple[MessageSpec, ...]
    ) -> dict[str, tuple[str | None, str, int]]:
        """The `callbacks:` section: name -> (payload or None for `none`, doc, line)."""
        node = self.mapping(value, line, "callbacks")
        if node is None:
            return {}
        payloads = {m.name for m in messages if m.kind != "record"}
        out: dict[str, tuple[str | None, str, int]] = {}
        for name, body in node.items():
            key_line = node.key_lines[name]
            if not self.identifier(name, key_line, "callback"):
                continue
            body = self.mapping(body, key_line, f"callback {name!r}")
            if body is None:
                continue
            self.keys(body, ("payload", "doc"), f"callback {name!r}")
            if "payload" not in body:
                self.error(key_line, f"callback {name!r}: say which payload it takes "
                                     f"('payload: {NO_PAYLOAD}' or a message name)")
                continue
            payload = body["payload"]
            if payload == NO_PAYLOAD:
                payload = None
            elif not isinstance(payload, str) or payload not in payloads:
                self.error(
                    body.key_lines["payload"],
                    f"callback {name!r}: payload must be '{NO_PAYLOAD}' or a wire or local message, "
                    f"not {payload!r}",
                )
                continue
            out[name] = (payload, self.doc(body, f"callback {name!r}"), key_line)
        return out

    def callbacks(
        self,
        states: tuple[StateSpec, ...],
        events: tuple[EventSpec, ...],
        rows: tuple[RowSpec, ...],
        declared: dict[str, tuple[str | None, str, int]],
    ) -> tuple[Callback, ...]:
        """Name every guard and action and decide its argument. A callback receives the
        event payload when every event that runs it carries the same payload type, and
        none when no event that runs it has a payload. Events with different payload
        types are an error unless the callback is declared under `callbacks:`
        (`payload: none` calls it with no argument)."""
        payload_of = {e.name: e.payload for e in events}
        # name -> [(payload, line, what)] in spec order
        uses: dict[str, list[tuple[str | None, int, str]]] = {}
        roles: dict[str, tuple[bool, int]] = {}

        def use(name: str, is_guard: bool, line: int, payload: str | None, what: str, named_at: int = 0) -> None:
            """`line` is the row that runs it; `named_at` where the name is written, if elsewhere."""
            uses.setdefault(name, []).append((payload, line, what))
            first = roles.setdefault(name, (is_guard, named_at or line))
            if first[0] != is_guard:
                self.error(named_at or line, f"{name!r} is used as a guard and as an action (see line {first[1]})")

        for row in rows:
            for key in CALLBACK_KEYS:
                for name in getattr(row, key):
                    use(name, key in ("conditions", "unless"), row.line, payload_of.get(row.trigger),
                        f"{key} of {row.trigger}")
        for state in states:
            entering = [r for r in rows if r.kind == "transition" and r.dest == state.name]
            leaving = [r for r in rows if r.kind == "transition" and state.name in r.sources]
            for key, runs in (("on_enter", entering), ("on_exit", leaving)):
                names = getattr(state, key)
                if names and not runs:
                    self.warnings.append(Problem(
                        state.line,
                        f"{key} of state {state.name!r} never runs: no transition row "
                        + ("enters" if key == "on_enter" else "leaves") + " it",
                    ))
                for name in names:
                    if not runs:
                        use(name, False, state.line, None, f"{key} of {state.name}")
                    for row in runs:
                        use(name, False, row.line, payload_of.get(row.trigger),
                            f"{key} of {state.name} (after {row.trigger})", state.line)
        out: list[Callback] = []
        for name, found in sorted(uses.items()):
            lines = tuple(sorted({line for _, line, _ in found}))
            if name in declared:
                payload, doc, declared_line = declared[name]
                if payload is not None:
                    for other, line, what in found:
                        if other != payload:
                            self.error(
                                line,
                                f"callback {name!r} is declared with payload {payload} (line {declared_line}) "
                                f"but {what} carries {other or 'no payload'}",
                            )
                out.append(Callback(name, payload, roles[name][0], lines, declared_line, doc))
                continue
            first_payload, first_line, first_what = found[0]
            clash = next(((p, line, what) for p, line, what in found if p != first_payload), None)
            if clash is not None and self.implicit_payloads:
                self.warnings.append(Problem(clash[1], f"callback {name!r} runs after events with different "
                                                       "payloads; taken as payload-less (the old implicit rule)"))
                first_payload = None
            elif clash is not None:
                payload, line, what = clash
                self.error(
                    line,
                    f"callback {name!r} runs after events with different payloads: {first_what} "
                    f"({first_payload or 'no payload'}) at line {first_line} and {what} "
                    f"({payload or 'no payload'}) at line {line}; declare it under 'callbacks:' as "
                    f"'{name}: {{payload: {NO_PAYLOAD}}}' to call it with no argument, or use two callbacks",
                )
            out.append(Callback(name, first_payload, roles[name][0], lines))
        for name, (_, _, declared_line) in declared.items():
            if name not in uses:
                self.error(declared_line, f"callback {name!r} is declared but no row or state uses it")
        return tuple(out)

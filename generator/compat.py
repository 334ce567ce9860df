"""`python -m generator compat OLD_SPEC [--spec NEW_SPEC]`: is the change wire-compatible?

Every difference between the two specs that matters to nodes talking to each other is
printed as `file:line: compatible|breaking: what` (the line is in the new spec, or in
the old one for something removed). Exit 0 if every difference is compatible, 1 if one
is breaking, 2 if a spec is invalid.

The wire layout (runtime/codec.py): a message is an array `[tag, fields...]` whose tag
is its position among the wire messages and whose fields are the envelope's then its
own, in spec order; records nest as arrays; enums travel as numbers. So:

- compatible: a wire message appended after the last one; a field with a default
  appended at the end of a wire message or record; a new record or enum; a new enum
  value (a node never sends it to a peer whose spec lacks it: the message is not sent);
  a renamed enum member (same number); a changed default; anything about local
  messages, events, states, rows and callbacks (behaviour of one node, never on the
  wire);
- breaking: a wire message or record removed, renamed or moved (every later tag
  shifts), a message inserted before the last old one, a field removed, renamed, moved
  or retyped, a field appended without a default, any envelope change, an enum value
  removed or renumbered, and a wire message no event handles any more.

The transport's handshake applies the same rule to the layouts of two running nodes
(runtime/layout.py); how they then interoperate is written down in
docs/spec-evolution.md.
"""

from __future__ import annotations

import sys
from pathlib import Path

from attrs import frozen

from fsm_spec import SpecError, load_spec
from fsm_spec.model import EnumSpec, FieldSpec, MessageSpec, RowSpec, Spec


@frozen
class Difference:
    path: str
    line: int
    breaking: bool
    message: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {'breaking' if self.breaking else 'compatible'}: {self.message}"


class _Diff:
    def __init__(self, old: Spec, new: Spec, old_path: str, new_path: str) -> None:
        self.old, self.new = old, new
        self.old_path, self.new_path = old_path, new_path
        self.found: list[Difference] = []

    def at_new(self, line: int, breaking: bool, message: str) -> None:
        self.found.append(Difference(self.new_path, line, breaking, message))

    def at_old(self, line: int, breaking: bool, message: str) -> None:
        self.found.append(Difference(self.old_path, line, breaking, message))

    # -- the wire ----------------------------------------------------------------------------
    def envelope(self) -> None:
        old = [(f.name, f.type.text) for f in self.old.envelope]
        new = [(f.name, f.type.text) for f in self.new.envelope]
        if old != new:
            line = self.new.envelope[0].line if self.new.envelope else 1
            self.at_new(line, True, f"the envelope changed from {_fields(old)} to {_fields(new)}: every wire "
                                    "message starts with it")

    def enums(self) -> None:
        old = {e.name: e for e in self.old.enums}
        new = {e.name: e for e in self.new.enums}
        on_wire = self._types_on_wire(self.old)
        for name, before in old.items():
            after = new.get(name)
            if after is None:
                self.at_old(before.line, name in on_wire, f"enum {name} removed")
                continue
            self._enum_values(before, after, name in on_wire or name in self._types_on_wire(self.new))
        for name, after in new.items():
            if name not in old:
                self.at_new(after.line, False, f"new enum {name}")

    def _enum_values(self, before: EnumSpec, after: EnumSpec, wire: bool) -> None:
        old = {v.value: v.name for v in before.values}
        new = {v.value: v.name for v in after.values}
        for number, name in old.items():
            if number not in new:
                renumbered = next((n for n, v in new.items() if v == name), None)
                what = f"renumbered from {number} to {renumbered}" if renumbered is not None else "removed"
                self.at_new(after.line, wire, f"{before.name}.{name} ({number}) {what}")
            elif new[number] != name:
                self.at_new(after.line, False, f"{before.name} member {number} renamed from {name} to "
                                               f"{new[number]} (the wire carries the number)")
        for number, name in new.items():
            if number not in old and name not in old.values():
                self.at_new(after.line, False, f"new value {before.name}.{name} ({number})"
                            + (": never sent to older nodes, which cannot decode it (a message carrying it is "
                               "not sent to them)" if wire else ""))

    def _types_on_wire(self, spec: Spec) -> set[str]:
        names: set[str] = set()
        for message in spec.messages:
            if message.kind == "local":
                continue
            for field in message.fields:
                ref = field.type
                while ref.element is not None:
                    ref = ref.element
                names.add(ref.text)
        return names

    def messages(self) -> None:
        old = {m.name: m for m in self.old.messages}
        new = {m.name: m for m in self.new.messages}
        old_wire = [m.name for m in self.old.messages if m.kind == "wire"]
        new_wire = [m.name for m in self.new.messages if m.kind == "wire"]
        moved_messages = _reordered(old_wire, new_wire)
        for tag, name in enumerate(old_wire):
            before = old[name]
            after = new.get(name)
            if after is None:
                hint = ""
                if tag < len(new_wire) and new_wire[tag] not in old and _same_fields(before, new[new_wire[tag]]):
                    hint = f" (renamed to {new_wire[tag]}?)"
                self.at_old(before.line, True, f"wire message {name} (tag {tag}) removed{hint}")
            elif after.kind != "wire":
                self.at_new(after.line, True, f"{name} is no longer a wire message (kind: {after.kind})")
            elif name in moved_messages:
                self.at_new(after.line, True, f"wire message {name} moved from tag {tag} to tag "
                                              f"{new_wire.index(name)} (messages reordered)")
        for tag, name in enumerate(new_wire):
            if name in old and old[name].kind == "wire":
                continue
            after = new[name]
            if tag < len(old_wire):
                self.at_new(after.line, True, f"new wire message {name} takes tag {tag}, which older nodes use "
                                              f"for {old_wire[tag]}: append new messages after {old_wire[-1]}")
            else:
                self.at_new(after.line, False, f"new wire message {name} appended (tag {tag})")
        for name, before in old.items():
            after = new.get(name)
            if before.kind == "record":
                if after is None:
                    self.at_old(before.line, True, f"record {name} removed")
                elif after.kind != "record":
                    self.at_new(after.line, True, f"{name} is no longer a record (kind: {after.kind})")
            elif before.kind == "local" and (after is None or after.kind == "local"):
                if after is None:
                    self.at_old(before.line, False, f"local message {name} removed (never on the wire)")
                elif _layout(before) != _layout(after):
                    self.at_new(after.line, False, f"local message {name} changed (never on the wire)")
            if after is not None and before.kind == after.kind and before.kind != "local":
                self.fields(before, after)
        for name, after in new.items():
            if name not in old and after.kind != "wire":
                self.at_new(after.line, False, f"new {after.kind} message {name}")

    def fields(self, before: MessageSpec, after: MessageSpec) -> None:
        old = list(before.fields)
        new = list(after.fields)
        old_names = [f.name for f in old]
        new_names = [f.name for f in new]
        renamed: set[str] = set()
        moved = _reordered(old_names, new_names)
        owner = before.name
        for position, field in enumerate(old):
            if field.name not in new_names:
                if position < len(new) and new[position].name not in old_names \
                        and new[position].type.text == field.type.text:
                    renamed.add(new[position].name)
                    self.at_new(new[position].line, True,
                                f"field {owner}.{field.name} renamed to {new[position].name}")
                else:
                    self.at_old(field.line, True, f"field {owner}.{field.name} removed")
                continue
            other = new[new_names.index(field.name)]
            if field.name in moved:
                self.at_new(other.line, True, f"field {owner}.{field.name} moved from position {position} to "
                                              f"{new_names.index(field.name)} (fields reordered)")
            elif other.type.text != field.type.text:
                self.at_new(other.line, True, f"field {owner}.{field.name} changed type from {field.type.text} to "
                                              f"{other.type.text}")
            elif _default(field) != _default(other):
                self.at_new(other.line, False, f"default of {owner}.{field.name} changed from {_default(field)} to "
                                               f"{_default(other)}")
        for position, field in enumerate(new):
            if field.name in old_names or field.name in renamed:
                continue
            if position < len(old):
                self.at_new(field.line, True, f"new field {owner}.{field.name} inserted at position {position}: "
                                              "append new fields at the end, with a default")
            elif field.default is None:
                self.at_new(field.line, True, f"new field {owner}.{field.name} appended without a default: "
                                              "messages from older nodes lack it")
            else:
                self.at_new(field.line, False, f"new field {owner}.{field.name} appended with default "
                                               f"{field.default.python}")

    def handled(self) -> None:
        old_handled = {e.payload for e in self.old.events if e.payload}
        new_handled = {e.payload for e in self.new.events if e.payload}
        for message in self.new.messages:
            if message.kind == "wire" and message.name in old_handled and message.name not in new_handled:
                self.at_new(message.line, True, f"wire message {message.name} is no longer the payload of any "
                                                "event: nodes built from the new spec cannot handle it")

    # -- behaviour (never on the wire) ---------------------------------------------------------
    def behaviour(self) -> None:
        for kind, old_items, new_items in (
            ("state", self.old.states, self.new.states),
            ("event", self.old.events, self.new.events),
        ):
            old_names = {item.name: item.line for item in old_items}
            new_names = {item.name: item.line for item in new_items}
            for name, line in new_names.items():
                if name not in old_names:
                    self.at_new(line, False, f"new {kind} {name}")
            for name, line in old_names.items():
                if name not in new_names:
                    self.at_old(line, False, f"{kind} {name} removed (behaviour of one node, not on the wire)")
        old_rows = [_row_key(r) for r in self.old.rows]
        new_rows = [_row_key(r) for r in self.new.rows]
        for row, key in zip(self.new.rows, new_rows, strict=True):
            if key not in old_rows:
                self.at_new(row.line, False, f"new row for {row.trigger} in {', '.join(row.sources)}")
        for row, key in zip(self.old.rows, old_rows, strict=True):
            if key not in new_rows:
                self.at_old(row.line, False, f"row for {row.trigger} in {', '.join(row.sources)} removed or "
                                             "changed (behaviour of one node, not on the wire)")


def _reordered(old: list[str], new: list[str]) -> set[str]:
    """Names present in both lists whose order relative to each other changed (a shift
    caused only by something removed or inserted before them is reported as that)."""
    old_common = [name for name in old if name in new]
    new_common = [name for name in new if name in old]
    return {a for a, b in zip(old_common, new_common, strict=True) if a != b}


def _fields(fields: list[tuple[str, str]]) -> str:
    return "(" + ", ".join(f"{name}: {kind}" for name, kind in fields) + ")"


def _layout(message: MessageSpec) -> list[tuple[str, str]]:
    return [(f.name, f.type.text) for f in message.fields]


def _same_fields(a: MessageSpec, b: MessageSpec) -> bool:
    return _layout(a) == _layout(b)


def _default(field: FieldSpec) -> str:
    return field.default.python if field.default is not None else "none"


def _row_key(row: RowSpec) -> tuple[object, ...]:
    return (row.trigger, row.sources, row.dest, row.kind, row.prepare, row.conditions, row.unless, row.before,
            row.after)


def classify(old: Spec, new: Spec, old_path: str, new_path: str) -> list[Difference]:
    diff = _Diff(old, new, old_path, new_path)
    diff.envelope()
    diff.enums()
    diff.messages()
    diff.handled()
    diff.behaviour()
    return diff.found


def main(old_path: Path, new_path: Path) -> int:
    specs: list[Spec] = []
    for path in (old_path, new_path):
        try:
            # the old spec may predate explicit callback payloads: they do not matter here
            specs.append(load_spec(path, implicit_payloads=path is old_path))
        except SpecError as exc:
            for line in exc.lines():
                print(line, file=sys.stderr)
            print(f"{path}: invalid spec, nothing compared", file=sys.stderr)
            return 2
    differences = classify(specs[0], specs[1], str(old_path), str(new_path))
    for difference in differences:
        print(difference)
    breaking = sum(d.breaking for d in differences)
    if breaking:
        print(f"breaking: {breaking} of {len(differences)} difference(s) break the wire", file=sys.stderr)
        return 1
    print(f"compatible: {len(differences)} difference(s), none breaks the wire", file=sys.stderr)
    return 0

"""The dispatcher: executes one event against the node record, row by row, with the
semantics of `transitions.Machine`: for each row of the (role, event) pair in order,
prepare, then conditions and unless; for the first row that passes, before, then (for a
transition row) on_exit of the role it leaves, the role change, on_enter of the role it
enters, then after. Internal rows change nothing and run no state callbacks; a reflexive
row (dest = source) runs both.

The generated table is compiled once into bound methods so that an event costs a couple
of list lookups and the callbacks themselves. A handler object that lacks a callback of
the table is refused at construction (`MissingCallbacks`), with every missing name and
the rows that use it, instead of failing the first time such a row fires.
"""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType
from typing import Any

from generated import raft_fsm
from generated.raft_fsm import Event, RaftHandlers, Role, RowKind
from runtime.errors import InvalidEvent, MissingCallbacks
from runtime.record import NodeRecord

_Call = Callable[..., Any]
_Bound = tuple[tuple[_Call, bool], ...]
# A compiled row: (kind, dest, prepare, conditions, unless, before, on_exit, on_enter,
# after, doc, line); each callback list holds (function, takes_payload) pairs. on_exit
# and on_enter are those of the source and dest roles, empty for rows without a dest.
_Compiled = tuple[RowKind, Role | None, _Bound, _Bound, _Bound, _Bound, _Bound, _Bound, _Bound, str, int]

_ROW_KEYS = ("prepare", "conditions", "unless", "before", "after")


def missing_callbacks(handlers: object, machine: ModuleType = raft_fsm) -> dict[str, list[str]]:
    """Every callback of the generated table that `handlers` does not provide (as a
    callable attribute), with where the spec uses it."""
    spec_path: str = machine.SPEC_PATH
    missing: dict[str, list[str]] = {}

    def need(name: str, where: str) -> None:
        if not callable(getattr(handlers, name, None)):
            uses = missing.setdefault(name, [])
            if where not in uses:
                uses.append(where)

    for (role, event), rows in machine.ROWS.items():
        for row in rows:
            for key in _ROW_KEYS:
                for name in getattr(row, key):
                    need(name, f"{key} of {event.name} in {role.name} ({spec_path}:{row.line})")
    for role, callbacks in machine.STATE_CALLBACKS.items():
        for key in ("on_enter", "on_exit"):
            for name in getattr(callbacks, key):
                need(name, f"{key} of {role.name} ({spec_path}:{callbacks.line})")
    return missing


class Dispatcher:
    """Runs events for one node. This is the only code that assigns `record.role`.

    `machine` is the generated module whose table is run (tests pass a module generated
    from a variant spec); its roles and events must be those of `record`."""

    __slots__ = ("_spec_path", "_table", "record")

    def __init__(self, record: NodeRecord, handlers: RaftHandlers, machine: ModuleType = raft_fsm) -> None:
        missing = missing_callbacks(handlers, machine)
        if missing:
            kind = type(handlers)
            name = kind.__qualname__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__qualname__}"
            raise MissingCallbacks(name, missing)
        self.record = record
        self._spec_path: str = machine.SPEC_PATH
        takes_payload: dict[str, bool] = dict(machine.CALLBACK_TAKES_PAYLOAD)

        def bind(names: tuple[str, ...]) -> _Bound:
            return tuple((getattr(handlers, name), takes_payload[name]) for name in names)

        roles = list(machine.Role)
        enter = {role: bind(machine.STATE_CALLBACKS[role].on_enter) for role in roles}
        leave = {role: bind(machine.STATE_CALLBACKS[role].on_exit) for role in roles}
        self._table: list[list[tuple[_Compiled, ...]]] = [
            [
                tuple(
                    (RowKind(row.kind), row.dest, bind(row.prepare), bind(row.conditions), bind(row.unless),
                     bind(row.before), leave[role] if row.dest is not None else (),
                     enter[row.dest] if row.dest is not None else (), bind(row.after), row.doc, row.line)
                    for row in machine.ROWS[(role, event)]
                )
                for event in machine.Event
            ]
            for role in roles
        ]

    def fire(self, event: Event, payload: object = None) -> int:
        """Execute `event` in the current role. Return the spec line of the row that fired
        (truthy), or 0 if no row's guards passed.

        Raises InvalidEvent for an `error` row. Exceptions from callbacks propagate; the
        role is then unchanged if they came from prepare, a guard, a before action or an
        on_exit action. One raised by an action of the row that fired carries a note
        naming that row (`raised by the row at fsm_spec/raft.yaml:LINE`).
        """
        record = self.record
        for (kind, dest, prepare, conditions, unless, before, on_exit, on_enter, after, doc,
             line) in self._table[record.role][event]:
            if kind is RowKind.ignore:
                return line
            if kind is RowKind.error:
                raise InvalidEvent(record.role.name, event.name, doc)
            for call, takes in prepare:
                call(payload) if takes else call()
            passed = True
            for call, takes in conditions:
                if not (call(payload) if takes else call()):
                    passed = False
                    break
            if passed:
                for call, takes in unless:
                    if call(payload) if takes else call():
                        passed = False
                        break
            if not passed:
                continue
            try:
                for call, takes in before:
                    call(payload) if takes else call()
                if dest is not None:
                    for call, takes in on_exit:
                        call(payload) if takes else call()
                    record.role = dest
                    for call, takes in on_enter:
                        call(payload) if takes else call()
                for call, takes in after:
                    call(payload) if takes else call()
            except Exception as exc:
                exc.add_note(f"raised by the row at {self._spec_path}:{line}")
                raise
            return line
        return 0

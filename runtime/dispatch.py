"""The dispatcher: executes one event against the node record, row by row, with the
semantics of `transitions.Machine` (prepare, then conditions and unless of each row tried
in order; before, role change, after for the first row that passes).

The generated table is compiled once into bound methods so that an event costs a couple
of list lookups and the callbacks themselves.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from generated.raft_fsm import (
    CALLBACK_TAKES_PAYLOAD,
    ROWS,
    Event,
    RaftHandlers,
    Role,
    RowKind,
)
from runtime.errors import InvalidEvent
from runtime.record import NodeRecord

_Call = Callable[..., Any]
# A compiled row: (kind, dest, prepare, conditions, unless, before, after, doc); each
# callback list holds (function, takes_payload) pairs.
_Compiled = tuple[RowKind, Role | None, tuple[tuple[_Call, bool], ...], tuple[tuple[_Call, bool], ...],
                  tuple[tuple[_Call, bool], ...], tuple[tuple[_Call, bool], ...],
                  tuple[tuple[_Call, bool], ...], str]


class Dispatcher:
    """Runs events for one node. This is the only code that assigns `record.role`."""

    __slots__ = ("_table", "record")

    def __init__(self, record: NodeRecord, handlers: RaftHandlers) -> None:
        self.record = record

        def bind(names: tuple[str, ...]) -> tuple[tuple[_Call, bool], ...]:
            return tuple((getattr(handlers, name), CALLBACK_TAKES_PAYLOAD[name]) for name in names)

        self._table: list[list[tuple[_Compiled, ...]]] = [
            [
                tuple(
                    (row.kind, row.dest, bind(row.prepare), bind(row.conditions), bind(row.unless),
                     bind(row.before), bind(row.after), row.doc)
                    for row in ROWS[(role, event)]
                )
                for event in Event
            ]
            for role in Role
        ]

    def fire(self, event: Event, payload: object = None) -> bool:
        """Execute `event` in the current role; return True if a row fired.

        Raises InvalidEvent for an `error` row. Exceptions from callbacks propagate; the
        role is then unchanged if they came from prepare, a guard or a before action.
        """
        record = self.record
        for kind, dest, prepare, conditions, unless, before, after, doc in self._table[record.role][event]:
            if kind is RowKind.ignore:
                return True
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
            for call, takes in before:
                call(payload) if takes else call()
            if dest is not None:
                record.role = dest
            for call, takes in after:
                call(payload) if takes else call()
            return True
        return False

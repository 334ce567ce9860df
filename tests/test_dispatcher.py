"""The dispatcher executes the generated table exactly as `transitions.Machine` does."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import transitions
from hypothesis import given, settings
from hypothesis import strategies as st

from generated.raft_fsm import (
    CALLBACK_TAKES_PAYLOAD,
    EVENT_PAYLOAD,
    STATES,
    TRANSITIONS,
    Event,
    Role,
)
from runtime.dispatch import Dispatcher
from runtime.errors import InvalidEvent
from runtime.record import NodeRecord

GUARDS = {
    name
    for row in TRANSITIONS
    for key in ("conditions", "unless")
    for name in row.get(key, [])  # type: ignore[attr-defined]
}
PAYLOAD = object()


class Recorder:
    """Answers every callback name of the spec: guards return the next scripted outcome,
    every call is logged with the role it saw (so a role change made too early or too
    late shows)."""

    def __init__(self, outcomes: Iterator[bool], log: list[str], check_args: bool) -> None:
        self._outcomes = outcomes
        self._log = log
        self._check_args = check_args
        self.role_of: Any = None

    def __getattr__(self, name: str) -> Any:
        if name not in CALLBACK_TAKES_PAYLOAD:
            raise AttributeError(name)

        def callback(*args: object) -> bool | None:
            if self._check_args:
                assert args == ((PAYLOAD,) if CALLBACK_TAKES_PAYLOAD[name] else ()), (name, args)
            self._log.append(f"{name}@{self.role_of()}")
            return next(self._outcomes) if name in GUARDS else None

        return callback


def run_dispatcher(events: list[Event], outcomes: list[bool]) -> tuple[list[str], list[str]]:
    log: list[str] = []
    record = NodeRecord(id="n1", peers={})
    recorder = Recorder(iter(outcomes), log, check_args=True)
    recorder.role_of = lambda: record.role.name
    dispatcher = Dispatcher(record, recorder)  # type: ignore[arg-type]
    roles = []
    for event in events:
        payload = PAYLOAD if EVENT_PAYLOAD[event] is not None else None
        try:
            dispatcher.fire(event, payload)
        except InvalidEvent:
            log.append("!error")
        roles.append(record.role.name)
    return roles, log


def run_reference(events: list[Event], outcomes: list[bool]) -> tuple[list[str], list[str]]:
    log: list[str] = []
    model = Recorder(iter(outcomes), log, check_args=False)
    model.role_of = lambda: model.state  # type: ignore[attr-defined]
    transitions.Machine(
        model=model, states=list(STATES), transitions=[dict(row) for row in TRANSITIONS],
        initial=Role.follower.name, auto_transitions=False, ignore_invalid_triggers=False,
    )
    roles = []
    for event in events:
        args = (PAYLOAD,) if EVENT_PAYLOAD[event] is not None else ()
        try:
            model.trigger(event.name, *args)  # type: ignore[attr-defined]
        except transitions.MachineError:
            log.append("!error")
        roles.append(model.state)  # type: ignore[attr-defined]
    return roles, log


@settings(max_examples=400, deadline=None)
@given(
    events=st.lists(st.sampled_from(list(Event)), max_size=60),
    outcomes=st.lists(st.booleans(), min_size=400, max_size=400),
)
def test_dispatcher_agrees_with_transitions_machine(events: list[Event], outcomes: list[bool]) -> None:
    assert run_dispatcher(events, outcomes) == run_reference(events, outcomes)


def test_error_row_names_role_and_event() -> None:
    record = NodeRecord(id="n1", peers={})
    log: list[str] = []
    recorder = Recorder(iter([True] * 10), log, check_args=True)
    recorder.role_of = lambda: record.role.name
    dispatcher = Dispatcher(record, recorder)  # type: ignore[arg-type]
    dispatcher.fire(Event.fatal_error, PAYLOAD)
    assert record.role is Role.error
    with pytest.raises(InvalidEvent, match="event 'propose' is not allowed in role 'error'"):
        dispatcher.fire(Event.propose, PAYLOAD)


def test_prepare_runs_for_each_row_tried_and_after_only_for_the_row_that_fires() -> None:
    # candidate + request_vote_reply: row 1 has prepare=record_vote, conditions=won_election
    roles, log = run_dispatcher(
        [Event.election_timeout, Event.request_vote_reply, Event.request_vote_reply],
        # terms_exhausted, is_sole_voter, pre_vote_enabled False; won_election False then True
        [False, False, False, False, True],
    )
    assert roles == ["candidate", "candidate", "leader"]
    assert log == [
        "terms_exhausted@follower", "is_sole_voter@follower", "pre_vote_enabled@follower",
        "start_election@candidate",
        "record_vote@candidate", "won_election@candidate",
        "record_vote@candidate", "won_election@candidate", "become_leader@leader",
    ]

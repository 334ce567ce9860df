"""The dispatcher executes the generated table exactly as `transitions.Machine` does.

The differential property test runs two tables: the shipped one, and one generated from
a variant of the shipped spec in which every state has on_enter / on_exit callbacks
(some shared with rows, one that takes its payload, one that never runs) and the
leader's heartbeat row is reflexive, so the order prepare → conditions → before →
on_exit → role change → on_enter → after is compared against `transitions` itself.
"""

from __future__ import annotations

import functools
import sys
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import transitions
from hypothesis import given, settings
from hypothesis import strategies as st

from fsm_spec import load_spec_with_warnings
from generated import raft_fsm
from generated.raft_fsm import Event, Role
from generator.render import render_text
from runtime.core import RaftCore
from runtime.dispatch import Dispatcher, missing_callbacks
from runtime.errors import InvalidEvent, MissingCallbacks
from runtime.record import NodeRecord

ROOT = Path(__file__).resolve().parent.parent
PAYLOAD = object()

STATE_CALLBACKS = {
    "follower": ("[enter_follower, reset_election_timer]", "[exit_follower, exit_any]"),
    "pre_candidate": ("enter_pre_candidate", "[exit_pre_candidate, exit_any]"),
    "candidate": ("enter_candidate", "[exit_candidate, exit_any]"),
    "leader": ("enter_leader", "[step_down, exit_any]"),
    "error": ("enter_error", "exit_error"),
}
PAYLOAD_LESS = ("enter_follower", "reset_election_timer", "exit_follower", "exit_any", "exit_pre_candidate",
                "enter_candidate", "exit_candidate", "enter_leader", "step_down")


def variant_spec_text() -> str:
    text = (ROOT / "fsm_spec" / "raft.yaml").read_text()
    for state, (on_enter, on_exit) in STATE_CALLBACKS.items():
        head = f"\n  {state}:\n"
        assert text.count(head) == 1, state
        text = text.replace(head, f"{head}    on_enter: {on_enter}\n    on_exit: {on_exit}\n")
    declarations = "".join(f"  {name}: {{payload: none}}\n" for name in PAYLOAD_LESS
                           if f"\n  {name}: {{payload: none" not in text)
    declarations += "  enter_error: {payload: FatalError}\n"
    text = text.replace("\ncallbacks:\n", "\ncallbacks:\n" + declarations)
    reflexive = "{trigger: heartbeat_timeout, source: leader, dest: null, after: broadcast_heartbeat}"
    assert reflexive in text
    return text.replace(reflexive, reflexive.replace("dest: null", "dest: leader"))


@functools.cache
def variant_machine() -> types.ModuleType:
    """The generated module of the variant spec, imported from memory."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "raft.yaml"
        path.write_text(variant_spec_text())
        spec, warnings = load_spec_with_warnings(path)
    assert any("on_exit of state 'error' never runs" in w for w in warnings), warnings
    source = render_text(spec)["raft_fsm.py"]
    module = types.ModuleType("variant_raft_fsm")
    sys.modules[module.__name__] = module
    exec(compile(source, "<variant raft_fsm.py>", "exec"), module.__dict__)
    return module


MACHINES = {"shipped": lambda: raft_fsm, "variant": variant_machine}


class Recorder:
    """Answers every callback name of the spec: guards return the next scripted outcome,
    every call is logged with the role it saw (so a role change made too early or too
    late shows)."""

    def __init__(self, machine: types.ModuleType, outcomes: Iterator[bool], log: list[str], check_args: bool) -> None:
        self._takes = machine.CALLBACK_TAKES_PAYLOAD
        self._guards = {
            name for row in machine.TRANSITIONS for key in ("conditions", "unless") for name in row.get(key, [])
        }
        self._outcomes = outcomes
        self._log = log
        self._check_args = check_args
        self.role_of: Any = None

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_") or name not in self._takes:
            raise AttributeError(name)

        def callback(*args: object) -> bool | None:
            if self._check_args:
                assert args == ((PAYLOAD,) if self._takes[name] else ()), (name, args)
            self._log.append(f"{name}@{self.role_of()}")
            return next(self._outcomes) if name in self._guards else None

        return callback


def run_dispatcher(machine: types.ModuleType, events: list[Event], outcomes: list[bool]) -> tuple[list[str], list[str]]:
    log: list[str] = []
    record = NodeRecord(id="n1", peers={})
    recorder = Recorder(machine, iter(outcomes), log, check_args=True)
    recorder.role_of = lambda: record.role.name
    dispatcher = Dispatcher(record, recorder, machine)  # type: ignore[arg-type]
    roles = []
    for event in events:
        payload = PAYLOAD if machine.EVENT_PAYLOAD[machine.Event(event)] is not None else None
        try:
            dispatcher.fire(event, payload)
        except InvalidEvent:
            log.append("!error")
        roles.append(record.role.name)
    return roles, log


def run_reference(machine: types.ModuleType, events: list[Event], outcomes: list[bool]) -> tuple[list[str], list[str]]:
    log: list[str] = []
    model = Recorder(machine, iter(outcomes), log, check_args=False)
    model.role_of = lambda: model.state  # type: ignore[attr-defined]
    transitions.Machine(
        model=model,
        states=[{key: list(value) if isinstance(value, list) else value for key, value in state.items()}
                for state in machine.STATE_DEFINITIONS],
        transitions=[dict(row) for row in machine.TRANSITIONS],
        initial=Role.follower.name, auto_transitions=False, ignore_invalid_triggers=False,
    )
    roles = []
    for event in events:
        args = (PAYLOAD,) if machine.EVENT_PAYLOAD[machine.Event(event)] is not None else ()
        try:
            model.trigger(event.name, *args)  # type: ignore[attr-defined]
        except transitions.MachineError:
            log.append("!error")
        roles.append(model.state)  # type: ignore[attr-defined]
    return roles, log


@pytest.mark.parametrize("table", sorted(MACHINES))
@settings(max_examples=300, deadline=None)
@given(
    events=st.lists(st.sampled_from(list(Event)), max_size=60),
    outcomes=st.lists(st.booleans(), min_size=400, max_size=400),
)
def test_dispatcher_agrees_with_transitions_machine(table: str, events: list[Event], outcomes: list[bool]) -> None:
    machine = MACHINES[table]()
    assert run_dispatcher(machine, events, outcomes) == run_reference(machine, events, outcomes)


def test_the_variant_table_has_state_callbacks_and_payload_rules() -> None:
    machine = variant_machine()
    assert machine.STATE_CALLBACKS[machine.Role.leader].on_exit == ("step_down", "exit_any")
    assert machine.CALLBACK_TAKES_PAYLOAD["enter_error"] is True  # only fatal_error (FatalError) enters error
    assert machine.CALLBACK_TAKES_PAYLOAD["exit_any"] is False  # declared payload: none
    assert machine.CALLBACK_TAKES_PAYLOAD["exit_error"] is False  # never runs
    assert "def enter_error(self, message: FatalError, /) -> None: ..." in render_text(
        load_spec_with_warnings_from_text(variant_spec_text()))["raft_fsm.py"]


def load_spec_with_warnings_from_text(text: str) -> Any:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "raft.yaml"
        path.write_text(text)
        return load_spec_with_warnings(path)[0]


def test_state_callbacks_run_in_transitions_order() -> None:
    machine = variant_machine()
    roles, log = run_dispatcher(
        machine,
        # cannot_campaign, terms_exhausted, is_sole_voter, pre_vote_enabled False -> candidate;
        # won_election True -> leader; heartbeat (reflexive leader -> leader); fatal_error -> error
        [Event.election_timeout, Event.request_vote_reply, Event.heartbeat_timeout, Event.fatal_error],
        [False, False, False, False, True],
    )
    assert roles == ["candidate", "leader", "leader", "error"]
    assert log == [
        "cannot_campaign@follower", "terms_exhausted@follower", "is_sole_voter@follower", "pre_vote_enabled@follower",
        "exit_follower@follower", "exit_any@follower", "enter_candidate@candidate", "start_election@candidate",
        "record_vote@candidate", "won_election@candidate",
        "exit_candidate@candidate", "exit_any@candidate", "enter_leader@leader", "become_leader@leader",
        "step_down@leader", "exit_any@leader", "enter_leader@leader", "broadcast_heartbeat@leader",
        "step_down@leader", "exit_any@leader", "enter_error@error", "halt@error",
    ]
    # internal rows run no state callbacks
    _, log = run_dispatcher(machine, [Event.request_vote], [False])
    assert log == ["can_grant_vote@follower", "reject_vote@follower"]


def test_fire_returns_the_line_of_the_row_that_fired() -> None:
    record = NodeRecord(id="n1", peers={})
    recorder = Recorder(raft_fsm, iter([False, True]), [], check_args=True)
    recorder.role_of = lambda: record.role.name
    dispatcher = Dispatcher(record, recorder)  # type: ignore[arg-type]
    (row,) = [r for r in raft_fsm.ROWS[(Role.follower, Event.heartbeat_timeout)]]
    assert dispatcher.fire(Event.heartbeat_timeout) == row.line  # an ignore row
    rows = raft_fsm.ROWS[(Role.follower, Event.request_vote)]
    assert dispatcher.fire(Event.request_vote, PAYLOAD) == rows[1].line  # can_grant_vote False
    assert dispatcher.fire(Event.request_vote, PAYLOAD) == rows[0].line  # can_grant_vote True


def test_error_row_names_role_and_event() -> None:
    record = NodeRecord(id="n1", peers={})
    log: list[str] = []
    recorder = Recorder(raft_fsm, iter([True] * 10), log, check_args=True)
    recorder.role_of = lambda: record.role.name
    dispatcher = Dispatcher(record, recorder)  # type: ignore[arg-type]
    dispatcher.fire(Event.fatal_error, PAYLOAD)
    assert record.role is Role.error
    with pytest.raises(InvalidEvent, match="event 'propose' is not allowed in role 'error'"):
        dispatcher.fire(Event.propose, PAYLOAD)


def test_prepare_runs_for_each_row_tried_and_after_only_for_the_row_that_fires() -> None:
    # candidate + request_vote_reply: row 1 has prepare=record_vote, conditions=won_election
    roles, log = run_dispatcher(
        raft_fsm,
        [Event.election_timeout, Event.request_vote_reply, Event.request_vote_reply],
        # cannot_campaign, terms_exhausted, is_sole_voter, pre_vote_enabled False; won_election False then True
        [False, False, False, False, False, True],
    )
    assert roles == ["candidate", "candidate", "leader"]
    assert log == [
        "cannot_campaign@follower", "terms_exhausted@follower", "is_sole_voter@follower", "pre_vote_enabled@follower",
        "start_election@candidate",
        "record_vote@candidate", "won_election@candidate",
        "record_vote@candidate", "won_election@candidate", "become_leader@leader",
    ]


# -- incomplete handlers are refused at construction ---------------------------------------
def test_a_handler_object_without_callbacks_is_refused_with_every_missing_name() -> None:
    with pytest.raises(MissingCallbacks) as info:
        Dispatcher(NodeRecord(id="n1", peers={}), object())  # type: ignore[arg-type]
    expected = set(raft_fsm.CALLBACK_TAKES_PAYLOAD)
    assert set(info.value.missing) == expected
    assert f"object lacks {len(expected)} callback(s) the spec uses" in str(info.value)


def test_a_core_built_from_an_incomplete_handler_class_fails_at_construction() -> None:
    from runtime.consensus import Consensus

    class Incomplete(Consensus):
        broadcast_heartbeat = None  # type: ignore[assignment]
        step_down = 7  # type: ignore[assignment]

    (row,) = raft_fsm.ROWS[(Role.leader, Event.heartbeat_timeout)]
    with pytest.raises(MissingCallbacks) as info:
        RaftCore("n1", ("n1", "n2", "n3"), handlers=Incomplete)
    message = str(info.value)
    assert message.splitlines() == [
        "tests.test_dispatcher.test_a_core_built_from_an_incomplete_handler_class_fails_at_construction.<locals>"
        ".Incomplete lacks 2 callback(s) the spec uses (`python -m generator scaffold` prints stubs):",
        f"  broadcast_heartbeat: after of heartbeat_timeout in leader (fsm_spec/raft.yaml:{row.line})",
        message.splitlines()[2],
    ]
    assert message.splitlines()[2].startswith("  step_down: after of election_timeout in leader (fsm_spec/raft.yaml:")


def test_missing_state_callbacks_are_named_with_their_state() -> None:
    machine = variant_machine()

    class OnlyRows:
        def __getattr__(self, name: str) -> Any:
            if name in raft_fsm.CALLBACK_TAKES_PAYLOAD:
                return lambda *args: False
            raise AttributeError(name)

    missing = missing_callbacks(OnlyRows(), machine)
    assert "exit_any" in missing and "step_down" not in missing
    assert missing["enter_error"] == [f"on_enter of error ({machine.SPEC_PATH}:{machine.STATE_CALLBACKS[Role.error].line})"]

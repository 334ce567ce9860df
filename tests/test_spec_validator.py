"""Every validator rule, each shown failing on a malformed spec with `file:line: reason`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from fsm_spec import SpecError, load_spec, load_spec_with_warnings

BASE = """\
states:
  idle: {initial: true, doc: Waiting.}
  busy: {doc: Working.}
  dead: {final: true, doc: Gone.}
messages:
  Job:
    kind: local
    doc: Some work.
    fields:
      size: {type: int, doc: How much.}
events:
  start: {payload: Job, doc: Work arrives.}
  finish: {doc: Work is done.}
  crash: {doc: Fatal.}
transitions:
  - {trigger: start, source: idle, dest: busy, conditions: fits, after: begin}
  - {trigger: start, source: idle, dest: null, after: refuse}
  - {trigger: start, source: busy, ignore: true}
  - {trigger: finish, source: busy, dest: idle}
  - {trigger: finish, source: idle, error: true}
  - {trigger: crash, source: [idle, busy], dest: dead}
  - {trigger: start, source: dead, ignore: true}
  - {trigger: finish, source: dead, ignore: true}
  - {trigger: crash, source: dead, ignore: true}
"""


def problems(tmp_path: Path, text: str) -> list[str]:
    path = tmp_path / "spec.yaml"
    path.write_text(text)
    with pytest.raises(SpecError) as info:
        load_spec(path)
    return info.value.lines()


def expect(tmp_path: Path, text: str, line: int, fragment: str) -> None:
    lines = problems(tmp_path, text)
    wanted = f"{tmp_path / 'spec.yaml'}:{line}: "
    assert any(entry.startswith(wanted) and fragment in entry for entry in lines), lines


def test_the_base_spec_is_valid(tmp_path: Path) -> None:
    path = tmp_path / "spec.yaml"
    path.write_text(BASE)
    spec = load_spec(path)
    assert [s.name for s in spec.states] == ["idle", "busy", "dead"]


def test_the_shipped_spec_is_valid() -> None:
    spec, warnings = load_spec_with_warnings()
    assert spec.initial.name == "follower"
    assert warnings == []


def test_yaml_syntax_error_names_the_line(tmp_path: Path) -> None:
    expect(tmp_path, BASE.replace("busy: {doc: Working.}", "busy: {doc: Working."), 4, "YAML syntax error")


def test_unknown_state_in_source_and_dest(tmp_path: Path) -> None:
    text = BASE.replace("source: busy, dest: idle}", "source: bussy, dest: idel}")
    lines = problems(tmp_path, text)
    assert any(":19: unknown state 'bussy' in source" in entry for entry in lines)
    text = BASE.replace("source: busy, dest: idle}", "source: busy, dest: idel}")
    expect(tmp_path, text, 19, "unknown state 'idel' in dest")


def test_unknown_event_in_trigger(tmp_path: Path) -> None:
    expect(tmp_path, BASE.replace("trigger: finish, source: busy", "trigger: finnish, source: busy"),
           19, "unknown event 'finnish'")


def test_unknown_field_type(tmp_path: Path) -> None:
    expect(tmp_path, BASE.replace("{type: int, doc: How much.}", "{type: integer, doc: How much.}"),
           10, "unknown type 'integer'")


def test_unknown_key(tmp_path: Path) -> None:
    expect(tmp_path, BASE.replace("busy: {doc: Working.}", "busy: {doc: Working., colour: red}"),
           3, "unknown key 'colour'")


def test_duplicate_state(tmp_path: Path) -> None:
    expect(tmp_path, BASE.replace("  busy: {doc: Working.}\n", "  busy: {doc: Working.}\n  busy: {doc: Again.}\n"),
           4, "duplicate key 'busy'")


def test_duplicate_event_and_field(tmp_path: Path) -> None:
    text = BASE.replace("  crash: {doc: Fatal.}\n", "  crash: {doc: Fatal.}\n  crash: {doc: Twice.}\n")
    expect(tmp_path, text, 15, "duplicate key 'crash'")
    text = BASE.replace("      size: {type: int, doc: How much.}\n",
                        "      size: {type: int, doc: How much.}\n      size: {type: int, doc: Again.}\n")
    expect(tmp_path, text, 11, "duplicate key 'size'")


def test_name_that_is_not_an_identifier(tmp_path: Path) -> None:
    expect(tmp_path, BASE.replace("  finish: {doc: Work is done.}", "  finish-now: {doc: Work is done.}"),
           13, "'finish-now' is not a Python identifier")


def test_name_that_is_a_python_keyword(tmp_path: Path) -> None:
    expect(tmp_path, BASE.replace("      size: {type: int", "      class: {type: int"),
           10, "'class' clashes with a Python keyword")


def test_no_initial_state(tmp_path: Path) -> None:
    expect(tmp_path, BASE.replace("idle: {initial: true, doc: Waiting.}", "idle: {doc: Waiting.}"),
           1, "exactly one state must be initial, found 0")


def test_two_initial_states(tmp_path: Path) -> None:
    expect(tmp_path, BASE.replace("busy: {doc: Working.}", "busy: {initial: true, doc: Working.}"),
           3, "exactly one state must be initial, found 2")


def test_unreachable_state(tmp_path: Path) -> None:
    text = BASE.replace("  dead: {final: true, doc: Gone.}\n",
                        "  dead: {final: true, doc: Gone.}\n  limbo: {final: true, doc: Nowhere.}\n")
    text = text.replace("source: dead, ignore: true}", "source: [dead, limbo], ignore: true}")
    expect(tmp_path, text, 5, "state 'limbo' is unreachable from 'idle'")


def test_non_final_state_without_a_way_out(tmp_path: Path) -> None:
    text = BASE.replace("  - {trigger: finish, source: busy, dest: idle}\n",
                        "  - {trigger: finish, source: busy, dest: null}\n")
    text = text.replace("trigger: crash, source: [idle, busy], dest: dead}",
                        "trigger: crash, source: idle, dest: dead}\n  - {trigger: crash, source: busy, ignore: true}")
    expect(tmp_path, text, 3, "non-final state 'busy' has no way out")


def test_row_leaving_a_final_state(tmp_path: Path) -> None:
    text = BASE.replace("  - {trigger: start, source: dead, ignore: true}\n",
                        "  - {trigger: start, source: dead, dest: idle}\n")
    expect(tmp_path, text, 22, "row leaves final state 'dead'")


def test_pair_without_a_row(tmp_path: Path) -> None:
    expect(tmp_path, BASE.replace("  - {trigger: start, source: busy, ignore: true}\n", ""),
           12, "no row for state 'busy' and event 'start'")


def test_row_after_an_unguarded_row_can_never_fire(tmp_path: Path) -> None:
    text = BASE.replace("  - {trigger: finish, source: busy, dest: idle}\n",
                        "  - {trigger: finish, source: busy, dest: idle}\n"
                        "  - {trigger: finish, source: busy, dest: dead}\n")
    expect(tmp_path, text, 20, "row can never fire for state 'busy' and event 'finish'")


def test_two_unguarded_rows(tmp_path: Path) -> None:
    text = BASE.replace("dest: busy, conditions: fits, after: begin}", "dest: busy, after: begin}")
    expect(tmp_path, text, 17, "the row at line 16 has no guard")


def test_payload_that_is_not_a_declared_message(tmp_path: Path) -> None:
    expect(tmp_path, BASE.replace("start: {payload: Job,", "start: {payload: Task,"),
           12, "payload type 'Task' is not a declared message")


def test_event_never_handled_is_a_warning(tmp_path: Path) -> None:
    text = BASE.replace("  crash: {doc: Fatal.}\n", "  crash: {doc: Fatal.}\n  poke: {doc: Unused.}\n")
    text += "  - {trigger: poke, source: '*', ignore: true}\n"
    path = tmp_path / "spec.yaml"
    path.write_text(text)
    _, warnings = load_spec_with_warnings(path)
    assert warnings == [f"{path}:15: warning: event 'poke' is declared but never handled"]


def test_all_problems_are_reported_in_one_run(tmp_path: Path) -> None:
    text = BASE.replace("{type: int, doc: How much.}", "{type: integer, doc: How much.}")
    text = text.replace("trigger: finish, source: busy", "trigger: finnish, source: busy")
    text = text.replace("busy: {doc: Working.}", "busy: {doc: Working., colour: red}")
    lines = problems(tmp_path, text)
    assert len(lines) >= 3
    assert [int(entry.split(":")[1]) for entry in lines] == sorted(int(e.split(":")[1]) for e in lines)


def test_cli_exits_2_and_prints_file_line(tmp_path: Path) -> None:
    path = tmp_path / "spec.yaml"
    path.write_text(BASE.replace("busy: {doc: Working.}", "busy: {doc: Working., colour: red}"))
    result = subprocess.run(
        [sys.executable, "-m", "generator", "--spec", str(path), "--out", str(tmp_path / "out")],
        capture_output=True, text=True, check=False,
    )
    assert result.returncode == 2
    assert f"{path}:3: unknown key 'colour'" in result.stderr
    assert not (tmp_path / "out").exists()


# -- callback payloads ---------------------------------------------------------------------
MIXED = BASE.replace("  - {trigger: finish, source: busy, dest: idle}\n",
                     "  - {trigger: finish, source: busy, dest: idle, after: begin}\n")


def test_a_callback_run_after_events_with_different_payloads_is_an_error(tmp_path: Path) -> None:
    expect(tmp_path, MIXED, 19,
           "callback 'begin' runs after events with different payloads: after of start (Job) at line 16 and "
           "after of finish (no payload) at line 19; declare it under 'callbacks:' as 'begin: {payload: none}' "
           "to call it with no argument, or use two callbacks")


def test_a_payload_less_declaration_makes_it_take_no_argument(tmp_path: Path) -> None:
    path = tmp_path / "spec.yaml"
    path.write_text(MIXED.replace("transitions:\n", "callbacks:\n  begin: {payload: none, doc: Starts.}\ntransitions:\n"))
    spec = load_spec(path)
    assert (spec.callback("begin").payload, spec.callback("begin").declared, spec.callback("begin").doc) == \
        (None, 16, "Starts.")
    assert spec.callback("refuse").payload == "Job"  # undeclared, one payload type: it gets the payload


def test_a_declared_payload_type_must_match_every_use(tmp_path: Path) -> None:
    text = MIXED.replace("transitions:\n", "callbacks:\n  begin: {payload: Job}\ntransitions:\n")
    expect(tmp_path, text, 21, "callback 'begin' is declared with payload Job (line 16) but after of finish carries "
                               "no payload")


@pytest.mark.parametrize(("declaration", "fragment"), [
    ("begin: {doc: Starts.}", "callback 'begin': say which payload it takes ('payload: none' or a message name)"),
    ("begin: {payload: Task}", "callback 'begin': payload must be 'none' or a wire or local message, not 'Task'"),
    ("begin: {payload: none, colour: red}", "unknown key 'colour' in callback 'begin'"),
    ("unused: {payload: none}", "callback 'unused' is declared but no row or state uses it"),
])
def test_callbacks_section_errors(tmp_path: Path, declaration: str, fragment: str) -> None:
    text = BASE.replace("transitions:\n", f"callbacks:\n  {declaration}\ntransitions:\n")
    expect(tmp_path, text, 16, fragment)


# -- on_enter / on_exit ----------------------------------------------------------------------
def test_state_callbacks_get_the_payload_of_the_rows_that_run_them(tmp_path: Path) -> None:
    path = tmp_path / "spec.yaml"
    path.write_text(BASE.replace("busy: {doc: Working.}", "busy: {on_enter: [greet, log], on_exit: log, doc: Working.}")
                    .replace("idle: {initial: true, doc: Waiting.}", "idle: {initial: true, on_enter: rest, doc: W.}")
                    .replace("transitions:\n", "callbacks:\n  log: {payload: none}\ntransitions:\n"))
    spec, warnings = load_spec_with_warnings(path)
    assert spec.state("busy").on_enter == ("greet", "log") and spec.state("busy").on_exit == ("log",)
    assert spec.callback("greet").payload == "Job"  # only `start` (Job) enters busy
    assert spec.callback("rest").payload is None  # only `finish` enters idle
    assert spec.callback("log").payload is None and not spec.callback("log").is_guard
    assert warnings == []


def test_state_callback_with_mixed_payloads_names_the_rows(tmp_path: Path) -> None:
    # idle is left by `start` (Job) at line 16 and by `crash` (no payload) at line 21
    text = BASE.replace("idle: {initial: true, doc: Waiting.}", "idle: {initial: true, on_exit: leave, doc: W.}")
    expect(tmp_path, text, 21, "callback 'leave' runs after events with different payloads: on_exit of idle (after "
                               "start) (Job) at line 16 and on_exit of idle (after crash) (no payload) at line 21")


def test_state_callback_that_never_runs_is_a_warning(tmp_path: Path) -> None:
    path = tmp_path / "spec.yaml"
    path.write_text(BASE.replace("dead: {final: true, doc: Gone.}", "dead: {final: true, on_exit: bye, doc: Gone.}"))
    _, warnings = load_spec_with_warnings(path)
    assert warnings == [f"{path}:4: warning: on_exit of state 'dead' never runs: no transition row leaves it"]


def test_a_guard_cannot_be_a_state_callback(tmp_path: Path) -> None:
    text = BASE.replace("busy: {doc: Working.}", "busy: {on_enter: fits, doc: Working.}")
    expect(tmp_path, text, 3, "'fits' is used as a guard and as an action (see line 16)")


def test_state_callback_names_are_checked(tmp_path: Path) -> None:
    expect(tmp_path, BASE.replace("busy: {doc: Working.}", "busy: {on_exit: 'not-a-name', doc: Working.}"),
           3, "on_exit name 'not-a-name' is not a Python identifier")


# -- field defaults ----------------------------------------------------------------------------
FIELD = "      size: {type: int, doc: How much.}\n"


def with_fields(*fields: str) -> str:
    return BASE.replace("kind: local\n", "kind: wire\n").replace(FIELD, FIELD + "".join(f"      {f}\n" for f in fields))


def test_defaults_of_every_type(tmp_path: Path) -> None:
    path = tmp_path / "spec.yaml"
    path.write_text(BASE.replace(FIELD, FIELD + "".join(f"      {f}\n" for f in (
        "a: {type: int, default: 3}", "b: {type: bool, default: false}", "c: {type: str, default: hi}",
        "d: {type: bytes, default: ''}", "e: {type: float, default: 1}", "f: {type: 'int?', default: null}",
        "g: {type: 'list[int]', default: [1, 2]}", "h: {type: 'list[str]', default: []}",
        "i: {type: 'str?', default: x}",
    ))))
    spec = load_spec(path)
    defaults = {f.name: f.default.python for f in spec.message("Job").fields if f.default}
    assert defaults == {"a": "3", "b": "False", "c": "'hi'", "d": "b''", "e": "1.0", "f": "None",
                        "g": "(1, 2,)", "h": "()", "i": "'x'"}


@pytest.mark.parametrize(("field", "fragment"), [
    ("n: {type: int, default: x}", "field Job.n: default 'x' does not fit the type int"),
    ("n: {type: int, default: true}", "field Job.n: default True does not fit the type int"),
    ("n: {type: int, default: null}", "field Job.n: default null needs an optional type (int?)"),
    ("n: {type: 'list[int]', default: [1, x]}", "field Job.n: default 'x' does not fit the type int"),
    ("n: {type: 'list[int]', default: 1}", "field Job.n: default 1 does not fit the type list[int]"),
])
def test_a_default_must_fit_the_type(tmp_path: Path, field: str, fragment: str) -> None:
    expect(tmp_path, BASE.replace(FIELD, FIELD + f"      {field}\n"), 11, fragment)


def test_enum_and_record_defaults(tmp_path: Path) -> None:
    text = BASE.replace("messages:\n", "enums:\n  Colour:\n    values:\n      red: {value: 1}\n      blue: {value: 2}\n"
                                       "messages:\n  Part:\n    kind: record\n    fields:\n      x: {type: int}\n")
    good = text.replace(FIELD, FIELD + "      c: {type: Colour, default: blue}\n      p: {type: 'Part?', default: null}\n")
    path = tmp_path / "spec.yaml"
    path.write_text(good)
    assert [f.default.python for f in load_spec(path).message("Job").fields if f.default] == ["Colour.blue", "None"]
    expect(tmp_path, text.replace(FIELD, FIELD + "      c: {type: Colour, default: green}\n"), 20,
           "field Job.c: default 'green' is not a member of Colour (red, blue)")
    expect(tmp_path, text.replace(FIELD, FIELD + "      p: {type: Part, default: {x: 1}}\n"), 20,
           "field Job.p: a record field takes no default (make it optional, Part?, with default null)")


def test_fields_with_defaults_come_last(tmp_path: Path) -> None:
    text = with_fields("a: {type: int, default: 0}", "b: {type: int}")
    expect(tmp_path, text, 12, "field Job.b has no default but follows Job.a (line 11), which has one: fields with "
                               "defaults come last")


def test_envelope_fields_take_no_default(tmp_path: Path) -> None:
    text = BASE.replace("messages:\n", "envelope:\n  fields:\n    term: {type: int, default: 0}\nmessages:\n")
    expect(tmp_path, text, 7, "field envelope.term: envelope fields take no default")


# -- row test recipes ---------------------------------------------------------------------------
def test_row_test_key(tmp_path: Path) -> None:
    path = tmp_path / "spec.yaml"
    path.write_text(BASE.replace("source: busy, dest: idle}", "source: busy, dest: idle, test: finish_now}"))
    assert next(r for r in load_spec(path).rows if r.line == 19).test == "finish_now"
    expect(tmp_path, BASE.replace("source: busy, dest: idle}", "source: busy, dest: idle, test: 3}"),
           19, "test must name a recipe, not 3")
    expect(tmp_path, BASE.replace("source: idle, error: true}", "source: idle, error: true, test: x}"),
           20, "an 'error' row is not tested: it takes no 'test'")

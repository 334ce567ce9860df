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

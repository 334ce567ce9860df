"""`python -m generator compat`: every kind of difference, classified with its file:line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from fsm_spec import load_spec
from generator.compat import classify

ROOT = Path(__file__).resolve().parent.parent

OLD = """\
states:
  idle: {initial: true, doc: Waiting.}
  busy: {doc: Working.}
enums:
  Colour:
    values:
      red: {value: 1}
      blue: {value: 2}
envelope:
  fields:
    sender: {type: str}
messages:
  Part:
    kind: record
    fields:
      size: {type: int}
  Ping:
    fields:
      seq: {type: int}
      colour: {type: Colour}
  Pong:
    fields:
      seq: {type: int}
      parts: {type: 'list[Part]'}
  Note:
    kind: local
    fields:
      text: {type: str}
events:
  ping: {payload: Ping}
  pong: {payload: Pong}
  note: {payload: Note}
transitions:
  - {trigger: ping, source: idle, dest: busy}
  - {trigger: ping, source: busy, ignore: true}
  - {trigger: pong, source: busy, dest: idle}
  - {trigger: pong, source: idle, ignore: true}
  - {trigger: note, source: [idle, busy], ignore: true}
"""


def differences(tmp_path: Path, new: str, old: str = OLD) -> list[str]:
    (tmp_path / "old.yaml").write_text(old)
    (tmp_path / "new.yaml").write_text(new)
    found = classify(load_spec(tmp_path / "old.yaml"), load_spec(tmp_path / "new.yaml"), "old.yaml", "new.yaml")
    return [str(d) for d in found]


def edit(*pairs: tuple[str, str]) -> str:
    text = OLD
    for old, new in pairs:
        assert text.count(old) == 1, old
        text = text.replace(old, new)
    return text


PONG_END = "      parts: {type: 'list[Part]'}\n"


@pytest.mark.parametrize(("new", "expected"), [
    (OLD, []),
    # a wire message appended after the last one
    (edit(("  Note:\n", "  Pang:\n    fields:\n      seq: {type: int}\n  Note:\n")),
     ["new.yaml:25: compatible: new wire message Pang appended (tag 2)"]),
    # a field with a default appended
    (edit((PONG_END, PONG_END + "      late: {type: bool, default: false}\n")),
     ["new.yaml:25: compatible: new field Pong.late appended with default False"]),
    (edit(("      size: {type: int}\n", "      size: {type: int}\n      weight: {type: 'int?', default: null}\n")),
     ["new.yaml:17: compatible: new field Part.weight appended with default None"]),
    # behaviour: a new state, event and row; a new record and enum; a renamed enum member
    (edit(("  busy: {doc: Working.}\n", "  busy: {doc: Working.}\n  resting: {doc: New.}\n"),
          ("  note: {payload: Note}\n", "  note: {payload: Note}\n  nap: {doc: Rest.}\n"),
          ("  - {trigger: note, source: [idle, busy], ignore: true}\n",
           "  - {trigger: note, source: [idle, busy, resting], ignore: true}\n"
           "  - {trigger: nap, source: idle, dest: resting}\n  - {trigger: nap, source: [busy, resting], ignore: true}\n"
           "  - {trigger: ping, source: resting, dest: busy}\n  - {trigger: pong, source: resting, ignore: true}\n")),
     ["new.yaml:4: compatible: new state resting",
      "new.yaml:34: compatible: new event nap",
      "new.yaml:40: compatible: new row for note in idle, busy, resting",
      "new.yaml:41: compatible: new row for nap in idle",
      "new.yaml:42: compatible: new row for nap in busy, resting",
      "new.yaml:43: compatible: new row for ping in resting",
      "new.yaml:44: compatible: new row for pong in resting",
      "old.yaml:38: compatible: row for note in idle, busy removed or changed (behaviour of one node, not on the "
      "wire)"]),
    (edit(("      blue: {value: 2}\n", "      azure: {value: 2}\n")),
     ["new.yaml:5: compatible: Colour member 2 renamed from blue to azure (the wire carries the number)"]),
    # a new enum value: older peers never receive a message carrying it
    (edit(("      blue: {value: 2}\n", "      blue: {value: 2}\n      green: {value: 3}\n")),
     ["new.yaml:5: compatible: new value Colour.green (3): never sent to older nodes, which cannot decode it (a "
      "message carrying it is not sent to them)"]),
    (edit(("  Note:\n    kind: local\n    fields:\n      text: {type: str}\n",
           "  Note:\n    kind: local\n    fields:\n      text: {type: str}\n      more: {type: int}\n")),
     ["new.yaml:25: compatible: local message Note changed (never on the wire)"]),
])
def test_compatible_changes(tmp_path: Path, new: str, expected: list[str]) -> None:
    assert differences(tmp_path, new) == expected


@pytest.mark.parametrize(("new", "expected"), [
    # removed field, renamed field, changed type, reordered fields
    (edit(("      seq: {type: int}\n      colour", "      colour")),
     ["old.yaml:19: breaking: field Ping.seq removed"]),
    (edit(("      seq: {type: int}\n      colour", "      number: {type: int}\n      colour")),
     ["new.yaml:19: breaking: field Ping.seq renamed to number"]),
    (edit(("      seq: {type: int}\n      colour", "      seq: {type: 'int?'}\n      colour")),
     ["new.yaml:19: breaking: field Ping.seq changed type from int to int?"]),
    (edit(("      seq: {type: int}\n      colour: {type: Colour}\n", "      colour: {type: Colour}\n      seq: {type: int}\n")),
     ["new.yaml:20: breaking: field Ping.seq moved from position 0 to 1 (fields reordered)",
      "new.yaml:19: breaking: field Ping.colour moved from position 1 to 0 (fields reordered)"]),
    # a field appended without a default, or inserted
    (edit((PONG_END, PONG_END + "      late: {type: bool}\n")),
     ["new.yaml:25: breaking: new field Pong.late appended without a default: messages from older nodes lack it"]),
    (edit(("      seq: {type: int}\n      parts", "      seq: {type: int}\n      early: {type: int}\n      parts")),
     ["new.yaml:24: breaking: new field Pong.early inserted at position 1: append new fields at the end, with a "
      "default"]),
    # reordered, inserted and removed messages
    (edit(("  Ping:\n    fields:\n      seq: {type: int}\n      colour: {type: Colour}\n", ""),
          ("  Note:\n", "  Ping:\n    fields:\n      seq: {type: int}\n      colour: {type: Colour}\n  Note:\n")),
     ["new.yaml:21: breaking: wire message Ping moved from tag 0 to tag 1 (messages reordered)",
      "new.yaml:17: breaking: wire message Pong moved from tag 1 to tag 0 (messages reordered)"]),
    (edit(("  Pong:\n", "  Pang:\n    fields:\n      seq: {type: int}\n  Pong:\n")),
     ["new.yaml:21: breaking: new wire message Pang takes tag 1, which older nodes use for Pong: append new "
      "messages after Pong"]),
    (edit(("  Ping:\n    fields:\n      seq: {type: int}\n      colour: {type: Colour}\n", ""),
          ("  ping: {payload: Ping}\n", "  ping: {doc: Now without a message.}\n")),
     ["old.yaml:17: breaking: wire message Ping (tag 0) removed"]),
    (edit(("  Pong:\n", "  Pang:\n"), ("  pong: {payload: Pong}\n", "  pong: {payload: Pang}\n")),
     ["old.yaml:21: breaking: wire message Pong (tag 1) removed (renamed to Pang?)",
      "new.yaml:21: breaking: new wire message Pang takes tag 1, which older nodes use for Pong: append new "
      "messages after Pong"]),
    # a record removed (and so the field using it retyped), the envelope, enum values renumbered
    (edit(("      parts: {type: 'list[Part]'}\n", "      parts: {type: 'list[int]'}\n"),
          ("  Part:\n    kind: record\n    fields:\n      size: {type: int}\n", "")),
     ["old.yaml:13: breaking: record Part removed",
      "new.yaml:20: breaking: field Pong.parts changed type from list[Part] to list[int]"]),
    (edit(("    sender: {type: str}\n", "    sender: {type: str}\n    term: {type: int}\n")),
     ["new.yaml:11: breaking: the envelope changed from (sender: str) to (sender: str, term: int): every wire "
      "message starts with it"]),
    (edit(("      blue: {value: 2}\n", "      blue: {value: 4}\n")),
     ["new.yaml:5: breaking: Colour.blue (2) renumbered from 2 to 4"]),
    # a wire message no event handles any more
    (edit(("  pong: {payload: Pong}\n", "  pong: {doc: No payload.}\n")),
     ["new.yaml:21: breaking: wire message Pong is no longer the payload of any event: nodes built from the new "
      "spec cannot handle it"]),
])
def test_breaking_changes(tmp_path: Path, new: str, expected: list[str]) -> None:
    assert differences(tmp_path, new) == expected


def compat_cli(tmp_path: Path, new: str, old: str = OLD) -> subprocess.CompletedProcess[str]:
    (tmp_path / "old.yaml").write_text(old)
    (tmp_path / "new.yaml").write_text(new)
    return subprocess.run(
        [sys.executable, "-m", "generator", "compat", str(tmp_path / "old.yaml"), "--spec", str(tmp_path / "new.yaml")],
        cwd=ROOT, capture_output=True, text=True, check=False,
    )


def test_cli_exit_status(tmp_path: Path) -> None:
    compatible = compat_cli(tmp_path, edit((PONG_END, PONG_END + "      late: {type: bool, default: false}\n")))
    assert compatible.returncode == 0
    assert compatible.stdout == f"{tmp_path / 'new.yaml'}:25: compatible: new field Pong.late appended with default False\n"
    assert "compatible: 1 difference(s), none breaks the wire" in compatible.stderr
    breaking = compat_cli(tmp_path, edit(("      seq: {type: int}\n      colour", "      colour")))
    assert breaking.returncode == 1
    assert f"{tmp_path / 'old.yaml'}:19: breaking: field Ping.seq removed" in breaking.stdout
    invalid = compat_cli(tmp_path, OLD.replace("{type: int}", "{type: integer}", 1))
    assert invalid.returncode == 2
    assert f"{tmp_path / 'new.yaml'}:16: field Part.size: unknown type 'integer'" in invalid.stderr


def test_the_old_spec_may_predate_explicit_payloads(tmp_path: Path) -> None:
    # `begin` runs after ping (Ping) and pong (Pong): fine under the old implicit rule
    old = OLD.replace("source: idle, dest: busy}", "source: idle, dest: busy, after: begin}").replace(
        "source: busy, dest: idle}", "source: busy, dest: idle, after: begin}")
    assert compat_cli(tmp_path, OLD, old=old).returncode == 0
    assert compat_cli(tmp_path, old, old=OLD).returncode == 2  # but a new spec must declare it


def test_the_shipped_spec_against_itself() -> None:
    result = subprocess.run([sys.executable, "-m", "generator", "compat", str(ROOT / "fsm_spec" / "raft.yaml")],
                            cwd=ROOT, capture_output=True, text=True, check=False)
    assert result.returncode == 0 and result.stdout == ""

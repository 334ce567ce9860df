"""Other versions of fsm_spec/raft.yaml for the wire-negotiation tests: each is the real
spec with a few text edits, rendered by the generator's own code into a module of a temp
directory (imported under its own name, next to generated.raft_fsm), or into a copy of
the source tree that real node processes can run from."""

from __future__ import annotations

import importlib.util
import os
import shutil
import stat
import sys
from collections.abc import Iterable
from pathlib import Path
from types import ModuleType

from fsm_spec import load_spec
from generator.render import render_text

ROOT = Path(__file__).resolve().parent.parent
SPEC = ROOT / "fsm_spec" / "raft.yaml"

Edit = tuple[str, str]
"""(text of the spec, what it becomes); the text must occur exactly once."""

_REPLY_END = ("      read_round: {type: int, doc: 'The read_round of the AppendEntries answered: the leader was "
              "still leader then.'}\n")
_LAST_WIRE_MESSAGE_END = ("    doc: 'The leader hands over: the receiver campaigns at once, without PreVote (leadership "
                          "transfer, thesis §3.10).'\n    fields: {}\n")
_ENTRY_END = "      data: {type: bytes, doc: 'The command, or the encoded configuration; empty for a no-op.'}\n"
_NOOP = "      noop: {value: 3, doc: Appended by a new leader to commit entries of earlier terms (§8).}\n"
_LAST_EVENT = "  higher_term: {payload: TermNotice, doc: A message with a higher term than ours was seen (§5.1).}\n"

NEXT: tuple[Edit, ...] = (
    # a field with a default appended to a message, and to the record inside AppendEntries
    (_REPLY_END, _REPLY_END + "      hint: {type: int, default: 0, doc: A hint for the leader (new).}\n"),
    (_ENTRY_END, _ENTRY_END + "      crc: {type: int, default: 0, doc: A checksum of the entry (new).}\n"),
    # an enum value added
    (_NOOP, _NOOP + "      marker: {value: 4, doc: A new kind of entry.}\n"),
    # a wire message appended after the last one, and the event that carries it (ignored)
    (_LAST_WIRE_MESSAGE_END, _LAST_WIRE_MESSAGE_END + "  Nudge:\n    doc: Campaign at once (new).\n"
                                                      "    fields:\n      reason: {type: str, doc: Why.}\n"),
    (_LAST_EVENT, _LAST_EVENT + "  nudge: {payload: Nudge, doc: Told to campaign (new).}\n"),
)
"""A compatible successor of the spec (`python -m generator compat` agrees)."""
NEXT_ROWS = "\n  - {trigger: nudge, source: '*', ignore: true}\n"

RETYPED: tuple[Edit, ...] = (
    # the record renamed, so AppendEntries.entries changes type
    ("  Entry:\n    kind: record\n", "  Record:\n    kind: record\n"),
    ("      entries: {type: 'list[Entry]',", "      entries: {type: 'list[Record]',"),
)
"""A breaking successor: AppendEntries.entries changes type list[Entry] -> list[Record]."""

REMOVED: tuple[Edit, ...] = (
    (_REPLY_END, ""),
)
"""A breaking successor: AppendEntriesReply.read_round (no default) removed."""


def derive(directory: Path, edits: Iterable[Edit], rows: str = "") -> Path:
    """The spec with `edits` applied (and `rows` appended to the transitions), written to
    `directory`/raft.yaml."""
    text = SPEC.read_text(encoding="utf-8")
    for old, new in edits:
        if text.count(old) != 1:
            raise AssertionError(f"the spec no longer contains exactly one {old!r}: update tests/spec_versions.py")
        text = text.replace(old, new)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "raft.yaml"
    path.write_text(text + rows, encoding="utf-8")
    return path


def render(spec: Path, out: Path) -> Path:
    """What `python -m generator --spec SPEC --out OUT` writes as raft_fsm.py (without the
    diagram, docs and row tests, which need graphviz and fixtures)."""
    source = render_text(load_spec(spec))["raft_fsm.py"]
    out.mkdir(parents=True, exist_ok=True)
    target = out / "raft_fsm.py"
    target.write_text(source, encoding="utf-8")
    return target


def generated_module(directory: Path, edits: Iterable[Edit], name: str, rows: str = "") -> ModuleType:
    """The spec with `edits`, generated into `directory` and imported as module `name`."""
    source = render(derive(directory, edits, rows), directory / "gen")
    spec = importlib.util.spec_from_file_location(name, source)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def source_tree(directory: Path, edits: Iterable[Edit], rows: str = "") -> Path:
    """A copy of the project's code whose generated/raft_fsm.py comes from the spec with
    `edits`, plus `python`: a script that runs this interpreter there (the current
    directory comes first on sys.path under `python -m`, so `-m runtime.cli` runs the
    copy). Returns the script."""
    tree = directory / "tree"
    for package in ("runtime", "generated", "fsm_spec", "generator"):
        shutil.copytree(ROOT / package, tree / package, ignore=shutil.ignore_patterns("__pycache__"))
    spec = derive(directory / "spec", edits, rows)
    render(spec, tree / "generated")
    shutil.copy(spec, tree / "fsm_spec" / "raft.yaml")
    script = directory / "python"
    script.write_text(f'#!/bin/sh\ncd "{tree}" && exec "{sys.executable}" "$@"\n', encoding="utf-8")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    assert os.access(script, os.X_OK)
    return script

"""The generator: deterministic output, drift detection, diagram and docs coverage."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from fsm_spec import load_spec

ROOT = Path(__file__).resolve().parent.parent
GENERATED = ROOT / "generated"


def generate(out: Path, *extra: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "generator", "--out", str(out), *extra],
        cwd=ROOT, capture_output=True, text=True, check=False, env=env,
    )


def test_check_passes_on_the_committed_output() -> None:
    result = generate(GENERATED, "--check")
    assert result.returncode == 0, result.stdout + result.stderr


def test_check_detects_a_hand_edit_shows_the_diff_and_writes_nothing(tmp_path: Path) -> None:
    out = tmp_path / "generated"
    shutil.copytree(GENERATED, out)
    module = out / "raft_fsm.py"
    module.write_text(module.read_text().replace("follower = 0", "follower = 7"))
    before = module.read_bytes()
    result = generate(out, "--check")
    assert result.returncode == 1
    assert "-    follower = 7" in result.stdout and "+    follower = 0" in result.stdout
    assert module.read_bytes() == before


def test_output_is_identical_across_hash_seeds(tmp_path: Path) -> None:
    outputs = {}
    for seed in ("1", "2"):
        out = tmp_path / seed
        result = generate(out, env={**os.environ, "PYTHONHASHSEED": seed})
        assert result.returncode == 0, result.stderr
        outputs[seed] = {p.name: p.read_bytes() for p in sorted(out.iterdir())}
    assert outputs["1"] == outputs["2"]
    assert set(outputs["1"]) == {"raft_fsm.py", "raft_fsm.dot", "raft_fsm.svg", "PROTOCOL.md"}


def test_every_file_starts_with_a_do_not_edit_header_carrying_the_spec_hash() -> None:
    sha = load_spec().sha256
    for path in GENERATED.iterdir():
        if path.name == "__init__.py" or path.is_dir():
            continue
        head = "".join(path.read_text().splitlines(keepends=True)[:3])
        assert "Do not edit" in head and sha in head, path


def test_svg_shows_all_four_roles_and_error_is_terminal() -> None:
    svg = (GENERATED / "raft_fsm.svg").read_text()
    assert "<svg" in svg
    for role in ("follower", "candidate", "leader", "error"):
        assert f"<title>{role}</title>" in svg
    assert "final: no way out" in svg
    assert "<title>error&#45;&gt;" not in svg  # no edge leaves error


def test_protocol_md_covers_every_state_event_pair() -> None:
    spec = load_spec()
    text = (GENERATED / "PROTOCOL.md").read_text()
    table = [line for line in text.splitlines() if line.startswith("| `") and line.count("|") == len(spec.states) + 2]
    events = {line.split("|")[1].strip().strip("`"): line for line in table}
    for event in spec.events:
        cells = [c.strip() for c in events[event.name].split("|")[2:-1]]
        assert len(cells) == len(spec.states)
        assert all(cells), event.name


def test_scaffold_lists_only_missing_callbacks(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "generator", "scaffold"], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0
    spec = load_spec()
    try:
        from runtime.consensus import Consensus
        implemented = set(dir(Consensus))
    except ImportError:
        implemented = set()
    for callback in spec.callbacks:
        assert (f"def {callback.name}(" in result.stdout) == (callback.name not in implemented)

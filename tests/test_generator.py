"""The generator: deterministic output, drift detection, diagram and docs coverage, the
check of the spec against the handler class, scaffold, and the generated row tests."""

from __future__ import annotations

import ast
import importlib
import inspect
import os
import shutil
import subprocess
import sys
import types
from pathlib import Path

import pytest

from fsm_spec import load_spec
from generator import handlers, rowtests
from generator.render import render_text
from runtime.consensus import Consensus

ROOT = Path(__file__).resolve().parent.parent
GENERATED = ROOT / "generated"
GENERATED_TESTS = ROOT / "tests" / "generated"
SPEC = ROOT / "fsm_spec" / "raft.yaml"
BIN = Path(sys.executable).parent


def generate(out: Path, *extra: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "generator", "--out", str(out), *extra],
        cwd=ROOT, capture_output=True, text=True, check=False, env=env,
    )


def run_generator(*arguments: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "generator", *arguments], cwd=ROOT, capture_output=True, text=True, check=False,
        env=env,
    )


def spec_variant(tmp_path: Path, *edits: tuple[str, str]) -> Path:
    """A copy of the shipped spec with textual edits (each must apply exactly once)."""
    text = SPEC.read_text()
    for old, new in edits:
        assert text.count(old) == 1, old
        text = text.replace(old, new)
    path = tmp_path / "raft.yaml"
    path.write_text(text)
    return path


def line_of(path: Path, fragment: str) -> int:
    return next(n for n, line in enumerate(path.read_text().splitlines(), start=1) if fragment in line)


# -- output and drift ------------------------------------------------------------------------
def test_check_passes_on_the_committed_output() -> None:
    result = generate(GENERATED, "--check")
    assert result.returncode == 0, result.stdout + result.stderr
    result = run_generator("--check")  # the defaults: generated/ and tests/generated/
    assert result.returncode == 0, result.stdout + result.stderr


def test_check_detects_a_hand_edit_shows_the_diff_and_writes_nothing(tmp_path: Path) -> None:
    out = tmp_path / "generated"
    shutil.copytree(GENERATED, out)
    tests_out = tmp_path / "tests"
    shutil.copytree(GENERATED_TESTS, tests_out)
    module = out / "raft_fsm.py"
    module.write_text(module.read_text().replace("follower = 0", "follower = 7"))
    before = module.read_bytes()
    result = generate(out, "--tests-out", str(tests_out), "--check")
    assert result.returncode == 1
    assert "-    follower = 7" in result.stdout and "+    follower = 0" in result.stdout
    assert module.read_bytes() == before


def test_check_detects_a_hand_edit_of_the_row_tests(tmp_path: Path) -> None:
    out = tmp_path / "generated"
    shutil.copytree(GENERATED, out)
    tests_out = tmp_path / "tests"
    shutil.copytree(GENERATED_TESTS, tests_out)
    rows = tests_out / "test_raft_rows.py"
    rows.write_text(rows.read_text().replace("ignore=True", "ignore=False", 1))
    result = generate(out, "--tests-out", str(tests_out), "--check")
    assert result.returncode == 1
    assert "-        ignore=False," in result.stdout and "+        ignore=True," in result.stdout


def test_output_is_identical_across_hash_seeds(tmp_path: Path) -> None:
    outputs = {}
    for seed in ("1", "2"):
        out = tmp_path / seed
        result = generate(out, env={**os.environ, "PYTHONHASHSEED": seed})
        assert result.returncode == 0, result.stderr
        outputs[seed] = {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}
    assert outputs["1"] == outputs["2"]
    assert set(outputs["1"]) == {"raft_fsm.py", "raft_fsm.dot", "raft_fsm.svg", "PROTOCOL.md",
                                 "tests/test_raft_rows.py"}
    assert outputs["1"]["tests/test_raft_rows.py"] == (GENERATED_TESTS / "test_raft_rows.py").read_bytes()


def test_every_file_starts_with_a_do_not_edit_header_carrying_the_spec_hash() -> None:
    sha = load_spec().sha256
    for path in [*GENERATED.iterdir(), GENERATED_TESTS / "test_raft_rows.py"]:
        if path.name in ("__init__.py", "py.typed") or path.is_dir():  # the package's own files, not generated
            continue
        head = "".join(path.read_text().splitlines(keepends=True)[:3])
        assert "Do not" in head and "edit" in head and sha in head, path


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


def test_field_defaults_and_state_callbacks_are_rendered(tmp_path: Path) -> None:
    path = spec_variant(
        tmp_path,
        ("      done: {type: bool, doc: True if this is the last chunk.}\n",
         "      done: {type: bool, doc: True if this is the last chunk.}\n"
         "      hint: {type: 'list[str]', default: [a, b], doc: Appended later.}\n"),
        ("  leader:\n    doc:", "  leader:\n    on_exit: leave_leader\n    doc:"),
        ("\ncallbacks:\n", "\ncallbacks:\n  leave_leader: {payload: none, doc: Clean up.}\n"),
    )
    module = render_text(load_spec(path))["raft_fsm.py"]
    assert "    hint: Sequence[str] = ('a', 'b',)\n" in module
    assert "    Role.leader: StateCallbacks((), ('leave_leader',), " in module
    assert "{\"name\": 'leader', \"on_exit\": ['leave_leader']}," in module
    assert '    def leave_leader(self) -> None:\n        """Clean up."""\n' in module
    namespace: dict[str, object] = {}
    exec(compile(module, "raft_fsm.py", "exec"), namespace)
    snapshot = namespace["InstallSnapshot"]
    assert snapshot(1, "a", "b", 1, "a", 1, 1, ("a",), 1, 0, bytes(32), 0, b"", True).hint == ("a", "b")  # type: ignore[operator]


# -- the spec against the handler class -------------------------------------------------------
def test_a_misspelled_callback_is_an_error_at_its_row_and_the_real_handler_unused(tmp_path: Path) -> None:
    path = spec_variant(tmp_path, ("after: broadcast_heartbeat}", "after: broadcast_heartbaet}"))
    row = line_of(path, "broadcast_heartbaet")
    method = inspect.getsourcelines(Consensus.broadcast_heartbeat)[1]
    out = tmp_path / "out"
    result = generate(out, "--spec", str(path))
    assert result.returncode == 1
    assert (f"{path}:{row}: error: callback 'broadcast_heartbaet' (after of heartbeat_timeout) is not implemented "
            "by runtime.consensus.Consensus (did you mean 'broadcast_heartbeat'?)") in result.stderr
    assert (f"runtime/consensus/replication.py:{method}: warning: runtime.consensus.Consensus.broadcast_heartbeat "
            f"is public but no row or state of {path} names it") in result.stderr
    assert (out / "raft_fsm.py").exists()  # written anyway: the handlers may need the new types
    # --check fails on it even without drift
    checked = generate(out, "--spec", str(path), "--check")
    assert checked.returncode == 1
    assert checked.stdout == ""
    assert f"{path}:{row}: error: callback 'broadcast_heartbaet'" in checked.stderr


def test_mixed_payloads_fail_generate_and_check_with_both_lines(tmp_path: Path) -> None:
    # grant_vote (RequestVote) reused after pre_vote (PreVote)
    path = spec_variant(tmp_path, ("conditions: can_grant_pre_vote, after: grant_pre_vote,",
                                   "conditions: can_grant_pre_vote, after: grant_vote,"))
    first = line_of(path, "conditions: can_grant_vote, after: grant_vote") - 1  # where each row starts
    second = line_of(path, "conditions: can_grant_pre_vote, after: grant_vote") - 1
    message = (f"{path}:{second}: callback 'grant_vote' runs after events with different payloads: after of "
               f"request_vote (RequestVote) at line {first} and after of pre_vote (PreVote) at line {second}; "
               "declare it under 'callbacks:' as 'grant_vote: {payload: none}' to call it with no argument, or use "
               "two callbacks")
    for extra in ((), ("--check",)):
        result = generate(tmp_path / "out", "--spec", str(path), *extra)
        assert result.returncode == 2, extra
        assert message in result.stderr, result.stderr
    assert not (tmp_path / "out").exists()


def test_the_payload_less_declarations_are_needed(tmp_path: Path) -> None:
    path = spec_variant(tmp_path, ("  start_election: {payload: none,", "  other_name: {payload: none,"))
    result = generate(tmp_path / "out", "--spec", str(path), "--check")
    assert result.returncode == 2
    assert "callback 'start_election' runs after events with different payloads: after of election_timeout " \
           "(no payload) at line" in result.stderr
    assert f"{path}:{line_of(path, 'other_name')}: callback 'other_name' is declared but no row or state uses it" \
        in result.stderr


class Wrong(Consensus):
    RAFT_HELPERS = frozenset({"gone"})

    def grant_vote(self) -> None:  # type: ignore[override]
        pass

    def reject_vote(self, message: int, /) -> None:  # type: ignore[override]
        pass

    def leave_leader(self) -> None:
        pass

    def on_enter_leader(self) -> None:
        pass

    def _private(self) -> None:
        pass


def test_wrong_arguments_are_errors_and_unused_methods_warnings() -> None:
    spec = load_spec()
    findings = [str(f) for f in handlers.check_handlers(spec, Wrong, "raft.yaml")]
    grant = next(r.line for r in spec.rows if "grant_vote" in r.after)
    reject = next(r.line for r in spec.rows if "reject_vote" in r.after)
    here = "tests/test_generator.py"
    owner = "tests.test_generator.Wrong"
    assert findings == [
        f"raft.yaml:{grant}: error: callback 'grant_vote' (after of request_vote) is called with the RequestVote "
        f"payload, but {owner}.grant_vote() takes no argument",
        f"raft.yaml:{reject}: error: callback 'reject_vote' (after of request_vote) is called with the RequestVote "
        f"payload, but {owner}.reject_vote annotates 'message' as int",
        f"{here}:{inspect.getsourcelines(Wrong.leave_leader)[1]}: warning: {owner}.leave_leader is public but no row "
        "or state of raft.yaml names it; a misspelled callback in the spec? if it is a helper, list it in "
        "RAFT_HELPERS",
        f"{here}:{inspect.getsourcelines(Wrong.on_enter_leader)[1]}: warning: {owner}.on_enter_leader is public but "
        "no row or state of raft.yaml names it (the dispatcher does not bind transitions' "
        "on_enter_<state>/on_exit_<state> methods by name: list it in the state's on_enter/on_exit); a misspelled "
        "callback in the spec? if it is a helper, list it in RAFT_HELPERS",
        f"{here}:{inspect.getsourcelines(Wrong)[1]}: warning: {owner}.RAFT_HELPERS lists 'gone', which is not a "
        f"public method of {owner}",
    ]


def test_the_shipped_handlers_match_the_spec_without_warnings() -> None:
    assert handlers.check_handlers(load_spec(), Consensus, "raft.yaml") == []


def test_handlers_option_and_a_class_that_cannot_be_imported(tmp_path: Path) -> None:
    module = tmp_path / "extra_handlers.py"
    module.write_text("from runtime.consensus import Consensus\n\n\nclass Extra(Consensus):\n"
                      "    def leave_leader(self) -> None:\n        pass\n")
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    result = run_generator("--check", "--handlers", "extra_handlers:Extra", env=env)
    assert result.returncode == 0, result.stderr  # a warning does not fail the check
    assert f"{module}:5: warning: extra_handlers.Extra.leave_leader is public but no row" in result.stderr
    result = run_generator("--check", "--handlers", "no_such_module:Handlers")
    assert result.returncode == 2
    assert "error: cannot import no_such_module for --handlers no_such_module:Handlers: ModuleNotFoundError" \
        in result.stderr
    result = generate(tmp_path / "out", "--handlers", "runtime.consensus:Nope")
    assert result.returncode == 0  # generating still works; it says what it could not check
    assert "warning: runtime.consensus has no Nope (--handlers runtime.consensus:Nope): the spec was not checked" \
        in result.stderr
    result = run_generator("--check", "--handlers", "runtime.consensus")
    assert result.returncode == 2 and "expected MODULE:CLASS" in result.stderr


# -- scaffold ------------------------------------------------------------------------------------
def test_scaffold_on_the_shipped_spec_has_nothing_to_add() -> None:
    result = run_generator("scaffold")
    assert result.returncode == 0
    assert result.stdout == "# runtime.consensus:Consensus implements every callback of fsm_spec/raft.yaml\n"


def test_scaffold_prints_a_module_that_pastes_as_is(tmp_path: Path) -> None:
    spec_path = spec_variant(
        tmp_path,
        ("after: broadcast_heartbeat}", "after: broadcast_heartbaet}"),
        ("conditions: from_current_leader, after: accept_append_entries}",
         "conditions: from_current_leader, prepare: note_leader, after: accept_append_entries}"),
        ("  leader:\n    doc:", "  leader:\n    on_exit: leave_leader\n    doc:"),
        ("\ncallbacks:\n", "\ncallbacks:\n  leave_leader: {payload: none}\n"),
    )
    result = run_generator("scaffold", "--spec", str(spec_path))
    assert result.returncode == 0, result.stderr
    stubs = result.stdout
    assert "from generated.raft_fsm import AppendEntries\nfrom runtime.consensus.base import ConsensusBase\n" in stubs
    assert "class NewCallbacks(ConsensusBase):\n" in stubs
    protocols = render_text(load_spec(spec_path))["raft_fsm.py"]
    definitions = [line for line in stubs.splitlines() if line.startswith("    def ")]
    assert definitions == [
        "    def broadcast_heartbaet(self) -> None:",
        "    def leave_leader(self) -> None:",
        "    def note_leader(self, message: AppendEntries, /) -> None:",
    ]
    for definition in definitions:
        assert f"{definition} ...\n" in protocols  # exactly the Protocol's signature
    # pasteable: lint- and type-clean as a module of the project, and it completes the handlers
    module = tmp_path / "stubs.py"
    module.write_text(stubs)
    lint = subprocess.run([str(BIN / "ruff"), "check", "--config", str(ROOT / "pyproject.toml"), str(module)],
                          cwd=ROOT, capture_output=True, text=True, check=False)
    assert lint.returncode == 0, lint.stdout
    types_ = subprocess.run(
        [str(BIN / "mypy"), "--strict", "--cache-dir", str(tmp_path / "mypy"), str(module)], cwd=ROOT,
        capture_output=True, text=True, check=False, env={**os.environ, "MYPYPATH": str(ROOT)},
    )
    assert types_.returncode == 0, types_.stdout
    sys.path.insert(0, str(tmp_path))
    try:
        stub_class = importlib.import_module("stubs").NewCallbacks
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("stubs", None)
    completed = type("Completed", (stub_class, Consensus), {})
    assert [f for f in handlers.check_handlers(load_spec(spec_path), completed, "x") if f.severity == "error"] == []


def test_scaffold_without_importable_handlers_lists_every_callback() -> None:
    result = run_generator("scaffold", "--handlers", "no_such_module:X")
    assert result.returncode == 0
    assert "note: cannot import no_such_module" in result.stderr
    assert "class NewCallbacks:\n" in result.stdout
    for callback in load_spec().callbacks:
        assert f"    def {callback.name}(self" in result.stdout


# -- generated row tests ------------------------------------------------------------------------
def generated_cases(path: Path) -> dict[str, tuple[int, str]]:
    """case id -> (target line, target recipe), read from a generated test module."""
    tree = ast.parse(path.read_text())
    cases: dict[str, tuple[int, str]] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "Case":
            target = next(k.value for k in node.keywords if k.arg == "target")
            assert isinstance(target, ast.Call)
            recipe, line = (ast.literal_eval(target.args[i]) for i in (1, 3))
            cases[ast.literal_eval(node.args[0])] = (line, recipe)
    return cases


def test_every_non_error_row_and_source_has_a_case_or_a_reason() -> None:
    rows = importlib.import_module("tests.generated.test_raft_rows")
    spec = load_spec()
    expected = {
        rowtests.case_id(spec, row, source) for row in spec.rows if row.kind != "error" for source in row.sources
    }
    tested = {case.id for case in rows.CASES}
    unreachable = {entry[0] for entry in rows.UNREACHABLE}
    assert tested | unreachable == expected and not tested & unreachable
    assert {case.target.line for case in rows.CASES} == {row.line for row in spec.rows if row.kind != "error"}
    assert all(reason for *_, reason in rows.UNREACHABLE)
    assert not hasattr(rows, "PROBLEMS")


def test_a_new_row_regenerates_its_own_test(tmp_path: Path) -> None:
    new_row = ("  - {trigger: append_entries, source: leader, dest: follower, conditions: from_current_leader, "
               "after: accept_append_entries}\n")
    anchor = "  - {trigger: append_entries, source: [follower, pre_candidate, candidate, leader], dest: null,\n"
    path = spec_variant(tmp_path, (anchor, new_row + anchor))
    out = tmp_path / "out"
    result = generate(out, "--spec", str(path))
    assert result.returncode == 0, result.stderr
    before = generated_cases(GENERATED_TESTS / "test_raft_rows.py")
    after = generated_cases(out / "tests" / "test_raft_rows.py")
    assert len(after) == len(before) + 1
    assert after["leader:append_entries#1"] == (line_of(path, "source: leader, dest: follower, conditions: from_cur"),
                                                "from_current_leader")
    assert after["leader:append_entries#2"][1] == before["leader:append_entries#1"][1] == "append_entries"


def test_a_row_without_a_recipe_fails_the_generator_and_its_test(tmp_path: Path) -> None:
    path = spec_variant(tmp_path, ("after: broadcast_heartbeat}", "after: broadcast_heartbeat, test: nudge}"))
    out = tmp_path / "out"
    result = generate(out, "--spec", str(path))
    assert result.returncode == 1
    message = (f"{path}:{line_of(path, 'test: nudge')}: error: no recipe 'nudge' (named after its test: key) in "
               "tests/row_fixtures.py to drive the heartbeat_timeout row from leader: write one, or name an existing "
               "recipe with `test:` on the row")
    assert message in result.stderr
    generated = (out / "tests" / "test_raft_rows.py").read_text()
    assert "def test_every_row_has_a_test() -> None:" in generated and "no recipe 'nudge'" in generated
    assert generate(out, "--spec", str(path), "--check").returncode == 1


def test_a_row_whose_recipe_no_path_agrees_with_is_reported() -> None:
    fixtures = importlib.import_module("tests.row_fixtures")
    recipes = dict(fixtures.RECIPES)
    # without its declared reason, the pre_candidate source of the unguarded election_timeout
    # row needs pre_vote off, and every way into pre_candidate needs it on
    recipes["election_timeout"] = fixtures.Recipe("election_timeout", recipes["election_timeout"].run,
                                                  {"pre_vote": False}, {})
    fake = types.SimpleNamespace(RECIPES=recipes, DEFAULT_OPTIONS=fixtures.DEFAULT_OPTIONS, EFFECTS=fixtures.EFFECTS)
    spec = load_spec()
    plan = rowtests.plan(spec, fake, "fixtures.py")  # type: ignore[arg-type]
    row = next(r for r in spec.rows if r.trigger == "election_timeout" and not r.guarded and r.dest == "candidate")
    assert plan.problems == ((row.line, (
        "the election_timeout row cannot be reached in pre_candidate: no path of rows from follower to "
        "pre_candidate whose recipes agree with 'election_timeout''s options {'pre_vote': False}; if it can never "
        "fire there, say why in the recipe's unreachable=")),)


@pytest.mark.parametrize("missing", ["RECIPES", "module"])
def test_fixtures_that_cannot_be_used(tmp_path: Path, missing: str) -> None:
    if missing == "RECIPES":
        (tmp_path / "bad_fixtures.py").write_text("DEFAULT_OPTIONS = {}\nEFFECTS = {}\n")
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    result = generate(tmp_path / "out", "--fixtures", "bad_fixtures", env=env)
    if missing == "RECIPES":
        assert result.returncode == 1
        assert "error: the row-test fixtures bad_fixtures have no mapping RECIPES" in result.stderr
    else:
        assert result.returncode == 0  # absent (an installed package has no tests/): a warning
        assert "warning: cannot import the row-test fixtures bad_fixtures" in result.stderr
    result = run_generator("--check", "--fixtures", "bad_fixtures", env=env)
    assert result.returncode == 2

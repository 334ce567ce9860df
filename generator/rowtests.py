"""Generated transition tests, XState-style: one test case per (row, source role).

For every row that is not an `error` row and every source role of it, the planner
derives a case: the shortest path of transition rows from the initial role to the source
role, then the row itself, each step driven by a recipe of the fixture module
(`tests/row_fixtures.py` by default, `--fixtures MODULE`), and the effects to check
afterwards. The cases are rendered into `tests/generated/test_raft_rows.py`, so a spec
edit regenerates its own tests and `--check` reports them as drift.

Which recipe drives a row: its `test:` key; else, for a guarded row, the recipe named
after its first condition (`not_<name>` after its first `unless`); else, for an
unguarded row, the recipe named after its event. A recipe's `options` (Harness
arguments such as the cluster size) hold for the whole case, so the path to the source
role only uses rows whose recipes agree with them. A recipe's `unreachable` maps a role
to the reason its row cannot fire there; such (row, role) pairs are listed in the
generated module instead of tested.

The planner is an error, with the row's file:line, when a row has no recipe or no path.
"""

from __future__ import annotations

import collections
import importlib
import sys
from collections.abc import Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

from attrs import frozen

from fsm_spec.model import RowSpec, Spec

DEFAULT_FIXTURES = "tests.row_fixtures"
_PROJECT_ROOT = Path(__file__).resolve().parent.parent


class FixturesUnavailable(Exception):
    """The fixture module could not be imported or lacks RECIPES / DEFAULT_OPTIONS / EFFECTS.
    `absent` is True when the module does not exist at all (an installed package without
    its tests), as opposed to existing and failing."""

    def __init__(self, message: str, absent: bool = False) -> None:
        super().__init__(message)
        self.absent = absent


@frozen
class PlannedStep:
    source: str
    recipe: str
    event: str
    line: int
    dest: str


@frozen
class PlannedCase:
    id: str
    options: tuple[tuple[str, object], ...]
    path: tuple[PlannedStep, ...]
    target: PlannedStep
    effects: tuple[str, ...]
    ignore: bool
    direct_note: str = ""


@frozen
class Unreachable:
    id: str
    line: int
    recipe: str
    reason: str


@frozen
class Plan:
    cases: tuple[PlannedCase, ...]
    unreachable: tuple[Unreachable, ...]
    problems: tuple[tuple[int, str], ...]
    """(spec line, reason) for every row the planner could not derive a case for."""

    @property
    def rows_covered(self) -> int:
        return len({case.target.line for case in self.cases})


def load_fixtures(name: str) -> ModuleType:
    if str(_PROJECT_ROOT) not in sys.path:
        sys.path.append(str(_PROJECT_ROOT))
    try:
        module = importlib.import_module(name)
    except Exception as exc:  # report any failure of the fixture module, do not raise it
        absent = isinstance(exc, ModuleNotFoundError) and exc.name is not None \
            and (name == exc.name or name.startswith(exc.name + "."))
        raise FixturesUnavailable(
            f"cannot import the row-test fixtures {name}: {type(exc).__name__}: {exc}", absent
        ) from exc
    for attribute in ("RECIPES", "DEFAULT_OPTIONS", "EFFECTS"):
        if not isinstance(getattr(module, attribute, None), Mapping):
            raise FixturesUnavailable(f"the row-test fixtures {name} have no mapping {attribute}")
    return module


def recipe_name(row: RowSpec) -> str:
    """The recipe that drives `row` (see the module docstring)."""
    if row.test:
        return row.test
    if row.conditions:
        return row.conditions[0]
    if row.unless:
        return "not_" + row.unless[0]
    return row.trigger


def case_id(spec: Spec, row: RowSpec, source: str) -> str:
    """`source:event#n`, n counting the rows of that (role, event) pair from 1: stable
    under edits elsewhere in the spec."""
    position = next(i for i, r in enumerate(spec.rows_for(source, row.trigger), start=1) if r is row)
    return f"{source}:{row.trigger}#{position}"


def _agrees(options: Mapping[str, object], world: Mapping[str, object]) -> bool:
    return all(world.get(key) == value for key, value in options.items())


def plan(spec: Spec, fixtures: ModuleType, fixtures_path: str) -> Plan:
    recipes: Mapping[str, Any] = fixtures.RECIPES
    defaults: Mapping[str, object] = fixtures.DEFAULT_OPTIONS
    effects: Mapping[str, object] = fixtures.EFFECTS
    state_callbacks = {s.name: s for s in spec.states}

    # edges of the role graph a path may use: (row, source, recipe), in spec order
    edges: dict[str, list[tuple[RowSpec, str, Any]]] = collections.defaultdict(list)
    for row in spec.rows:
        if row.kind != "transition" or row.dest is None:
            continue
        recipe = recipes.get(recipe_name(row))
        if recipe is None:
            continue
        for source in row.sources:
            if source != row.dest and source not in recipe.unreachable:
                edges[source].append((row, source, recipe))

    def shortest(target: str, world: Mapping[str, object]) -> list[tuple[RowSpec, str]] | None:
        start = spec.initial.name
        parent: dict[str, tuple[str, RowSpec] | None] = {start: None}
        queue = collections.deque([start])
        while queue:
            current = queue.popleft()
            if current == target:
                path: list[tuple[RowSpec, str]] = []
                while (link := parent[current]) is not None:
                    previous, row = link
                    path.append((row, previous))
                    current = previous
                return path[::-1]
            for row, source, recipe in edges[current]:
                assert row.dest is not None
                if row.dest not in parent and _agrees(recipe.options, world):
                    parent[row.dest] = (source, row)
                    queue.append(row.dest)
        return None

    cases: list[PlannedCase] = []
    unreachable: list[Unreachable] = []
    problems: list[tuple[int, str]] = []
    for row in spec.rows:
        if row.kind == "error":
            continue
        name = recipe_name(row)
        recipe = recipes.get(name)
        if recipe is None:
            how = ("its test: key" if row.test else f"its first {'condition' if row.conditions else 'unless guard'}"
                   if row.guarded else "its event")
            problems.append((row.line, (
                f"no recipe {name!r} (named after {how}) in {fixtures_path} to drive the {row.trigger} row "
                f"from {', '.join(row.sources)}: write one, or name an existing recipe with `test:` on the row"
            )))
            continue
        world = {**defaults, **recipe.options}
        options = tuple(sorted((k, v) for k, v in world.items() if defaults.get(k, object()) != v))
        for source in row.sources:
            identifier = case_id(spec, row, source)
            if source in recipe.unreachable:
                unreachable.append(Unreachable(identifier, row.line, name, str(recipe.unreachable[source])))
                continue
            path = shortest(source, world)
            if path is None:
                problems.append((row.line, (
                    f"the {row.trigger} row cannot be reached in {source}: no path of rows from "
                    f"{spec.initial.name} to {source} whose recipes agree with {name!r}'s options "
                    f"{dict(recipe.options)}; if it can never fire there, say why in the recipe's unreachable="
                )))
                continue
            steps = tuple(
                PlannedStep(previous, recipe_name(step_row), step_row.trigger, step_row.line, step_row.dest or previous)
                for step_row, previous in path
            )
            dest = row.dest or source
            actions = [*row.prepare, *row.before]
            if row.kind == "transition":
                actions += [*state_callbacks[source].on_exit, *state_callbacks[dest].on_enter]
            actions += row.after
            checked = tuple(dict.fromkeys(a for a in actions if a in effects))
            cases.append(PlannedCase(
                identifier, options, steps, PlannedStep(source, name, row.trigger, row.line, dest), checked,
                row.kind == "ignore",
            ))
    return Plan(tuple(cases), tuple(unreachable), tuple(problems))

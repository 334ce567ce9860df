"""The spec is the source of truth: no code outside the dispatcher assigns a role."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def role_assignments(path: Path) -> list[int]:
    tree = ast.parse(path.read_text(), filename=str(path))
    lines = []
    for node in ast.walk(tree):
        targets: list[ast.expr] = []
        if isinstance(node, ast.Assign):
            targets = node.targets
        elif isinstance(node, ast.AugAssign | ast.AnnAssign):
            targets = [node.target]
        elif (
            isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "setattr"
            and len(node.args) >= 2 and isinstance(node.args[1], ast.Constant) and node.args[1].value == "role"
        ):
            lines.append(node.lineno)
        for target in targets:
            if isinstance(target, ast.Attribute) and target.attr == "role":
                lines.append(node.lineno)
    return lines


def test_only_the_dispatcher_assigns_role() -> None:
    offenders = {}
    for path in sorted((ROOT / "runtime").rglob("*.py")):
        if path.name == "dispatch.py":
            assert role_assignments(path), "the dispatcher itself must assign the role"
            continue
        if found := role_assignments(path):
            offenders[str(path.relative_to(ROOT))] = found
    assert offenders == {}

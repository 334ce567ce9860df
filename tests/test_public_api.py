"""The library as a user sees it: `import runtime` and its `__all__`, one exception
hierarchy, loggers under `raftfsm.*`, the import graph of the core, and a user's program
type-checked with `mypy --strict` against the *installed* package, outside the repository."""

from __future__ import annotations

import ast
import importlib
import inspect
import logging
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import runtime
import runtime.errors

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("fsm_spec", "generator", "generated", "runtime")


# -- the package's namespace ---------------------------------------------------------------------------
def test_every_public_name_resolves_to_the_object_of_its_module() -> None:
    assert len(runtime.__all__) == len(set(runtime.__all__))
    for name in runtime.__all__:
        value = getattr(runtime, name)
        home = runtime._LAZY.get(name, "runtime.errors")
        assert getattr(importlib.import_module(home), name) is value, name
    assert set(runtime.__all__) <= set(dir(runtime))
    namespace: dict[str, object] = {}
    exec("from runtime import *", namespace)
    assert set(runtime.__all__) <= set(namespace)
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        runtime.nothing  # type: ignore[attr-defined]  # noqa: B018


def test_import_runtime_is_light() -> None:
    """`import runtime` imports the errors only: no asyncio, aiohttp, sqlite3 or server."""
    probe = ("import sys, runtime; heavy = [m for m in ('asyncio', 'aiohttp', 'sqlite3', 'runtime.server', "
             "'runtime.http', 'generated.raft_fsm') if m in sys.modules]; print(heavy)")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "[]", out.stdout


def test_py_typed_markers_exist() -> None:
    for package in PACKAGES:
        assert (ROOT / package / "py.typed").is_file(), package


# -- one exception hierarchy -------------------------------------------------------------------------------
def test_every_public_exception_is_a_raft_error_in_runtime_errors() -> None:
    errors = [value for _, value in inspect.getmembers(runtime.errors, inspect.isclass)
              if issubclass(value, BaseException)]
    assert len(errors) >= 20
    for error in errors:
        assert issubclass(error, runtime.RaftError), error
        assert error.__module__ == "runtime.errors", error
        assert error.__name__ in runtime.errors.__all__ and error.__name__ in runtime.__all__, error
    assert issubclass(runtime.InvariantViolation, AssertionError)
    assert issubclass(runtime.ApplyTimeout, TimeoutError) and issubclass(runtime.OutcomeUnknown, runtime.ApplyTimeout)
    assert issubclass(runtime.CorruptStorage, runtime.StorageError)


@pytest.mark.parametrize(("module", "names"), [
    ("runtime.server", ["ApplyTimeout", "OutcomeUnknown", "ProposalDropped", "ReadRefused", "StateMachineFailed"]),
    ("runtime.storage", ["StorageError", "CorruptStorage"]),
    ("runtime.storage.base", ["StorageError", "CorruptStorage"]),
    ("runtime.codec", ["FrameError"]),
    ("runtime.sim", ["InvariantViolation"]),
    ("runtime.cluster", ["ClusterError"]),
    ("runtime.transport.auth", ["SecretError"]),
    ("runtime.statemachine", ["CommandRejected"]),
])
def test_the_old_homes_of_the_errors_still_export_them(module: str, names: list[str]) -> None:
    loaded = importlib.import_module(module)
    for name in names:
        assert getattr(loaded, name) is getattr(runtime.errors, name), (module, name)


def test_exceptions_raised_by_the_library_are_raft_errors(tmp_path: Path) -> None:
    from runtime.codec import decode

    with pytest.raises(runtime.RaftError):
        decode(b"\x00not a frame")
    with pytest.raises(runtime.RaftError):
        runtime.load_secret(str(tmp_path / "missing"))
    with pytest.raises(runtime.RaftError):
        runtime.load_app("no.such.module:factory")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "raft.db").write_bytes(b"this is not a database" * 100)
    with pytest.raises(runtime.RaftError):
        runtime.SqliteStorage(tmp_path / "data", node_id="n1", cluster_id="c")


# -- loggers -----------------------------------------------------------------------------------------------
def _sources(*packages: str) -> list[Path]:
    return sorted(path for package in packages for path in (ROOT / package).rglob("*.py"))


def test_every_logger_is_named_under_raftfsm() -> None:
    """Each `logging.getLogger(...)` names a logger under `raftfsm.` (a literal or an f-string
    starting with it), so that `logging.getLogger("raftfsm")` configures all of them."""
    checked = 0
    for path in _sources("runtime", "generator", "fsm_spec", "examples"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and node.func.attr == "getLogger"):
                continue
            where = f"{path.relative_to(ROOT)}:{node.lineno}"
            assert node.args, f"{where}: the root logger"
            name = node.args[0]
            if isinstance(name, ast.Attribute) and name.attr == "name":
                continue  # looks up an existing logger by its name (or a child of one)
            if isinstance(name, ast.JoinedStr):
                first = name.values[0]
                if isinstance(first, ast.FormattedValue) and isinstance(first.value, ast.Attribute) \
                        and first.value.attr == "name":
                    continue  # a child of an existing logger (f"{self.log.name}.aiohttp")
                assert isinstance(first, ast.Constant), where
                name = first
            assert isinstance(name, ast.Constant) and str(name.value).startswith("raftfsm."), where
            checked += 1
    assert checked >= 6


def test_the_transport_logs_under_raftfsm() -> None:
    from runtime.transport.tcp import TcpTransport

    transport = TcpTransport("n1", "c", ("127.0.0.1", 1), {"n1": ("127.0.0.1", 1)}, lambda message: None,
                             secret=b"s" * 32)
    assert transport._log.name == "raftfsm.transport.n1"
    assert transport._log.parent is not None
    assert logging.getLogger("raftfsm.transport.n1") is transport._log


# -- the import graph ----------------------------------------------------------------------------------------
CORE = ("runtime.core", "runtime.consensus", "runtime.applier", "runtime.statemachine", "runtime.sessions")
"""The sans-I/O core: the node, its handlers, and what every driver applies with."""
FORBIDDEN = ("runtime.storage", "runtime.transport", "runtime.server", "runtime.sim", "runtime.http",
             "runtime.cluster", "runtime.cli", "runtime.jepsen", "runtime.codec", "generator", "fsm_spec",
             "asyncio", "socket", "ssl", "sqlite3", "threading", "subprocess", "aiohttp", "time")
"""What the core never imports, directly or through another module: storage, transport,
drivers, the simulator, the generator, and anything doing I/O or reading a clock."""


def _module_path(name: str) -> Path | None:
    base = ROOT.joinpath(*name.split("."))
    if base.with_suffix(".py").is_file():
        return base.with_suffix(".py")
    if (base / "__init__.py").is_file():
        return base / "__init__.py"
    return None


def _imports(name: str) -> set[str]:
    """The modules `name` imports when it runs (`if TYPE_CHECKING:` blocks are skipped),
    each with its parent packages (importing a.b.c runs a and a.b first)."""
    path = _module_path(name)
    assert path is not None, name
    tree = ast.parse(path.read_text(), str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                module = f"{base}.{node.module}" if node.module else base
            else:
                module = node.module or ""
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names
                         if _module_path(f"{module}.{alias.name}") is not None)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    with_parents = set()
    for module in found:
        parts = module.split(".")
        with_parents.update(".".join(parts[:i]) for i in range(1, len(parts) + 1))
    return with_parents - {"__future__"}


def _closure(roots: tuple[str, ...]) -> dict[str, str]:
    """Every module the roots import, transitively, each with the module that imports it."""
    seen: dict[str, str] = {root: "" for root in roots}
    todo = list(roots)
    while todo:
        current = todo.pop()
        if _module_path(current) is None:
            continue  # the standard library or a third-party package: not followed
        for imported in _imports(current):
            if imported not in seen:
                seen[imported] = current
                todo.append(imported)
    return seen


def test_the_core_never_imports_storage_transport_drivers_or_the_generator() -> None:
    graph = _closure(CORE)
    assert "runtime.consensus.election" in graph and "generated.raft_fsm" in graph, "the walker lost its way"
    bad = sorted(module for module in graph if any(module == f or module.startswith(f + ".") for f in FORBIDDEN))
    assert not bad, "; ".join(f"{module} imported by {graph[module]}" for module in bad)


def test_the_import_check_catches_a_forbidden_import() -> None:
    """The checker itself: a server module does import the transport."""
    graph = _closure(("runtime.server",))
    assert "runtime.transport.tcp" in graph and "asyncio" in graph


def test_importing_the_core_loads_no_forbidden_module() -> None:
    """The same at run time, for the modules no library the core uses would load by itself
    (attrs loads `threading`, the interpreter `time`: the AST walk covers our own imports)."""
    forbidden = tuple(f for f in FORBIDDEN if f not in ("threading", "time", "subprocess"))
    probe = (f"import sys; import {', '.join(CORE)}; forbidden = {forbidden!r}; "
             "print(sorted(m for m in sys.modules if any(m == f or m.startswith(f + '.') for f in forbidden)))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "[]", out.stdout


# -- a user's program, type-checked against the installed package ---------------------------------------------
USER_PROGRAM = '''
"""A user's program: only `runtime`'s public API and the example app."""

from __future__ import annotations

from examples.lock import Acquire, Granted, Holder, LockApp, LockCommand, LockMachine, LockResult, factory
from runtime import (
    App, CommandRejected, Config, LocalCluster, MemoryStorage, Proposed, RaftError, RaftServer, Simulation,
    StateMachine, load_app,
)


def contracts() -> None:
    machine: StateMachine[LockCommand, LockResult] = LockMachine()
    app: App[LockCommand, LockResult] = factory()
    print(machine, app, LockApp, load_app, LocalCluster, Config)


def simulate() -> int:
    sim = Simulation(nodes=3, seed=1, state_machine=LockMachine)
    sim.run(100)
    handle: Proposed[LockResult] = sim.propose(Acquire("db", "alice"))
    sim.run(50)
    locks: int = len(sim.nodes["n1"].machine.locks)
    if isinstance(handle.result, Granted):
        return handle.result.token + locks
    return -1


async def serve() -> None:
    server: RaftServer[LockCommand, LockResult] = RaftServer(
        "n1", {"n1": ("127.0.0.1", 7001)}, LockMachine(), MemoryStorage(), cluster_id="c", secret=b"s" * 32)
    try:
        result = await server.apply(Acquire("db", "alice"))
        state = await server.read(Holder("db"))
        print(result, state)
    except CommandRejected as refused:
        print(refused)
    except RaftError as error:
        print(error)
'''

BROKEN_PROGRAM = '''
from examples.lock import LockMachine
from runtime import Simulation

sim = Simulation(nodes=3, state_machine=LockMachine)
sim.propose(b"not a lock command")
token: str = sim.nodes["n1"].machine.last_token
'''


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The package as `pip install` puts it (no editable hooks): built from a copy of the
    sources and installed into a directory of its own."""
    base = tmp_path_factory.mktemp("installed")
    source = base / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    for package in PACKAGES:
        shutil.copytree(ROOT / package, source / package, ignore=shutil.ignore_patterns("__pycache__"))
    site = base / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-compile",
                    "--target", str(site), str(source)], check=True, capture_output=True, timeout=300)
    assert (site / "runtime" / "py.typed").is_file() and (site / "generated" / "py.typed").is_file()
    assert not (site / "examples").exists()
    return site


def _mypy(program_dir: Path, site: Path, *files: str) -> subprocess.CompletedProcess[str]:
    env = {key: value for key, value in os.environ.items() if key not in ("MYPYPATH", "PYTHONPATH")}
    env["PYTHONPATH"] = str(site)  # the installed package: mypy finds it as a PEP 561 package
    return subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental", "--python-executable", sys.executable,
         *files],
        cwd=program_dir, env=env, capture_output=True, text=True, timeout=600,
    )


@pytest.fixture(scope="module")
def user_program(installed: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    program = tmp_path_factory.mktemp("user")
    shutil.copytree(ROOT / "examples", program / "examples", ignore=shutil.ignore_patterns("__pycache__"))
    (program / "user.py").write_text(textwrap.dedent(USER_PROGRAM))
    (program / "broken.py").write_text(textwrap.dedent(BROKEN_PROGRAM))
    return program


def test_a_user_program_type_checks_against_the_installed_package(installed: Path, user_program: Path) -> None:
    result = _mypy(user_program, installed, "user.py", "examples")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Success" in result.stdout
    # it really was the installed copy: the repository is neither the cwd nor on the path
    assert ROOT not in user_program.parents and user_program != ROOT


def test_mypy_sees_the_library_types_in_a_users_program(installed: Path, user_program: Path) -> None:
    """The negative control: wrong commands and wrong result types are caught, so the
    library is not silently Any."""
    result = _mypy(user_program, installed, "broken.py")
    assert result.returncode == 1, result.stdout
    assert 'Argument 1 to "propose" of "Simulation" has incompatible type "bytes"' in result.stdout, result.stdout
    assert 'Incompatible types in assignment (expression has type "int", variable has type "str")' in result.stdout

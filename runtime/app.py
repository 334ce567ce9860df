"""The App contract: what `raftfsm node --app module:factory` (and `HttpApi`) need to serve
a state machine over HTTP.

A `StateMachine` (runtime/statemachine.py) says how commands are stored and executed; an
`App` adds how a client's JSON becomes a command or a query, and how a result becomes
JSON again. `factory` in `--app package.module:factory` is any callable that takes no
arguments and returns an App; every node of a cluster must run the same app.

- `state_machine()` returns a new, empty state machine (one per node process).
- `command_from_json(body)` turns the JSON body of `POST /apply` into a command, and
  `query_from_json(body)` the body of `POST /read` into a query (a command that
  `StateMachine.query` answers without changing anything). Both run on the node that
  receives the request, before anything is proposed; for input they cannot accept they
  raise `ValueError` (or `TypeError`, `KeyError`) with a message for the client, who gets
  a 400 and the certainty that nothing was applied.
- `result_to_json(result)` turns what `apply` or `query` returned into the JSON of the
  answer. It runs on the node that executed the command (the leader, for a write).

Like `apply`, these functions must not depend on the node they run on: a follower forwards
a write as the client sent it, and the leader parses it again.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from typing import Any, Protocol, TypeAlias

from runtime.errors import AppError
from runtime.statemachine import CommandT, ResultT, StateMachine

__all__ = ["JSON", "App", "AppError", "AppFactory", "load_app"]

JSON: TypeAlias = "dict[str, JSON] | list[JSON] | str | int | float | bool | None"
"""A JSON value as `json.loads` returns it and `json.dumps` accepts it."""


class App(Protocol[CommandT, ResultT]):
    """See the module docstring."""

    def state_machine(self) -> StateMachine[CommandT, ResultT]:
        """A new, empty state machine for one node."""
        ...

    def command_from_json(self, body: JSON) -> CommandT:
        """The command a `POST /apply` body stands for; ValueError for a bad one."""
        ...

    def query_from_json(self, body: JSON) -> CommandT:
        """The query a `POST /read` body stands for; ValueError for a bad one."""
        ...

    def result_to_json(self, result: ResultT) -> JSON:
        """The JSON answer for a result of `apply` or `query`."""
        ...


AppFactory: TypeAlias = Callable[[], App[Any, Any]]

_APP_METHODS = ("state_machine", "command_from_json", "query_from_json", "result_to_json")


def load_app(spec: str, app_dir: str | None = None) -> App[Any, Any]:
    """Import `package.module:factory` and call the factory. `app_dir`, if given, is put
    first on `sys.path` (as `raftfsm node --app-dir` does, default the current directory),
    so that a module next to the caller is found. Raises AppError (a ValueError) with a
    one-line reason."""
    module_name, sep, attribute = spec.partition(":")
    if not sep or not module_name or not attribute:
        raise AppError(f"--app {spec!r}: expected package.module:factory")
    if app_dir is not None and app_dir not in sys.path:
        sys.path.insert(0, app_dir)
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # ImportError, or whatever the module raised while loading
        raise AppError(f"--app {spec!r}: cannot import {module_name}: {type(exc).__name__}: {exc}") from exc
    target: Any = module
    for part in attribute.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise AppError(f"--app {spec!r}: {module_name} has no attribute {attribute!r}") from None
    if not callable(target):
        raise AppError(f"--app {spec!r}: {attribute} is not callable (it must be a factory returning an App)")
    try:
        app = target()
    except Exception as exc:
        raise AppError(f"--app {spec!r}: {attribute}() raised {type(exc).__name__}: {exc}") from exc
    missing = [name for name in _APP_METHODS if not callable(getattr(app, name, None))]
    if missing:
        raise AppError(f"--app {spec!r}: {type(app).__name__} is not an App: it lacks {', '.join(missing)}")
    return app  # type: ignore[no-any-return]

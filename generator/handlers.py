"""The spec against the handler class: missing callbacks, wrong arguments, unused methods.

`python -m generator` (and `--check`) import the handler class (`--handlers MODULE:CLASS`,
by default `runtime.consensus:Consensus`) and compare it with the spec:

- **error**, at the spec line that names it: a callback of a row or of a state's
  on_enter/on_exit that the class does not provide (with a "did you mean" for a near
  miss, the usual cause being a typo in the spec);
- **error**, at the spec line: a method that cannot take the argument the dispatcher
  passes (the event payload, or nothing for payload-less callbacks), or whose `message`
  parameter is annotated with another message type than the spec's payload;
- **warning**, at the method's own file:line: a public method of the class or of one of
  its bases that no row or state names. Methods that are not callbacks but are meant to
  be public (called by the core, or by other handlers) are listed by name in the class
  attribute `RAFT_HELPERS` (a collection of str; the lists of the class and of all its
  bases count). Names starting with `_` are private and never reported. A name listed in
  `RAFT_HELPERS` that is not a method is reported too, so the list cannot go stale.

`scaffold` prints a module with typed stubs of the missing callbacks, exactly as the
generated Protocols declare them.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import sys
import types
import typing
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from attrs import frozen

from fsm_spec.model import Callback, Spec

DEFAULT_HANDLERS = "runtime.consensus:Consensus"
HELPERS_ATTRIBUTE = "RAFT_HELPERS"
_ROW_KEYS = ("prepare", "conditions", "unless", "before", "after")
_PROJECT_ROOT = Path(__file__).resolve().parent.parent


class HandlersUnavailable(Exception):
    """The handler class could not be imported; the message says why."""


@frozen
class Finding:
    path: str
    line: int
    severity: str  # "error" | "warning"
    message: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.severity}: {self.message}"


def load_handlers(ref: str) -> type:
    """Import `MODULE:CLASS`; HandlersUnavailable says what went wrong."""
    module_name, colon, qualname = ref.partition(":")
    if not colon or not module_name or not qualname:
        raise HandlersUnavailable(f"--handlers {ref!r}: expected MODULE:CLASS, e.g. {DEFAULT_HANDLERS}")
    if str(_PROJECT_ROOT) not in sys.path:
        sys.path.append(str(_PROJECT_ROOT))
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # any failure of someone else's module is reported, not raised
        raise HandlersUnavailable(
            f"cannot import {module_name} for --handlers {ref}: {type(exc).__name__}: {exc}"
        ) from exc
    target: object = module
    for part in qualname.split("."):
        target = getattr(target, part, None)
        if target is None:
            raise HandlersUnavailable(f"{module_name} has no {qualname} (--handlers {ref})")
    if not isinstance(target, type):
        raise HandlersUnavailable(f"{ref} is not a class")
    return target


def class_name(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def display_path(path: str | None) -> str:
    if path is None:
        return "<unknown>"
    resolved = Path(path).resolve()
    try:
        return resolved.relative_to(_PROJECT_ROOT).as_posix()
    except ValueError:
        return str(resolved)


# -- where the spec names a callback ---------------------------------------------------------
def named_at(spec: Spec, name: str) -> list[tuple[int, str]]:
    """(line, what) for every row and state that names `name`, in spec order."""
    out: list[tuple[int, str]] = []
    for state in spec.states:
        for key in ("on_enter", "on_exit"):
            if name in getattr(state, key):
                out.append((state.line, f"{key} of {state.name}"))
    for row in spec.rows:
        for key in _ROW_KEYS:
            if name in getattr(row, key):
                out.append((row.line, f"{key} of {row.trigger}"))
    return sorted(out)


def _describe(spec: Spec, name: str) -> tuple[int, str]:
    """The first place that names `name`, and a phrase for it (with the other lines)."""
    places = named_at(spec, name)
    line, what = places[0]
    others = sorted({other for other, _ in places[1:] if other != line})
    if others:
        what += f"; also at line{'s' if len(others) > 1 else ''} {', '.join(map(str, others))}"
    return line, what


# -- the handler class -----------------------------------------------------------------------
def _classes(cls: type) -> Iterator[type]:
    """The class and its bases that may hold handlers (not object, not Protocols: the
    generated Protocols' stub methods implement nothing)."""
    for klass in cls.__mro__:
        if klass is object or getattr(klass, "_is_protocol", False) or klass is typing.Generic:
            continue
        yield klass


def public_methods(cls: type) -> dict[str, Callable[..., Any]]:
    """Public methods by name (the most derived definition), as plain functions."""
    out: dict[str, Callable[..., Any]] = {}
    for klass in _classes(cls):
        for name, value in vars(klass).items():
            if name.startswith("_") or name in out:
                continue
            if isinstance(value, staticmethod | classmethod):
                value = value.__func__
            if isinstance(value, types.FunctionType):
                out[name] = value
    return out


def helpers(cls: type) -> dict[str, type]:
    """Names listed in RAFT_HELPERS by the class or a base -> the class listing it."""
    out: dict[str, type] = {}
    for klass in reversed(list(_classes(cls))):
        listed = vars(klass).get(HELPERS_ATTRIBUTE, ())
        for name in [listed] if isinstance(listed, str) else listed:
            out[str(name)] = klass
    return out


def _source_line(obj: Any) -> tuple[str, int]:
    try:
        path = inspect.getsourcefile(obj)
        if isinstance(obj, types.FunctionType):
            line = obj.__code__.co_firstlineno
        else:
            line = inspect.getsourcelines(obj)[1]
    except (OSError, TypeError):
        return "<unknown>", 0
    return display_path(path), line


def _arguments_problem(cls: type, cb: Callback) -> str | None:
    """Why the dispatcher's call of `cb` would fail on `cls`, or None."""
    static = inspect.getattr_static(cls, cb.name)
    if isinstance(static, staticmethod):
        function, drop = static.__func__, 0
    elif isinstance(static, classmethod):
        function, drop = static.__func__, 1
    elif isinstance(static, types.FunctionType):
        function, drop = static, 1
    else:
        return None  # some other callable: nothing to inspect
    try:
        signature = inspect.signature(function)
    except (TypeError, ValueError):
        return None
    parameters = list(signature.parameters.values())[drop:]
    signature = signature.replace(parameters=parameters, return_annotation=inspect.Signature.empty)
    arguments = (None,) if cb.payload else ()
    try:
        signature.bind(*arguments)
    except TypeError:
        if cb.payload:
            return (f"is called with the {cb.payload} payload, but {class_name(cls)}.{cb.name}{signature} "
                    "takes no argument")
        return (f"is called with no argument (payload: none), but {class_name(cls)}.{cb.name}{signature} "
                "needs one")
    if cb.payload and parameters:
        try:
            hints = typing.get_type_hints(function)
        except Exception:  # unresolvable annotations are mypy's business
            return None
        hint = hints.get(parameters[0].name)
        if hint is None or hint is typing.Any or hint is object:
            return None
        accepted = typing.get_args(hint) if isinstance(hint, types.UnionType) or typing.get_origin(
            hint) is typing.Union else (hint,)
        names = [getattr(t, "__name__", str(t)) for t in accepted]
        if cb.payload not in names and "object" not in names:
            return (f"is called with the {cb.payload} payload, but {class_name(cls)}.{cb.name} annotates "
                    f"{parameters[0].name!r} as {' | '.join(names)}")
    return None


def check_handlers(spec: Spec, cls: type, spec_path: str) -> list[Finding]:
    """Errors (missing callbacks, wrong arguments) and warnings (unused public methods)."""
    findings: list[Finding] = []
    methods = public_methods(cls)
    names = {cb.name for cb in spec.callbacks}
    owner = class_name(cls)
    for cb in spec.callbacks:
        line, what = _describe(spec, cb.name)
        attribute = getattr(cls, cb.name, None)
        if not callable(attribute):
            close = difflib.get_close_matches(cb.name, sorted(set(methods) - names), n=1, cutoff=0.75)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            findings.append(Finding(spec_path, line, "error",
                                    f"callback {cb.name!r} ({what}) is not implemented by {owner}{hint}"))
            continue
        problem = _arguments_problem(cls, cb)
        if problem is not None:
            findings.append(Finding(spec_path, line, "error", f"callback {cb.name!r} ({what}) {problem}"))
    listed = helpers(cls)
    for name, function in sorted(methods.items()):
        if name in names or name in listed:
            continue
        path, line = _source_line(function)
        note = ""
        if name.startswith(("on_enter_", "on_exit_")):
            note = (" (the dispatcher does not bind transitions' on_enter_<state>/on_exit_<state> methods by "
                    "name: list it in the state's on_enter/on_exit)")
        findings.append(Finding(
            path, line, "warning",
            f"{owner}.{name} is public but no row or state of {spec_path} names it{note}; a misspelled "
            f"callback in the spec? if it is a helper, list it in {HELPERS_ATTRIBUTE}",
        ))
    for name, klass in sorted(listed.items()):
        if name not in methods:
            path, line = _source_line(klass)
            findings.append(Finding(path, line, "warning",
                                    f"{class_name(klass)}.{HELPERS_ATTRIBUTE} lists {name!r}, which is not a "
                                    f"public method of {owner}"))
    return findings


# -- scaffold --------------------------------------------------------------------------------
def _common_base(cls: type) -> type | None:
    """The nearest class every direct base of `cls` derives from (ConsensusBase for
    Consensus): new handlers written as a mixin of it see the same state."""
    for klass in cls.__mro__[1:]:
        if klass is object or getattr(klass, "_is_protocol", False):
            continue
        if all(issubclass(base, klass) for base in cls.__bases__) and "<" not in klass.__qualname__ \
                and klass.__module__ not in ("__main__", "builtins"):
            return klass
    return None


def scaffold(spec: Spec, cls: type | None, ref: str, spec_path: str) -> str:
    """A module of typed stubs for the callbacks `cls` lacks (every callback if None),
    pasteable as is: imports of the payload types and of the handlers' common base
    class, signatures exactly as the generated Protocols declare them."""
    missing = [cb for cb in spec.callbacks if cls is None or not callable(getattr(cls, cb.name, None))]
    if not missing:
        return f"# {ref} implements every callback of {spec_path}\n"
    base = _common_base(cls) if cls is not None else None
    payloads = sorted({cb.payload for cb in missing if cb.payload})
    imports: list[str] = []
    if payloads:
        statement = f"from generated.{spec.name}_fsm import {', '.join(payloads)}"
        if len(statement) > 120:  # ruff's isort layout beyond the project's line length
            statement = f"from generated.{spec.name}_fsm import (\n" + "".join(f"    {p},\n" for p in payloads) + ")"
        imports.append(statement)
    if base is not None:
        imports.append(f"from {base.__module__} import {base.__qualname__.split('.')[0]}")
    lines = [
        f'"""Stubs for the callbacks of {spec_path} that {ref} lacks.',
        "",
        "Save as a module next to the handlers (or paste the methods into the class of the concern",
        "they belong to) and add the class to the handler class's bases.",
        '"""',
        "",
        "from __future__ import annotations",
        "",
        *sorted(imports),
        *([""] if imports else []),
        "",
        f"class NewCallbacks{f'({base.__qualname__})' if base is not None else ''}:",
    ]
    for position, cb in enumerate(missing):
        line, what = named_at(spec, cb.name)[0]
        argument = f", message: {cb.payload}, /" if cb.payload else ""
        returns = "bool" if cb.is_guard else "None"
        if position:
            lines.append("")
        lines += [
            f"    def {cb.name}(self{argument}) -> {returns}:",
            f'        """{"Guard" if cb.is_guard else "Action"}: {what} ({spec_path}:{line})."""',
            "        raise NotImplementedError",
        ]
    return "\n".join(lines) + "\n"

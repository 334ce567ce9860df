"""A replicated lock service with fencing tokens: the example app of docs/library.md.

Commands:

- `Acquire(name, owner, ttl_ms=None, now_ms=None)`: take the lock `name` for `owner`. The
  answer is `Granted` with a **fencing token**, a number larger than every token granted
  before (for any lock). The lock is refused (`CommandRejected`, nothing changes) while
  someone holds it — its owner included: to extend a lease, release and acquire again.
- `Release(name, owner, token)`: give it back; refused unless `owner` holds it under
  `token`.
- `Holder(name, now_ms=None)`, a query: who holds `name` (`LockState`).

A client passes its token to every resource it changes under the lock, and the resource
refuses a token lower than the highest it has seen. That is what makes the lock safe even
when a holder stalls (a GC pause, a partition) past its lease and another client takes
the lock: the stale holder's writes carry the lower token and are refused.

**Leases and time.** `apply` must be deterministic — every node, and every replay of the
log after a restart, must reach the same decision — so it never reads a clock. A lease
therefore carries the time from the client side: `Acquire` with `ttl_ms` must also carry
`now_ms` (the client's clock, milliseconds since the epoch); the lease expires at
`now_ms + ttl_ms`, and a later `Acquire` whose `now_ms` is at or past that may take the
lock. Expiry is thus only as trustworthy as the clients' clocks; the fencing token is what
protects the resource regardless. Without `ttl_ms` a lock is held until it is released.

`factory` makes the App (runtime/app.py) that `raftfsm node --app examples.lock:factory`
serves: `POST /apply` with `{"op": "acquire", "name": ..., "owner": ..., "ttl_ms": ...,
"now_ms": ...}` or `{"op": "release", "name": ..., "owner": ..., "token": ...}`, and
`POST /read` with `{"op": "holder", "name": ...}` (optionally `"now_ms"`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from attrs import frozen

from runtime import JSON, CommandRejected

__all__ = [
    "Acquire",
    "Granted",
    "Holder",
    "LockApp",
    "LockCommand",
    "LockMachine",
    "LockResult",
    "LockState",
    "Release",
    "Released",
    "factory",
]

MAX_INT = (1 << 63) - 1
"""Times, TTLs and tokens are at most this (they must survive JSON and msgpack anywhere)."""
MAX_NAME = 256
"""Longest lock name or owner, in characters."""


# -- commands and results --------------------------------------------------------------------------
@frozen
class Acquire:
    name: str
    owner: str
    ttl_ms: int | None = None
    now_ms: int | None = None


@frozen
class Release:
    name: str
    owner: str
    token: int


@frozen
class Holder:
    """A query; with `now_ms`, an expired lease is reported as free."""

    name: str
    now_ms: int | None = None


LockCommand = Acquire | Release | Holder


@frozen
class Granted:
    name: str
    token: int
    expires_ms: int | None


@frozen
class Released:
    name: str
    token: int


@frozen
class LockState:
    """Who holds `name`: `owner` and `token` are None when it is free."""

    name: str
    owner: str | None
    token: int | None
    expires_ms: int | None


LockResult = Granted | Released | LockState


@frozen
class _Lease:
    owner: str
    token: int
    expires_ms: int | None

    def expired(self, now_ms: int | None) -> bool:
        return self.expires_ms is not None and now_ms is not None and now_ms >= self.expires_ms


# -- the state machine -----------------------------------------------------------------------------
class LockMachine:
    """The locks and the last fencing token; implements runtime.StateMachine[LockCommand, LockResult]."""

    def __init__(self) -> None:
        self.locks: dict[str, _Lease] = {}
        self.last_token = 0

    def apply(self, command: LockCommand) -> LockResult:
        if isinstance(command, Acquire):
            return self._acquire(command)
        if isinstance(command, Release):
            return self._release(command)
        return self.query(command)  # a read through the log

    def _acquire(self, command: Acquire) -> Granted:
        _check_names(command.name, command.owner)
        now, ttl = command.now_ms, command.ttl_ms
        if now is not None and not 0 <= now <= MAX_INT:
            raise CommandRejected("now_ms must be a time in milliseconds since the epoch")
        if ttl is not None:
            if now is None:
                raise CommandRejected("a lease (ttl_ms) needs now_ms, the client's clock: apply never reads one")
            if not 0 < ttl <= MAX_INT - now:
                raise CommandRejected(f"ttl_ms must be positive, and now_ms + ttl_ms at most {MAX_INT}")
        lease = self.locks.get(command.name)
        if lease is not None and not lease.expired(command.now_ms):
            raise CommandRejected(f"lock {command.name!r} is held by {lease.owner!r} (token {lease.token})")
        # every check passed: only now change anything (a refusal must leave no trace)
        self.last_token += 1
        expires = None if ttl is None or now is None else now + ttl
        self.locks[command.name] = _Lease(command.owner, self.last_token, expires)
        return Granted(command.name, self.last_token, expires)

    def _release(self, command: Release) -> Released:
        lease = self.locks.get(command.name)
        if lease is None or (lease.owner, lease.token) != (command.owner, command.token):
            holder = "nobody" if lease is None else f"{lease.owner!r} (token {lease.token})"
            raise CommandRejected(f"lock {command.name!r} is not held by {command.owner!r} with token "
                                  f"{command.token}; it is held by {holder}")
        del self.locks[command.name]
        return Released(command.name, command.token)

    def query(self, command: LockCommand) -> LockResult:
        if not isinstance(command, Holder):
            raise CommandRejected(f"{type(command).__name__} is not a query")
        lease = self.locks.get(command.name)
        if lease is None or lease.expired(command.now_ms):
            return LockState(command.name, None, None, None)
        return LockState(command.name, lease.owner, lease.token, lease.expires_ms)

    # -- bytes: the log, client sessions, snapshots --------------------------------------------------
    def encode(self, command: LockCommand) -> bytes:
        if isinstance(command, Acquire):
            fields: list[Any] = ["acquire", command.name, command.owner, command.ttl_ms, command.now_ms]
        elif isinstance(command, Release):
            fields = ["release", command.name, command.owner, command.token]
        else:
            fields = ["holder", command.name, command.now_ms]
        return json.dumps(fields).encode()

    def decode(self, data: bytes) -> LockCommand:
        match json.loads(data):
            case ["acquire", str(name), str(owner), (int() | None) as ttl_ms, (int() | None) as now_ms]:
                return Acquire(name, owner, ttl_ms, now_ms)
            case ["release", str(name), str(owner), int(token)]:
                return Release(name, owner, token)
            case ["holder", str(name), (int() | None) as now_ms]:
                return Holder(name, now_ms)
        raise ValueError("not a lock command")

    def encode_result(self, result: LockResult) -> bytes:
        if isinstance(result, Granted):
            fields: list[Any] = ["granted", result.name, result.token, result.expires_ms]
        elif isinstance(result, Released):
            fields = ["released", result.name, result.token]
        else:
            fields = ["state", result.name, result.owner, result.token, result.expires_ms]
        return json.dumps(fields).encode()

    def decode_result(self, data: bytes) -> LockResult:
        match json.loads(data):
            case ["granted", str(name), int(token), (int() | None) as expires]:
                return Granted(name, token, expires)
            case ["released", str(name), int(token)]:
                return Released(name, token)
            case ["state", str(name), (str() | None) as owner, (int() | None) as token, (int() | None) as expires]:
                return LockState(name, owner, token, expires)
        raise ValueError("not a lock result")

    def snapshot(self) -> bytes:
        locks = {name: [lease.owner, lease.token, lease.expires_ms] for name, lease in sorted(self.locks.items())}
        return json.dumps({"last_token": self.last_token, "locks": locks}).encode()

    def restore(self, data: bytes) -> None:
        state = json.loads(data)
        self.last_token = int(state["last_token"])
        self.locks = {name: _Lease(str(owner), int(token), None if expires is None else int(expires))
                      for name, (owner, token, expires) in state["locks"].items()}


def _check_names(*names: str) -> None:
    for name in names:
        if not 0 < len(name) <= MAX_NAME:
            raise CommandRejected(f"names and owners have 1 to {MAX_NAME} characters, not {len(name)}")


# -- the App: JSON in and out ----------------------------------------------------------------------
class LockApp:
    """What `raftfsm node --app examples.lock:factory` serves (runtime.App[LockCommand, LockResult])."""

    def state_machine(self) -> LockMachine:
        return LockMachine()

    def command_from_json(self, body: JSON) -> LockCommand:
        fields = _object(body)
        op = fields.get("op")
        if op == "acquire":
            return Acquire(_text(fields, "name"), _text(fields, "owner"), _integer(fields, "ttl_ms"),
                           _integer(fields, "now_ms"))
        if op == "release":
            return Release(_text(fields, "name"), _text(fields, "owner"), _required_integer(fields, "token"))
        if op == "holder":
            return self.query_from_json(body)
        raise ValueError(f'"op" must be "acquire" or "release" (or "holder"), not {op!r:.40}')

    def query_from_json(self, body: JSON) -> LockCommand:
        fields = _object(body)
        if fields.get("op", "holder") != "holder":
            raise ValueError(f'a query is {{"op": "holder", "name": ...}}, not "op": {fields["op"]!r:.40}')
        return Holder(_text(fields, "name"), _integer(fields, "now_ms"))

    def result_to_json(self, result: LockResult) -> JSON:
        if isinstance(result, Granted):
            return {"name": result.name, "token": result.token, "expires_ms": result.expires_ms}
        if isinstance(result, Released):
            return {"name": result.name, "released": True, "token": result.token}
        return {"name": result.name, "owner": result.owner, "token": result.token, "expires_ms": result.expires_ms}


def factory() -> LockApp:
    """`--app examples.lock:factory`."""
    return LockApp()


def _object(body: JSON) -> Mapping[str, JSON]:
    if not isinstance(body, dict):
        raise ValueError("the body must be a JSON object")
    return body


def _text(fields: Mapping[str, JSON], name: str) -> str:
    value = fields.get(name)
    if not isinstance(value, str) or not 0 < len(value) <= MAX_NAME:
        raise ValueError(f'"{name}" must be a string of 1 to {MAX_NAME} characters')
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(f'"{name}" is not valid Unicode') from None
    return value


def _integer(fields: Mapping[str, JSON], name: str) -> int | None:
    """An optional integer field: absent or null is None."""
    return None if fields.get(name) is None else _required_integer(fields, name)


def _required_integer(fields: Mapping[str, JSON], name: str) -> int:
    value = fields.get(name)
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_INT:
        raise ValueError(f'"{name}" must be an integer from 0 to {MAX_INT}')
    return value

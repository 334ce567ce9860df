"""The replicated key-value store: the default application of raftfsm.

Commands and results are small msgpack arrays. Writes go through the log; a `Get` is
answered by `query` after a ReadIndex round (linearizable without a log write), or through
the log like a write when a caller asks for that.

`KVApp` (made by `factory`, the default of `raftfsm node --app`) is its App: the JSON of
the generic endpoints, `{"op": "put", "key": K, "value": V}`, `{"op": "delete", "key": K}`,
`{"op": "cas", "key": K, "expected": OLD or null, "value": V}` and, for reads,
`{"op": "get", "key": K}`; every result is `{"ok": bool, "value": str or null}`. The
`/kv/...` routes of `KVHttpApi` (docs/kv.md) are a thin layer over the same commands.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgpack
from attrs import frozen

from runtime.app import JSON


@frozen
class Put:
    key: str
    value: str


@frozen
class Get:
    key: str


@frozen
class Delete:
    key: str


@frozen
class CompareAndSet:
    """Set `key` to `value` only if it currently holds `expected` (None: absent)."""

    key: str
    expected: str | None
    value: str


KVCommand = Put | Get | Delete | CompareAndSet


@frozen
class KVResult:
    """`value` is the value after the operation (Get, Put, CAS) or the removed value
    (Delete); `ok` is False only for a failed compare-and-set or deleting a missing key."""

    ok: bool
    value: str | None


class KVStateMachine:
    """A dict of str -> str implementing runtime.statemachine.StateMachine."""

    def __init__(self) -> None:
        self.data: dict[str, str] = {}

    def encode(self, command: KVCommand) -> bytes:
        if isinstance(command, Put):
            return msgpack.packb(["put", command.key, command.value])  # type: ignore[no-any-return]
        if isinstance(command, Get):
            return msgpack.packb(["get", command.key])  # type: ignore[no-any-return]
        if isinstance(command, Delete):
            return msgpack.packb(["del", command.key])  # type: ignore[no-any-return]
        return msgpack.packb(["cas", command.key, command.expected, command.value])  # type: ignore[no-any-return]

    def decode(self, data: bytes) -> KVCommand:
        fields: Any = msgpack.unpackb(data)
        match fields:
            case ["put", str(key), str(value)]:
                return Put(key, value)
            case ["get", str(key)]:
                return Get(key)
            case ["del", str(key)]:
                return Delete(key)
            case ["cas", str(key), (str() | None) as expected, str(value)]:
                return CompareAndSet(key, expected, value)
        raise ValueError(f"not a key-value command: {fields!r}")

    def apply(self, command: KVCommand) -> KVResult:
        data = self.data
        if isinstance(command, Put):
            data[command.key] = command.value
            return KVResult(True, command.value)
        if isinstance(command, Get):
            return KVResult(command.key in data, data.get(command.key))
        if isinstance(command, Delete):
            removed = data.pop(command.key, None)
            return KVResult(removed is not None, removed)
        if data.get(command.key) != command.expected:
            return KVResult(False, data.get(command.key))
        data[command.key] = command.value
        return KVResult(True, command.value)

    def query(self, command: KVCommand) -> KVResult:
        if not isinstance(command, Get):
            raise ValueError(f"{type(command).__name__} is not a read")
        data = self.data
        return KVResult(command.key in data, data.get(command.key))

    def encode_result(self, result: KVResult) -> bytes:
        return msgpack.packb([result.ok, result.value])  # type: ignore[no-any-return]

    def decode_result(self, data: bytes) -> KVResult:
        match msgpack.unpackb(data):
            case [bool(ok), (str() | None) as value]:
                return KVResult(ok, value)
        raise ValueError("not a key-value result")

    def snapshot(self) -> bytes:
        return msgpack.packb(self.data)  # type: ignore[no-any-return]

    def restore(self, data: bytes) -> None:
        restored = msgpack.unpackb(data)
        if not isinstance(restored, dict):
            raise ValueError("not a key-value snapshot")
        self.data = restored


class KVApp:
    """The key-value store as an App (runtime/app.py); see the module docstring."""

    def state_machine(self) -> KVStateMachine:
        return KVStateMachine()

    def command_from_json(self, body: JSON) -> KVCommand:
        fields = _object(body)
        op = fields.get("op")
        key = _text(fields, "key")
        if op == "get":
            return Get(key)
        if op == "delete":
            return Delete(key)
        if op == "put":
            return Put(key, _text(fields, "value"))
        if op == "cas":
            if "expected" not in fields:
                raise ValueError('"cas" needs "expected": a string, or null for "the key must be absent"')
            expected = None if fields["expected"] is None else _text(fields, "expected")
            return CompareAndSet(key, expected, _text(fields, "value"))
        raise ValueError(f'"op" must be "put", "delete", "cas" or "get", not {op!r:.40}')

    def query_from_json(self, body: JSON) -> KVCommand:
        fields = _object(body)
        if fields.get("op", "get") != "get":
            raise ValueError(f'a read is {{"op": "get", "key": ...}}, not "op": {fields["op"]!r:.40}')
        return Get(_text(fields, "key"))

    def result_to_json(self, result: KVResult) -> JSON:
        return {"ok": result.ok, "value": result.value}


def factory() -> KVApp:
    """The default `--app`: `runtime.kv:factory`."""
    return KVApp()


def _object(body: JSON) -> Mapping[str, JSON]:
    if not isinstance(body, dict):
        raise ValueError("the body must be a JSON object")
    return body


def _text(fields: Mapping[str, JSON], name: str) -> str:
    value = fields.get(name)
    if not isinstance(value, str):
        raise ValueError(f'"{name}" must be a string')
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:  # JSON can carry lone surrogates (\ud800)
        raise ValueError(f'"{name}" is not valid Unicode: {exc.reason} at position {exc.start}') from None
    return value

"""The replicated key-value store: the default application of raftfsm.

Commands and results are small msgpack arrays. Writes go through the log; a `Get` is
answered by `query` after a ReadIndex round (linearizable without a log write), or through
the log like a write when a caller asks for that.
"""

from __future__ import annotations

from typing import Any

import msgpack
from attrs import frozen


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

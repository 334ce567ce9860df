"""The replicated key-value store: the example application of raftfsm.

Commands are small msgpack arrays; every operation, reads included, goes through the log,
so a read returns the latest committed value (linearizable) at the price of a round trip.
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

    def snapshot(self) -> bytes:
        return msgpack.packb(self.data)  # type: ignore[no-any-return]

    def restore(self, data: bytes) -> None:
        restored = msgpack.unpackb(data)
        if not isinstance(restored, dict):
            raise ValueError("not a key-value snapshot")
        self.data = restored

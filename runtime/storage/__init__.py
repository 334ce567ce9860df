"""Durable homes for a node's log, hard state and snapshot: SQLite by default, memory for
tests and the simulator."""

from runtime.storage.base import CorruptStorage, Storage, StorageError
from runtime.storage.memory import MemoryStorage
from runtime.storage.sqlite import SqliteStorage

__all__ = ["CorruptStorage", "MemoryStorage", "SqliteStorage", "Storage", "StorageError"]

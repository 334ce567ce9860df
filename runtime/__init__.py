"""raftfsm: Raft consensus for Python, with the roles declared as a finite-state machine.

The public API is what this package exports (`__all__`); everything else is internal and
may change. A tour:

- `RaftServer` runs one node on the network (asyncio) around your `StateMachine`;
  `SqliteStorage` (or `MemoryStorage`) keeps its log, `TlsConfig` or a cluster secret
  (`load_secret`) authenticates its peers.
- `App` adds the JSON mapping that `raftfsm node --app module:factory` and `HttpApi` need to
  serve a state machine over HTTP; `KVApp`/`KVStateMachine` are the default application,
  a key-value store, served by `KVHttpApi`.
- `Simulation` (and `run_seed`) runs nodes deterministically, with faults and safety
  checkers; `LocalCluster` runs real node processes on this machine.
- `RaftCore` is the node without I/O, for writing another driver.
- Every exception raftfsm raises on purpose derives from `RaftError` (`runtime.errors`).

The errors are imported with the package; every other name is imported on first use, so
`import runtime` stays cheap (the HTTP API alone pulls in aiohttp).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from runtime.errors import (
    AppError,
    ApplyTimeout,
    ClusterError,
    CommandRejected,
    ConfigurationError,
    CorruptStorage,
    FrameError,
    InvalidEvent,
    InvariantViolation,
    MembershipChangeRefused,
    MissingCallbacks,
    NodeHalted,
    NoLeader,
    NotLeader,
    OutcomeUnknown,
    Overloaded,
    ProposalDropped,
    RaftError,
    ReadRefused,
    SecretError,
    SessionExpired,
    StaleCommand,
    StateMachineFailed,
    StorageError,
)

if TYPE_CHECKING:
    from generated.raft_fsm import Role
    from runtime.app import JSON, App, load_app
    from runtime.cluster import LocalCluster
    from runtime.consensus import Config
    from runtime.core import RaftCore
    from runtime.http import HttpApi, KVHttpApi
    from runtime.kv import KVApp, KVStateMachine
    from runtime.membership import Configuration, Member
    from runtime.ready import Ready
    from runtime.server import RaftServer
    from runtime.sim import Proposed, Simulation, run_seed
    from runtime.statemachine import StateMachine
    from runtime.storage import MemoryStorage, SqliteStorage, Storage
    from runtime.transport.auth import load_secret
    from runtime.transport.tcp import TlsConfig

_LAZY: dict[str, str] = {
    "App": "runtime.app",
    "Configuration": "runtime.membership",
    "Member": "runtime.membership",
    "JSON": "runtime.app",
    "load_app": "runtime.app",
    "Config": "runtime.consensus",
    "HttpApi": "runtime.http",
    "KVApp": "runtime.kv",
    "KVHttpApi": "runtime.http",
    "KVStateMachine": "runtime.kv",
    "LocalCluster": "runtime.cluster",
    "MemoryStorage": "runtime.storage",
    "Proposed": "runtime.sim",
    "RaftCore": "runtime.core",
    "RaftServer": "runtime.server",
    "Ready": "runtime.ready",
    "Role": "generated.raft_fsm",
    "Simulation": "runtime.sim",
    "SqliteStorage": "runtime.storage",
    "StateMachine": "runtime.statemachine",
    "Storage": "runtime.storage",
    "TlsConfig": "runtime.transport.tcp",
    "load_secret": "runtime.transport.auth",
    "run_seed": "runtime.sim",
}

__all__ = [
    "JSON",
    "App",
    "AppError",
    "ApplyTimeout",
    "ClusterError",
    "CommandRejected",
    "Config",
    "Configuration",
    "ConfigurationError",
    "CorruptStorage",
    "FrameError",
    "HttpApi",
    "InvalidEvent",
    "InvariantViolation",
    "KVApp",
    "KVHttpApi",
    "KVStateMachine",
    "LocalCluster",
    "Member",
    "MembershipChangeRefused",
    "MemoryStorage",
    "MissingCallbacks",
    "NoLeader",
    "NodeHalted",
    "NotLeader",
    "OutcomeUnknown",
    "Overloaded",
    "ProposalDropped",
    "Proposed",
    "RaftCore",
    "RaftError",
    "RaftServer",
    "ReadRefused",
    "Ready",
    "Role",
    "SecretError",
    "SessionExpired",
    "Simulation",
    "SqliteStorage",
    "StaleCommand",
    "StateMachine",
    "StateMachineFailed",
    "Storage",
    "StorageError",
    "TlsConfig",
    "load_app",
    "load_secret",
    "run_seed",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'runtime' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # the next access is a plain lookup
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))

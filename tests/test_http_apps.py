"""The generic HTTP endpoints (`HttpApi`: POST /apply, POST /read, POST /sessions, GET /status)
for an app other than the key-value store, with the same outcome rules; and the key-value
store's own App behind the same endpoints. One-node RaftServers on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Awaitable, Callable
from typing import Any

from runtime.app import JSON
from runtime.cluster import free_ports, http_json
from runtime.errors import CommandRejected
from runtime.http import HttpApi, KVHttpApi
from runtime.kv import KVStateMachine
from runtime.server import RaftServer
from runtime.storage import MemoryStorage

Answer = tuple[int, dict[str, Any], dict[str, str]]


class Counter:
    """A counter whose commands are names: "add" adds one; "refuse" is refused; "bad-result"
    adds one but its result cannot become JSON; "boom" as a query fails."""

    def __init__(self) -> None:
        self.value = 0

    def encode(self, command: str) -> bytes:
        return command.encode()

    def decode(self, data: bytes) -> str:
        return data.decode()

    def apply(self, command: str) -> int:
        if command == "refuse":
            raise CommandRejected("refused on purpose")
        self.value += 1
        return -self.value if command == "bad-result" else self.value

    def query(self, command: str) -> int:
        if command == "boom":
            raise RuntimeError("a bug in query")
        if command == "refuse":
            raise CommandRejected("not a query")
        return self.value

    def encode_result(self, result: int) -> bytes:
        return str(result).encode()

    def decode_result(self, data: bytes) -> int:
        return int(data)

    def snapshot(self) -> bytes:
        return str(self.value).encode()

    def restore(self, data: bytes) -> None:
        self.value = int(data)


class CounterApp:
    def state_machine(self) -> Counter:
        return Counter()

    def command_from_json(self, body: JSON) -> str:
        if not isinstance(body, dict):
            raise ValueError("send an object")
        if body.get("crash"):
            raise RuntimeError("a bug in command_from_json")
        name = body["name"]  # KeyError: the client's 400
        if not isinstance(name, str):
            raise TypeError("name must be a string")
        return name

    def query_from_json(self, body: JSON) -> str:
        return self.command_from_json(body)

    def result_to_json(self, result: int) -> JSON:
        if result < 0:
            raise ValueError("negative results cannot be shown")
        return {"count": result}


async def one_node(api_of: Callable[[RaftServer[Any, Any]], HttpApi[Any, Any]], machine: Any,
                   body: Callable[[str], Awaitable[None]]) -> None:
    raft_port, = free_ports(1)
    server: RaftServer[Any, Any] = RaftServer("n1", {"n1": ("127.0.0.1", raft_port)}, machine, MemoryStorage(),
                                              cluster_id="t", secret=os.urandom(32))
    await server.start()
    api = api_of(server)
    try:
        await server.wait_for_leader(timeout=10)
        await api.start("127.0.0.1", 0)
        assert api.address is not None
        await body(f"http://127.0.0.1:{api.address[1]}")
    finally:
        await api.stop()
        await server.stop()


async def call(method: str, url: str, body: object = None, raw: bytes | None = None,
               headers: dict[str, str] | None = None) -> Answer:
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    return await asyncio.to_thread(http_json, method, url, data, timeout=10, headers=headers)


def test_the_generic_endpoints_follow_the_outcome_rules() -> None:
    async def body(base: str) -> None:
        code, answer, headers = await call("POST", f"{base}/apply", {"name": "add"})
        assert (code, answer) == (200, {"result": {"count": 1}})
        assert headers["X-Raft-Outcome"] == "applied" and headers["X-Raft-Leader"] == "n1"

        for raw, reason in ((b"{", "not valid JSON"), (b'{"name": NaN}', "NaN is not a JSON value"),
                            (b"[1]", "send an object"), (b"{}", "missing 'name'"),
                            (b'{"name": 3}', "name must be a string")):
            code, answer, headers = await call("POST", f"{base}/apply", raw=raw)
            assert code == 400 and headers["X-Raft-Outcome"] == "not-applied", (raw, answer)
            assert reason in answer["error"], (raw, answer)
        code, answer, headers = await call("POST", f"{base}/apply", {"crash": True})
        assert code == 500 and headers["X-Raft-Outcome"] == "not-applied" and "nothing was applied" in answer["error"]

        code, answer, headers = await call("POST", f"{base}/apply", {"name": "refuse"})
        assert code == 422 and headers["X-Raft-Outcome"] == "not-applied" and "refused on purpose" in answer["error"]

        # applied, but the result cannot be shown: a 500 that still says "applied"
        code, answer, headers = await call("POST", f"{base}/apply", {"name": "bad-result"})
        assert code == 500 and headers["X-Raft-Outcome"] == "applied", answer
        assert "the command was applied" in answer["error"]

        code, answer, headers = await call("POST", f"{base}/read", {"name": "count"})
        assert (code, answer) == (200, {"result": {"count": 2}}) and headers["X-Raft-Outcome"] == "applied"
        code, answer, _ = await call("POST", f"{base}/read?read=log", {"name": "add"})
        assert (code, answer) == (200, {"result": {"count": 3}}), "read=log goes through the log (apply)"
        code, answer, headers = await call("POST", f"{base}/read", {"name": "refuse"})
        assert code == 422 and headers["X-Raft-Outcome"] == "not-applied", answer
        code, answer, headers = await call("POST", f"{base}/read", {"name": "boom"})
        assert code == 500 and headers["X-Raft-Outcome"] == "not-applied", answer
        code, answer, _ = await call("POST", f"{base}/read?read=maybe", {"name": "count"})
        assert code == 400 and "read=" in answer["error"]
        code, answer, _ = await call("GET", f"{base}/apply")
        assert code == 405

        code, answer, _ = await call("GET", f"{base}/status")
        assert code == 200 and answer["app"] == "tests.test_http_apps.CounterApp" and answer["role"] == "leader"

    asyncio.run(one_node(lambda server: HttpApi(server, CounterApp()), Counter(), body))


def test_apply_with_a_session_applies_once() -> None:
    async def body(base: str) -> None:
        code, answer, _ = await call("POST", f"{base}/sessions", raw=b"")
        assert code == 201
        session = {"X-Raft-Session": str(answer["session"]), "X-Raft-Sequence": "1",
                   "Content-Type": "application/json"}
        first = await call("POST", f"{base}/apply", {"name": "add"}, headers=session)
        again = await call("POST", f"{base}/apply", {"name": "add"}, headers=session)
        assert first[:2] == again[:2] == (200, {"result": {"count": 1}})
        code, answer, _ = await call("POST", f"{base}/read", {"name": "count"})
        assert answer == {"result": {"count": 1}}, "the retry was applied again"
        code, answer, headers = await call("POST", f"{base}/apply", {"name": "add"},
                                           headers={"X-Raft-Sequence": "2"})
        assert code == 400 and headers["X-Raft-Outcome"] == "not-applied"

    asyncio.run(one_node(lambda server: HttpApi(server, CounterApp()), Counter(), body))


def test_a_token_protects_the_generic_endpoints_too() -> None:
    async def body(base: str) -> None:
        code, _, headers = await call("POST", f"{base}/apply", {"name": "add"})
        assert code == 401 and headers["X-Raft-Outcome"] == "not-applied"
        code, answer, _ = await call("POST", f"{base}/apply", {"name": "add"},
                                     headers={"Authorization": "Bearer secret-token"})
        assert (code, answer) == (200, {"result": {"count": 1}})

    asyncio.run(one_node(lambda server: HttpApi(server, CounterApp(), token="secret-token"), Counter(), body))


def test_the_key_value_store_is_the_default_app_behind_the_same_endpoints() -> None:
    async def body(base: str) -> None:
        code, answer, _ = await call("POST", f"{base}/apply", {"op": "put", "key": "a/b", "value": "1"})
        assert (code, answer) == (200, {"result": {"ok": True, "value": "1"}})
        code, answer, _ = await call("GET", f"{base}/kv/a%2Fb")
        assert (code, answer) == (200, {"key": "a/b", "value": "1"})
        code, answer, _ = await call("POST", f"{base}/apply", {"op": "cas", "key": "a/b", "expected": None,
                                                               "value": "2"})
        assert (code, answer) == (200, {"result": {"ok": False, "value": "1"}})
        code, answer, _ = await call("POST", f"{base}/read", {"op": "get", "key": "a/b"})
        assert (code, answer) == (200, {"result": {"ok": True, "value": "1"}})
        code, answer, _ = await call("POST", f"{base}/apply", {"op": "delete", "key": "a/b"})
        assert (code, answer) == (200, {"result": {"ok": True, "value": "1"}})
        code, answer, _ = await call("POST", f"{base}/read", {"key": "a/b"})
        assert (code, answer) == (200, {"result": {"ok": False, "value": None}})
        for bad in ({"op": "put", "key": "k"}, {"op": "cas", "key": "k", "value": "v"}, {"op": "get"},
                    {"op": "put", "key": "k", "value": "\ud800"}, {"op": "move", "key": "k"}):
            code, answer, headers = await call("POST", f"{base}/apply", raw=json.dumps(bad).encode())
            assert code == 400 and headers["X-Raft-Outcome"] == "not-applied", (bad, answer)
        code, answer, _ = await call("POST", f"{base}/read", {"op": "put", "key": "k", "value": "v"})
        assert code == 400, answer
        code, answer, _ = await call("GET", f"{base}/status")
        assert answer["app"] == "runtime.kv:factory"

    asyncio.run(one_node(lambda server: KVHttpApi(server), KVStateMachine(), body))

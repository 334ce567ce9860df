"""The HTTP JSON API of one key-value node (aiohttp).

Every operation, reads included, goes through the Raft log (`RaftServer.apply`), so any
answer is linearizable. A follower does not redirect: it forwards the request to the
leader it knows of and relays the answer, so a client may talk to any node (see
docs/kv.md for why). Forwarding is one hop at most: a forwarded request carries
`X-Raft-Forwarded-By`, and a node that receives one but is not the leader answers 503
instead of forwarding again, so two nodes with stale views cannot bounce a request
between them.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any, Final

import aiohttp
from aiohttp import web

from runtime.errors import NodeHalted, NotLeader
from runtime.kv import CompareAndSet, Delete, Get, KVCommand, KVResult, Put
from runtime.server import ApplyTimeout, ProposalDropped, RaftServer

__all__ = ["FORWARDED_HEADER", "LEADER_HEADER", "MAX_BODY", "KVHttpApi"]

LEADER_HEADER: Final = "X-Raft-Leader"
"""On every answer to a key-value request: the id of the leader that served it."""
FORWARDED_HEADER: Final = "X-Raft-Forwarded-By"
"""Set by a follower on the request it forwards to the leader; holds the follower's id."""
MAX_BODY: Final = 1 << 20
"""Largest accepted request body (1 MiB); larger requests get 413."""
RETRY_AFTER: Final = "1"

_HOP_BY_HOP: Final = frozenset({
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailers",
    "transfer-encoding", "upgrade", "content-length", "host",
})


Answer = Callable[[KVCommand, KVResult], web.Response]


class BadRequest(Exception):
    """The client sent something the API cannot turn into a command."""


def _error(status: int, message: str, *, retry: bool = False, **extra: object) -> web.Response:
    body: dict[str, object] = {"error": message, **extra}
    headers = {"Retry-After": RETRY_AFTER} if retry else None
    return web.json_response(body, status=status, headers=headers)


class KVHttpApi:
    """Serves `server`'s key-value store over HTTP. `start(host, port)` binds the listener;
    `stop()` closes it (call it before stopping the RaftServer)."""

    def __init__(
        self,
        server: RaftServer[KVCommand, KVResult],
        *,
        apply_timeout: float = 5.0,
        logger: logging.Logger | None = None,
    ) -> None:
        self.server = server
        self.apply_timeout = apply_timeout
        self.log = logger or logging.getLogger(f"raftfsm.http.{server.node_id}")
        self.app = web.Application(client_max_size=MAX_BODY)
        self.app.add_routes([
            web.get("/status", self._status),
            web.post("/kv/{key}/cas", self._cas),
            web.put("/kv/{key}", self._put),
            web.get("/kv/{key}", self._get),
            web.delete("/kv/{key}", self._delete),
        ])
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self.address: tuple[str, int] | None = None

    async def start(self, host: str, port: int) -> None:
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=self.apply_timeout + 2.0, connect=1.0),
            auto_decompress=False,
        )
        self._runner = web.AppRunner(self.app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port, shutdown_timeout=1.0)
        try:
            await site.start()
        except BaseException:
            await self.stop()
            raise
        bound = self._runner.addresses
        self.address = (bound[0][0], bound[0][1]) if bound else (host, port)
        self.log.info("node %s: HTTP API on http://%s:%s", self.server.node_id, *self.address)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._session is not None:
            await self._session.close()
            self._session = None

    # -- handlers ------------------------------------------------------------------------------
    async def _status(self, request: web.Request) -> web.Response:
        status = self.server.status()
        host, port = self.server.peers[self.server.node_id]
        status["raft_address"] = f"{host}:{port}"
        return web.json_response(status)

    async def _put(self, request: web.Request) -> web.Response:
        key = request.match_info["key"]
        try:
            value = await self._value(request)
        except BadRequest as exc:
            return _error(400, str(exc))
        return await self._execute(request, Put(key, value), self._value_answer)

    async def _get(self, request: web.Request) -> web.Response:
        return await self._execute(request, Get(request.match_info["key"]), self._value_answer)

    async def _delete(self, request: web.Request) -> web.Response:
        return await self._execute(request, Delete(request.match_info["key"]), self._value_answer)

    async def _cas(self, request: web.Request) -> web.Response:
        key = request.match_info["key"]
        try:
            body = await self._json_object(request)
            if "value" not in body or not isinstance(body["value"], str):
                raise BadRequest('compare-and-set needs "value": a string')
            expected = body.get("expected", ...)
            if expected is not None and not isinstance(expected, str):
                raise BadRequest('compare-and-set needs "expected": a string, or null for "the key must be absent"')
        except BadRequest as exc:
            return _error(400, str(exc))

        def answer(command: KVCommand, result: KVResult) -> web.Response:
            return web.json_response({"key": key, "ok": result.ok, "value": result.value})

        return await self._execute(request, CompareAndSet(key, expected, body["value"]), answer)

    # -- helpers ----------------------------------------------------------------------------------
    @staticmethod
    def _value_answer(command: KVCommand, result: KVResult) -> web.Response:
        if isinstance(command, (Get, Delete)) and not result.ok:
            return web.json_response({"error": "not found", "key": command.key}, status=404)
        return web.json_response({"key": command.key, "value": result.value})

    async def _json_object(self, request: web.Request) -> dict[str, Any]:
        try:
            body = json.loads(await request.text())
        except (ValueError, UnicodeDecodeError) as exc:
            raise BadRequest(f"the body is not valid JSON: {exc}") from None
        if not isinstance(body, dict):
            raise BadRequest("the body must be a JSON object")
        return body

    async def _value(self, request: web.Request) -> str:
        """A JSON body `{"value": "..."}` when the content type says JSON, else the raw text."""
        if request.content_type == "application/json":
            body = await self._json_object(request)
            if "value" not in body or not isinstance(body["value"], str):
                raise BadRequest('a JSON body must be {"value": "<string>"}')
            value: str = body["value"]
            return value
        try:
            return (await request.read()).decode(request.charset or "utf-8")
        except (UnicodeDecodeError, LookupError) as exc:
            raise BadRequest(f"the value is not text in {request.charset or 'utf-8'}: {exc}") from None

    async def _execute(
        self,
        request: web.Request,
        command: KVCommand,
        answer: Answer,
    ) -> web.Response:
        server = self.server
        try:
            result = await server.apply(command, timeout=self.apply_timeout)
        except NotLeader as exc:
            return await self._forward(request, exc)
        except NodeHalted as exc:
            return _error(503, str(exc), node=server.node_id, role="error")
        except ProposalDropped as exc:
            return _error(503, f"{exc}; retry", retry=True, node=server.node_id)
        except ApplyTimeout as exc:
            return _error(504, f"{exc}; the command may still be applied", node=server.node_id)
        response: web.Response = answer(command, result)
        response.headers[LEADER_HEADER] = server.node_id
        return response

    async def _forward(self, request: web.Request, not_leader: NotLeader) -> web.Response:
        server = self.server
        leader, address = not_leader.leader_id, not_leader.leader_address
        if leader is None or address is None:
            return _error(503, "no leader yet", retry=True, node=server.node_id,
                          role=server.role.name, term=server.core.term)
        forwarded_by = request.headers.get(FORWARDED_HEADER)
        if forwarded_by is not None:
            return _error(
                503, f"node {server.node_id} got a request forwarded by {forwarded_by} but is not the leader "
                f"(it believes {leader} is); not forwarding twice", retry=True,
                node=server.node_id, leader=leader,
            )
        assert self._session is not None
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP_BY_HOP}
        headers[FORWARDED_HEADER] = server.node_id
        url = f"http://{address}{request.rel_url}"
        try:
            body = await request.read()
            async with self._session.request(request.method, url, data=body, headers=headers) as upstream:
                payload = await upstream.read()
                relayed = web.Response(body=payload, status=upstream.status)
                for name, value in upstream.headers.items():
                    if name.lower() not in _HOP_BY_HOP and name.lower() not in ("date", "server"):
                        relayed.headers[name] = value
        except aiohttp.ClientConnectorError as exc:
            # Nothing reached the leader: safe to retry anything.
            self.log.warning("node %s: cannot reach leader %s at %s: %s", server.node_id, leader, address, exc)
            return _error(503, f"the leader {leader} at {address} is unreachable from {server.node_id}: {exc}",
                          retry=True, node=server.node_id, leader=leader)
        except TimeoutError:
            return _error(504, f"the leader {leader} at {address} did not answer in time; "
                          "the command may still be applied", node=server.node_id, leader=leader)
        except (aiohttp.ClientError, OSError) as exc:
            # The request may have reached the leader: its outcome is unknown.
            self.log.warning("node %s: forwarding to leader %s at %s failed: %r",
                             server.node_id, leader, address, exc)
            return _error(502, f"forwarding to the leader {leader} at {address} failed: {exc!r}; "
                          "the command may or may not have been applied", node=server.node_id, leader=leader)
        relayed.headers.setdefault(LEADER_HEADER, leader)
        return relayed

"""The HTTP JSON API of one node (aiohttp): `HttpApi` serves any state machine through its
App (runtime/app.py) — `POST /apply`, `POST /read`, `POST /sessions`, `GET /status` — and
`KVHttpApi` adds the key-value store's `/kv/...` routes (docs/kv.md) as a thin layer that
builds the same commands and shares everything below.

Writes go through the Raft log (`RaftServer.apply`); a read is a ReadIndex read
(`RaftServer.read`), served by whichever node receives it after one heartbeat round of the
leader, or through the log with `?read=log`. Every answer is linearizable. A follower does
not redirect writes: it forwards them to the leader it knows of and relays the answer, so
a client may talk to any node (see docs/kv.md for why). A write carrying a client session
(`X-Raft-Session`, `X-Raft-Sequence`, optionally `X-Raft-Ack`; sessions come from
`POST /sessions`) applies exactly once however often it is retried. Forwarding is one
hop at most: a forwarded request carries `X-Raft-Forwarded-By`, and a node that receives
one but is not the leader answers 503 instead of forwarding again, so two nodes with
stale views cannot bounce a request between them.

Every answer to a command or a read says in `X-Raft-Outcome` what became of the command:
`applied`, `not-applied` (certainly not applied: every 503 and every 4xx refusal) or
`unknown` (502, 504, 500). Forwarding sends a request at most once: aiohttp's client
would resend a PUT or DELETE by itself when a reused keep-alive connection breaks, and a
per-request trace refuses any second connection (`_ForwardAttempt`); a failure after a
connection to the leader was obtained is reported as unknown, never as "not applied".

Resources are bounded on the HTTP side: a connection must deliver a complete header block
within `header_timeout` of becoming ready (opened, or its previous request answered), at
most `max_connections` are open (`_ConnectionGuard`), a body must arrive within
BODY_TIMEOUT, and `RaftServer` refuses commands beyond its pending bounds (`Overloaded`,
503). The API runs in a thread and event loop of its own, apart from the RaftServer's, so
that parsing and answering thousands of requests cannot hold up heartbeats.
"""

from __future__ import annotations

import asyncio
import codecs
import hmac
import ipaddress
import json
import logging
import resource
import ssl
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Coroutine
from types import SimpleNamespace
from typing import Any, Final, Generic, TypeVar
from urllib.parse import unquote_to_bytes

import aiohttp
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from multidict import CIMultiDict
from yarl import URL

from runtime.app import JSON, App
from runtime.errors import (
    ApplyTimeout,
    CommandRejected,
    NodeHalted,
    NotLeader,
    Overloaded,
    ProposalDropped,
    RaftError,
    ReadRefused,
    SessionExpired,
    StaleCommand,
)
from runtime.kv import CompareAndSet, Delete, Get, KVApp, KVCommand, KVResult, Put
from runtime.server import RaftServer
from runtime.statemachine import CommandT, ResultT

__all__ = [
    "ACK_HEADER",
    "APPLIED",
    "BODY_TIMEOUT",
    "DEFAULT_HEADER_TIMEOUT",
    "DEFAULT_MAX_CONNECTIONS",
    "FORWARDED_HEADER",
    "LEADER_HEADER",
    "MAX_BODY",
    "NOT_APPLIED",
    "OUTCOME_HEADER",
    "SEQUENCE_HEADER",
    "SESSION_HEADER",
    "UNKNOWN",
    "HttpApi",
    "KVHttpApi",
    "client_ssl_context",
    "server_ssl_context",
]

LEADER_HEADER: Final = "X-Raft-Leader"
"""On every answer to a command or a read: the id of the leader that served it."""
FORWARDED_HEADER: Final = "X-Raft-Forwarded-By"
"""Set by a follower on the request it forwards to the leader; holds the follower's id."""
OUTCOME_HEADER: Final = "X-Raft-Outcome"
"""On every answer to a command or a read: APPLIED, NOT_APPLIED or UNKNOWN."""
APPLIED: Final = "applied"
NOT_APPLIED: Final = "not-applied"
UNKNOWN: Final = "unknown"
SESSION_HEADER: Final = "X-Raft-Session"
"""A client session id from `POST /sessions`: the write applies exactly once per sequence."""
SEQUENCE_HEADER: Final = "X-Raft-Sequence"
"""The client's number for this command (1, 2, ...): a retry repeats it."""
ACK_HEADER: Final = "X-Raft-Ack"
"""The lowest sequence number whose answer the client still awaits (default: this one)."""

MAX_BODY: Final = 1 << 20
"""Largest accepted request body (1 MiB); larger requests get 413."""
RETRY_AFTER: Final = "1"
DEFAULT_MAX_CONNECTIONS: Final = 1000
"""Open HTTP connections a node keeps at most (`--http-max-connections`)."""
DEFAULT_HEADER_TIMEOUT: Final = 10.0
"""Seconds a connection may take, from being opened or answered, to deliver a complete request
(its headers) before it is closed; idle keep-alive connections are closed after it too
(`--http-header-timeout`)."""
BODY_TIMEOUT: Final = 10.0
"""Seconds a request body may take to arrive once its headers did (then 408)."""
EVICT_AFTER: Final = 1.0
"""At the connection cap, a new connection replaces the connection that has waited longest for
a complete request, if that one has waited at least this long; otherwise it gets 503."""
REJECT_LINGER: Final = 1.0
"""A connection refused at the cap gets its 503, then at most this long to read it."""
MAX_REJECTING: Final = 1024
"""Refused connections lingering at once; beyond it a refused connection is reset."""
FD_RESERVE: Final = 256
"""File descriptors kept for everything but HTTP connections (Raft, SQLite, logs)."""
GIL_SWITCH_INTERVAL: Final = 0.001
"""While the HTTP thread runs, the interpreter's switch interval is at most this (seconds; the
default is 0.005): each time the Raft loop returns from a system call (a socket send, a poll)
it may wait this long for the GIL held by a busy HTTP thread."""
FORWARD_POOL_IDLE: Final = 0.4
"""A follower reuses a pooled connection to the leader only if it was idle for less than this
fraction of the header timeout (the leader closes idle connections after the timeout)."""

_TEXT_CODECS: Final = frozenset({"utf-8", "ascii", "iso8859-1"})
_HOP_BY_HOP: Final = frozenset({
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailers",
    "transfer-encoding", "upgrade", "content-length", "host",
})


T = TypeVar("T")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class BadRequest(Exception):
    """The client sent something the API cannot turn into a command (400 unless `status`)."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _error(status: int, message: str, *, outcome: str, retry: bool = False, **extra: object) -> web.Response:
    body: dict[str, object] = {"error": message, **extra}
    headers = {OUTCOME_HEADER: outcome}
    if retry:
        headers["Retry-After"] = RETRY_AFTER
    return web.json_response(body, status=status, headers=headers)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def server_ssl_context(cert_file: str, key_file: str) -> ssl.SSLContext:
    """The context of an HTTPS listener (`--http-tls-cert`, `--http-tls-key`)."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert_file, key_file)
    return context


def client_ssl_context(ca_file: str | None) -> ssl.SSLContext:
    """The context to verify a node's HTTPS certificate: against `ca_file`, or the system's
    trust store without one; the certificate must name the host being connected to."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca_file)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


# -- connections ---------------------------------------------------------------------------------
class _Connection(asyncio.Protocol):
    """One accepted connection: everything is passed to aiohttp's protocol (`inner`); the
    guard tracks whether it is waiting for a request (no complete header block received
    since it was opened or last answered) or has one (received, or in a handler)."""

    def __init__(self, guard: _ConnectionGuard, inner: asyncio.Protocol) -> None:
        self.guard = guard
        self.inner = inner
        self.transport: asyncio.Transport | None = None
        self.busy = 0
        self.ready_since = 0.0
        self.tail = b""
        self.timer: asyncio.TimerHandle | None = None
        self.refused = False
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        if self.guard.admit(self):
            self.inner.connection_made(transport)
        else:
            self.refused = True

    def data_received(self, data: bytes) -> None:
        if self.refused:
            return
        if self.guard.is_waiting(self):
            seen = self.tail + data
            if b"\r\n\r\n" in seen:  # the end of a header block: a request is in, not a slow one
                self.guard.request_received(self)
            else:
                self.tail = seen[-3:]
        self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        if self.refused:
            return None  # close
        return self.inner.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        self.guard.lost(self)
        if not self.refused:
            self.inner.connection_lost(exc)

    def pause_writing(self) -> None:
        if not self.refused:
            self.inner.pause_writing()

    def resume_writing(self) -> None:
        if not self.refused:
            self.inner.resume_writing()


class _ConnectionGuard:
    """The header timeout and the connection cap, over every connection of one listener.

    A connection is *waiting* from when it is opened or its last request was answered until
    the header block of its next request has arrived; it is closed if it waits longer than
    `header_timeout` (slow or unfinished headers, or simply idle). At `max_connections`
    open connections, a new one replaces the connection that has waited longest if that one
    has waited at least EVICT_AFTER (a client that connects sends its request at once), and
    is otherwise refused with a 503 written before any of its bytes are read — nothing of
    it was applied. A closed waiting connection had no request in a handler; its client
    gets no answer (a dropped connection: the outcome of what it may have just sent is
    unknown to it, never claimed)."""

    def __init__(self, max_connections: int, header_timeout: float, node_id: str, log: logging.Logger) -> None:
        self.max_connections = max_connections
        self.header_timeout = header_timeout
        self.node_id = node_id
        self.log = log
        self.open: dict[asyncio.BaseTransport, _Connection] = {}
        self.waiting: OrderedDict[_Connection, None] = OrderedDict()
        self.refusing: set[_Connection] = set()
        self.counts = {"timed out": 0, "evicted": 0, "refused": 0, "reset": 0}
        self._reported_at = 0.0

    def protocol(self, inner: asyncio.Protocol) -> _Connection:
        return _Connection(self, inner)

    def admit(self, conn: _Connection) -> bool:
        transport = conn.transport
        assert transport is not None
        loop = asyncio.get_running_loop()
        if len(self.open) >= self.max_connections:
            victim = next(iter(self.waiting), None)
            if victim is not None and loop.time() - victim.ready_since >= EVICT_AFTER:
                self._close(victim, "evicted")
            else:
                self._refuse(conn)
                return False
        self.open[transport] = conn
        self._wait(conn)
        return True

    def is_waiting(self, conn: _Connection) -> bool:
        return conn in self.waiting

    def request_received(self, conn: _Connection) -> None:
        self.waiting.pop(conn, None)
        if conn.timer is not None:
            conn.timer.cancel()
            conn.timer = None

    def request_started(self, transport: asyncio.BaseTransport | None) -> _Connection | None:
        conn = self.open.get(transport) if transport is not None else None
        if conn is not None:
            conn.busy += 1
            self.request_received(conn)
        return conn

    def request_done(self, conn: _Connection | None) -> None:
        if conn is not None:
            conn.busy -= 1
            if conn.busy == 0 and not conn.closed:
                self._wait(conn)

    def lost(self, conn: _Connection) -> None:
        conn.closed = True
        if conn.transport is not None and self.open.get(conn.transport) is conn:
            del self.open[conn.transport]
        self.waiting.pop(conn, None)
        self.refusing.discard(conn)
        if conn.timer is not None:
            conn.timer.cancel()
            conn.timer = None

    def close_all(self) -> None:
        for conn in list(self.refusing):
            if conn.transport is not None:
                conn.transport.abort()
            self.lost(conn)

    def _wait(self, conn: _Connection) -> None:
        loop = asyncio.get_running_loop()
        conn.ready_since = loop.time()
        conn.tail = b""
        self.waiting[conn] = None
        self.waiting.move_to_end(conn)
        if conn.timer is not None:
            conn.timer.cancel()
        conn.timer = loop.call_later(self.header_timeout, self._expire, conn)

    def _expire(self, conn: _Connection) -> None:
        conn.timer = None
        if conn in self.waiting:
            self._close(conn, "timed out")

    def _close(self, conn: _Connection, why: str) -> None:
        self.lost(conn)
        if conn.transport is not None:
            conn.transport.close()
        self._count(why)

    def _refuse(self, conn: _Connection) -> None:
        transport = conn.transport
        assert transport is not None
        if len(self.refusing) >= MAX_REJECTING:
            transport.abort()
            self._count("reset")
            return
        body = json.dumps({
            "error": f"node {self.node_id} has {len(self.open)} open HTTP connections, its limit; retry",
            "node": self.node_id,
        }).encode()
        head = (
            "HTTP/1.1 503 Service Unavailable\r\n"
            "Content-Type: application/json; charset=utf-8\r\n"
            f"Content-Length: {len(body)}\r\n"
            f"Retry-After: {RETRY_AFTER}\r\n"
            f"{OUTCOME_HEADER}: {NOT_APPLIED}\r\n"
            "Connection: close\r\n\r\n"
        )
        transport.write(head.encode() + body)
        # Half-close and read what the client sent (discarded) for a moment: closing with
        # unread data would reset the connection and could destroy the answer in flight.
        if transport.can_write_eof():
            transport.write_eof()
        self.refusing.add(conn)
        conn.timer = asyncio.get_running_loop().call_later(REJECT_LINGER, transport.close)
        self._count("refused")

    def _count(self, why: str) -> None:
        self.counts[why] += 1
        now = asyncio.get_running_loop().time()
        if now - self._reported_at >= 10.0:
            self._reported_at = now
            summary = ", ".join(f"{what} {count}" for what, count in self.counts.items() if count)
            self.log.warning("node %s: HTTP connections %s so far (%d open, limit %d, header timeout %gs)",
                             self.node_id, summary, len(self.open), self.max_connections, self.header_timeout)


class _GuardedSite(web.BaseSite):
    """A TCP (or TLS) listener whose connections go through a `_ConnectionGuard`."""

    def __init__(self, runner: web.BaseRunner, host: str, port: int, guard: _ConnectionGuard, *,
                 ssl_context: ssl.SSLContext | None, handshake_timeout: float) -> None:
        super().__init__(runner, ssl_context=ssl_context)
        self.host, self.port = host, port
        self.guard = guard
        self.handshake_timeout = handshake_timeout

    @property
    def name(self) -> str:
        return f"{'https' if self._ssl_context else 'http'}://{self.host}:{self.port}"

    async def start(self) -> None:
        await super().start()
        server = self._runner.server
        assert server is not None
        guard = self.guard
        self._server = await asyncio.get_running_loop().create_server(
            lambda: guard.protocol(server()), self.host, self.port, ssl=self._ssl_context,
            ssl_handshake_timeout=self.handshake_timeout if self._ssl_context else None,
        )


def _fd_budget(wanted: int, log: logging.Logger) -> int:
    """How many HTTP connections this process can hold: raises the soft RLIMIT_NOFILE towards
    the hard one when it is too low for `wanted`, and returns what fits."""
    need = wanted + MAX_REJECTING + FD_RESERVE
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < need:
        target = need if hard == resource.RLIM_INFINITY else min(need, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError) as exc:
            log.warning("cannot raise the open-file limit to %d: %s", target, exc)
    if soft == resource.RLIM_INFINITY or soft >= need:
        return wanted
    fits = max(16, soft - MAX_REJECTING - FD_RESERVE)
    log.warning("the open-file limit (%d) allows %d HTTP connections, not %d", soft, fits, wanted)
    return fits


class _OneLineExceptions(logging.Filter):
    """aiohttp's own error records become one line without a traceback; errors in requests
    that are not valid HTTP (the client's fault, answered 400 by aiohttp) drop to DEBUG."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if exc is None:
            return True
        record.msg = _one_line(f"{record.getMessage()}: {type(exc).__name__}: {exc}")
        record.args = None
        record.exc_info = record.exc_text = None
        if isinstance(exc, HttpProcessingError):
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
            return logging.getLogger(record.name).isEnabledFor(logging.DEBUG)
        return True


class _Throttle:
    """Allows one log line per `interval` seconds: `allow()` is None when the line is to be
    dropped, else the number of lines dropped since the last one allowed."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self.last = float("-inf")
        self.dropped = 0

    def allow(self) -> int | None:
        now = time.monotonic()
        if now - self.last < self.interval:
            self.dropped += 1
            return None
        self.last, dropped, self.dropped = now, self.dropped, 0
        return dropped


# -- forwarding ----------------------------------------------------------------------------------
class _RetryRefused(aiohttp.ClientError):
    """aiohttp tried to send a forwarded request a second time; refused before sending."""


class _ForwardAttempt:
    """Per forwarded request (aiohttp's `trace_request_ctx`): whether a connection to the
    leader was obtained (from then on, bytes of the request may have left this node), and
    the guard against aiohttp's own retry (it resends an idempotent request, PUT and DELETE
    included, once when a connection breaks: see `ClientSession._request`)."""

    __slots__ = ("acquired", "connected")

    def __init__(self) -> None:
        self.acquired = 0
        self.connected = False


def _attempt(context: SimpleNamespace) -> _ForwardAttempt | None:
    attempt = getattr(context, "trace_request_ctx", None)
    return attempt if isinstance(attempt, _ForwardAttempt) else None


async def _on_acquire(session: aiohttp.ClientSession, context: SimpleNamespace, params: object) -> None:
    attempt = _attempt(context)
    if attempt is not None:
        attempt.acquired += 1
        if attempt.acquired > 1:
            raise _RetryRefused("refusing to send a forwarded request a second time")


async def _on_connected(session: aiohttp.ClientSession, context: SimpleNamespace, params: object) -> None:
    attempt = _attempt(context)
    if attempt is not None:
        attempt.connected = True


def _forward_trace() -> aiohttp.TraceConfig:
    trace = aiohttp.TraceConfig()
    # A pooled connection is reused (reuseconn) or a new one made (create_start/_end).
    trace.on_connection_reuseconn.append(_on_acquire)
    trace.on_connection_reuseconn.append(_on_connected)
    trace.on_connection_create_start.append(_on_acquire)
    trace.on_connection_create_end.append(_on_connected)
    return trace


# -- the API -------------------------------------------------------------------------------------
class HttpApi(Generic[CommandT, ResultT]):
    """Serves `server`'s state machine over HTTP(S) through `app`, its JSON mapping (see
    runtime/app.py): `POST /apply`, `POST /read`, `POST /sessions`, `GET /status`.
    `start(host, port)` binds the listener; `stop()` closes it (call it before stopping the
    RaftServer). `app_name` is shown in `/status` (default: the App's class).

    `token`: every request needs `Authorization: Bearer <token>` (401 otherwise), and
    forwarded requests carry it. `ssl_context`: serve HTTPS (and forward over HTTPS: every
    node of a cluster is assumed to have the same scheme, token and app);
    `forward_ssl_context` verifies the other nodes' certificates (default: the system trust
    store). Subclasses add routes in `routes()` (`KVHttpApi` adds `/kv/...`)."""

    def __init__(
        self,
        server: RaftServer[CommandT, ResultT],
        app: App[CommandT, ResultT],
        *,
        app_name: str | None = None,
        apply_timeout: float = 5.0,
        logger: logging.Logger | None = None,
        token: str | None = None,
        ssl_context: ssl.SSLContext | None = None,
        forward_ssl_context: ssl.SSLContext | None = None,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        header_timeout: float = DEFAULT_HEADER_TIMEOUT,
    ) -> None:
        if max_connections < 1:
            raise ValueError("max_connections must be at least 1")
        if header_timeout <= 0:
            raise ValueError("header_timeout must be positive")
        self.server = server
        self.app = app
        self.app_name = app_name or f"{type(app).__module__}.{type(app).__qualname__}"
        self.apply_timeout = apply_timeout
        self.log = logger or logging.getLogger(f"raftfsm.http.{server.node_id}")
        self.token = token
        self._token = token.encode() if token is not None else None
        self.ssl_context = ssl_context
        self.forward_ssl_context = forward_ssl_context
        self.max_connections = max_connections
        self.header_timeout = header_timeout
        self.scheme = "https" if ssl_context is not None else "http"

        @web.middleware
        async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
            return await self._middleware(request, handler)

        self.web_app = web.Application(client_max_size=MAX_BODY, middlewares=[middleware])
        self.web_app.add_routes(self.routes())
        self._aiohttp_log = logging.getLogger(f"{self.log.name}.aiohttp")
        if not any(isinstance(f, _OneLineExceptions) for f in self._aiohttp_log.filters):
            self._aiohttp_log.addFilter(_OneLineExceptions())
        self._forward_warnings = _Throttle(5.0)
        self._guard: _ConnectionGuard | None = None
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self._raft_loop: asyncio.AbstractEventLoop | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self.address: tuple[str, int] | None = None

    def routes(self) -> list[web.RouteDef]:
        """The endpoints every app has."""
        return [
            web.get("/status", self._status),
            web.post("/sessions", self._open_session),
            web.post("/apply", self._apply),
            web.post("/read", self._query),
        ]

    # -- lifecycle -------------------------------------------------------------------------------
    async def start(self, host: str, port: int) -> None:
        """Serve on `host:port` (port 0: any; `address` holds the bound one) from a thread of
        its own: parsing, answering and forwarding requests run in that thread's event loop,
        and only `RaftServer.apply`/`read`/`status` run in this one (the RaftServer's), so a
        burst of clients cannot delay heartbeats by more than a GIL switch."""
        if self._thread is not None:
            raise RuntimeError("the HTTP API is already started")
        self._raft_loop = asyncio.get_running_loop()
        if sys.getswitchinterval() > GIL_SWITCH_INTERVAL:
            sys.setswitchinterval(GIL_SWITCH_INTERVAL)
        loop = self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=loop.run_forever, name=f"raftfsm-http-{self.server.node_id}",
                                        daemon=True)
        self._thread.start()
        try:
            await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(self._start(host, port), loop))
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        """Close the listener and every connection (in-flight requests get up to 1 s), then
        end the thread."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        try:
            await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(self._stop(), loop))
        finally:
            loop.call_soon_threadsafe(loop.stop)
            await asyncio.get_running_loop().run_in_executor(None, thread.join)
            loop.close()
            self._loop = self._thread = None

    async def _in_raft(self, call: Coroutine[Any, Any, T]) -> T:
        """Run `call` in the RaftServer's event loop and wait for it from the HTTP one."""
        assert self._raft_loop is not None
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(call, self._raft_loop))

    async def _start(self, host: str, port: int) -> None:
        if not _is_loopback(host) and self.ssl_context is None and self.token is None:
            self.log.warning("node %s: the HTTP API on %s:%s is reachable from the network without TLS or a "
                             "token: anyone who reaches it can read and change the replicated state (see "
                             "--http-token-file, --http-tls-cert)", self.server.node_id, host, port)
        limit = _fd_budget(self.max_connections, self.log)
        self._guard = _ConnectionGuard(limit, self.header_timeout, self.server.node_id, self.log)
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(
                ssl=self.forward_ssl_context or True,
                keepalive_timeout=FORWARD_POOL_IDLE * self.header_timeout,
            ),
            timeout=aiohttp.ClientTimeout(total=self.apply_timeout + 2.0, connect=1.0),
            auto_decompress=False,
            trace_configs=[_forward_trace()],
        )
        self._runner = web.AppRunner(
            self.web_app, access_log=None, logger=self._aiohttp_log, shutdown_timeout=1.0,
            # our guard closes idle connections first; this is aiohttp's own backstop
            keepalive_timeout=self.header_timeout + 1.0,
        )
        await self._runner.setup()
        site = _GuardedSite(self._runner, host, port, self._guard, ssl_context=self.ssl_context,
                            handshake_timeout=self.header_timeout)
        try:
            await site.start()
        except BaseException:
            await self._stop()
            raise
        bound = self._runner.addresses
        self.address = (bound[0][0], bound[0][1]) if bound else (host, port)
        self.log.info("node %s: HTTP API on %s://%s:%s%s (at most %d connections, header timeout %gs)",
                      self.server.node_id, self.scheme, *self.address,
                      ", bearer token required" if self.token is not None else "", limit, self.header_timeout)

    async def _stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._guard is not None:
            self._guard.close_all()
        if self._session is not None:
            await self._session.close()
            self._session = None

    # -- every request ------------------------------------------------------------------------
    async def _middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        guard = self._guard
        conn = guard.request_started(request.transport) if guard is not None else None
        try:
            return await self._guarded(request, handler)
        finally:
            if guard is not None:
                guard.request_done(conn)

    async def _guarded(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if self._token is not None and not self._authorized(request):
            response = _error(401, "this node requires the header 'Authorization: Bearer <token>'",
                              outcome=NOT_APPLIED)
            response.headers["WWW-Authenticate"] = 'Bearer realm="raftfsm"'
            return response
        try:
            return await handler(request)
        except BadRequest as exc:
            response = _error(exc.status, str(exc), outcome=NOT_APPLIED)
            if exc.status == 408:
                response.force_close()
            return response
        except web.HTTPException as exc:  # 404, 405, 413 from aiohttp: the same JSON shape
            response = _error(exc.status, exc.text or exc.reason, outcome=NOT_APPLIED)
            for name in ("Allow",):
                if name in exc.headers:
                    response.headers[name] = exc.headers[name]
            return response
        except Exception as exc:  # a bug: one line in the log and to the client, no traceback
            self.log.error("node %s: %s %s failed: %s", self.server.node_id, request.method,
                           _one_line(request.raw_path), _one_line(f"{type(exc).__name__}: {exc}"))
            return _error(500, _one_line(f"internal error ({type(exc).__name__}); see the node's log"),
                          outcome=UNKNOWN, node=self.server.node_id)

    def _authorized(self, request: web.Request) -> bool:
        scheme, _, credentials = request.headers.get("Authorization", "").strip().partition(" ")
        assert self._token is not None
        return scheme.lower() == "bearer" and hmac.compare_digest(
            credentials.strip().encode("utf-8", "surrogateescape"), self._token)

    # -- the generic endpoints -------------------------------------------------------------------
    async def _status(self, request: web.Request) -> web.Response:
        server = self.server

        async def status() -> dict[str, object]:
            return server.status()

        answer = await self._in_raft(status())
        host, port = server.peers[server.node_id]
        answer["raft_address"] = f"{host}:{port}"
        answer["app"] = self.app_name
        return web.json_response(answer)

    async def _apply(self, request: web.Request) -> web.Response:
        """`POST /apply`: the body is the command as JSON (`App.command_from_json`)."""
        body = await self._json_value(request)
        command = self._from_json(self.app.command_from_json, body, "command")
        return await self._execute(request, command, self._result_answer)

    async def _query(self, request: web.Request) -> web.Response:
        """`POST /read`: the body is the query as JSON (`App.query_from_json`); a ReadIndex
        read on this node, or through the log with `?read=log`."""
        mode = self._read_mode(request)
        body = await self._json_value(request)
        query = self._from_json(self.app.query_from_json, body, "query")
        if mode == "log":
            return await self._execute(request, query, self._result_answer)
        return await self._read(request, query, self._result_answer)

    def _result_answer(self, command: CommandT, result: ResultT) -> web.Response:
        return web.json_response({"result": self.app.result_to_json(result)}, dumps=_strict_dumps)

    def _from_json(self, convert: Callable[[JSON], CommandT], body: JSON, what: str) -> CommandT:
        """The app's reading of a body: its ValueError (TypeError, KeyError) is the client's
        400; anything else is a bug in the app (500), before anything was proposed."""
        try:
            return convert(body)
        except KeyError as exc:
            raise BadRequest(_one_line(f"the {what} is not valid: missing {exc}")) from None
        except (ValueError, TypeError) as exc:
            raise BadRequest(_one_line(f"the {what} is not valid: {exc}")) from None
        except Exception as exc:
            self.log.error("node %s: the app failed to read a %s: %s", self.server.node_id, what,
                           _one_line(f"{type(exc).__name__}: {exc}"))
            raise BadRequest(_one_line(f"internal error reading the {what} ({type(exc).__name__}); see the "
                                       "node's log; nothing was applied"), status=500) from None

    async def _open_session(self, request: web.Request) -> web.Response:
        server = self.server
        try:
            client = await self._in_raft(server.open_session(timeout=self.apply_timeout))
        except NotLeader as exc:
            return await self._forward(request, exc)
        except NodeHalted as exc:
            return _error(503, str(exc), outcome=NOT_APPLIED, node=server.node_id, role="error")
        except (Overloaded, ProposalDropped) as exc:
            return _error(503, f"{exc}; retry", outcome=NOT_APPLIED, retry=True, node=server.node_id)
        except ApplyTimeout as exc:
            return _error(504, f"{exc}; a session may have been opened (unused sessions expire)", outcome=UNKNOWN,
                          node=server.node_id)
        response = web.json_response({"session": client}, status=201)
        response.headers[LEADER_HEADER] = server.node_id
        response.headers[OUTCOME_HEADER] = APPLIED
        return response

    # -- the outcome rules, shared by every endpoint -------------------------------------------------
    async def _read(self, request: web.Request, query: CommandT,
                    answer: Callable[[CommandT, ResultT], web.Response]) -> web.Response:
        """A linearizable read on this node (leader or follower): nothing is proposed, so
        every failure is a plain "not applied, retry"."""
        server = self.server
        try:
            result = await self._in_raft(server.read(query, timeout=self.apply_timeout))
        except NodeHalted as exc:
            return _error(503, str(exc), outcome=NOT_APPLIED, node=server.node_id, role="error")
        except (NotLeader, ReadRefused) as exc:
            return _error(503, f"{exc}; retry", outcome=NOT_APPLIED, retry=True, node=server.node_id)
        except ApplyTimeout as exc:
            return _error(504, f"the read was not confirmed in time: {exc}; retry", outcome=NOT_APPLIED,
                          retry=True, node=server.node_id)
        except CommandRejected as exc:
            return _error(422, f"the query was refused: {exc}", outcome=NOT_APPLIED, node=server.node_id)
        except RaftError:
            raise
        except Exception as exc:  # the state machine's query failed: its bug, and nothing changed
            self.log.error("node %s: the query failed: %s", server.node_id, _one_line(f"{type(exc).__name__}: {exc}"))
            return _error(500, _one_line(f"the query failed ({type(exc).__name__}); see the node's log"),
                          outcome=NOT_APPLIED, node=server.node_id)
        response = self._answer(answer, query, result, outcome=NOT_APPLIED)
        response.headers[LEADER_HEADER] = server.leader_id or ""
        response.headers.setdefault(OUTCOME_HEADER, APPLIED)
        return response

    async def _execute(
        self,
        request: web.Request,
        command: CommandT,
        answer: Callable[[CommandT, ResultT], web.Response],
    ) -> web.Response:
        server = self.server
        session = self._session_of(request)
        try:
            result = await self._in_raft(server.apply(command, timeout=self.apply_timeout, session=session))
        except NotLeader as exc:
            return await self._forward(request, exc)
        except CommandRejected as exc:
            return _error(422, f"the command was refused: {exc}; nothing changed", outcome=NOT_APPLIED,
                          node=server.node_id)
        except SessionExpired as exc:
            return _error(410, f"{exc}; open a new session with POST /sessions", outcome=NOT_APPLIED,
                          node=server.node_id)
        except StaleCommand as exc:
            return _error(409, f"{exc}; its answer was already delivered", outcome=UNKNOWN, node=server.node_id)
        except NodeHalted as exc:
            return _error(503, str(exc), outcome=NOT_APPLIED, node=server.node_id, role="error")
        except (Overloaded, ProposalDropped) as exc:
            return _error(503, f"{exc}; retry", outcome=NOT_APPLIED, retry=True, node=server.node_id)
        except ApplyTimeout as exc:
            return _error(504, f"{exc}; the command may still be applied", outcome=UNKNOWN, node=server.node_id)
        except (ValueError, TypeError, OverflowError) as exc:
            # raised by apply() before proposing: the state machine cannot encode the command,
            # or it is too large (the futures apply() waits on only ever hold RaftErrors)
            raise BadRequest(_one_line(f"the command cannot be stored: {exc}")) from None
        response = self._answer(answer, command, result, outcome=APPLIED)
        response.headers[LEADER_HEADER] = server.node_id
        response.headers.setdefault(OUTCOME_HEADER, APPLIED)
        return response

    def _answer(self, answer: Callable[[CommandT, ResultT], web.Response], command: CommandT, result: ResultT,
                *, outcome: str) -> web.Response:
        """`answer(command, result)`; if the result cannot be turned into an answer (a bug in
        the app's `result_to_json`), a 500 that still tells the truth about the command."""
        try:
            return answer(command, result)
        except Exception as exc:
            self.log.error("node %s: the result cannot be turned into JSON: %s", self.server.node_id,
                           _one_line(f"{type(exc).__name__}: {exc}"))
            done = "the command was applied" if outcome == APPLIED else "nothing was applied"
            return _error(500, _one_line(f"{done}, but its result cannot be turned into JSON "
                                         f"({type(exc).__name__}); see the node's log"),
                          outcome=outcome, node=self.server.node_id)

    @staticmethod
    def _session_of(request: web.Request) -> tuple[int, int, int] | None:
        """The client session a write carries in its headers, or None (no session: the write
        is not deduplicated, and retrying it after an unknown outcome may apply it twice)."""
        client = request.headers.get(SESSION_HEADER)
        if client is None:
            if SEQUENCE_HEADER in request.headers:
                raise BadRequest(f"{SEQUENCE_HEADER} needs {SESSION_HEADER}")
            return None
        numbers: list[int] = []
        for name, default in ((SESSION_HEADER, None), (SEQUENCE_HEADER, None), (ACK_HEADER, "")):
            text = request.headers.get(name, default)
            if text is None:
                raise BadRequest(f"{SESSION_HEADER} needs {SEQUENCE_HEADER} (1, 2, ... for each command)")
            if text == "":
                numbers.append(numbers[1])
                continue
            if not text.isdigit() or not 0 < int(text) < 1 << 63:
                raise BadRequest(f"{name} must be a positive integer, not {text[:40]!r}")
            numbers.append(int(text))
        if numbers[2] > numbers[1]:
            raise BadRequest(f"{ACK_HEADER} {numbers[2]} is above {SEQUENCE_HEADER} {numbers[1]}")
        return numbers[0], numbers[1], numbers[2]

    @staticmethod
    def _read_mode(request: web.Request) -> str:
        mode = request.query.get("read", "index")
        if mode not in ("index", "log"):
            raise BadRequest(f"read={mode!r}: use read=index (the default, a ReadIndex read) or read=log")
        return mode

    # -- bodies -------------------------------------------------------------------------------------
    async def _body(self, request: web.Request) -> bytes:
        try:
            async with asyncio.timeout(BODY_TIMEOUT):
                return await request.read()
        except TimeoutError:
            raise BadRequest(f"the request body did not arrive within {BODY_TIMEOUT:g}s", status=408) from None

    async def _text(self, request: web.Request, what: str) -> str:
        data = await self._body(request)
        charset = request.charset or "utf-8"
        try:
            codec = codecs.lookup(charset).name
        except LookupError:
            codec = ""
        if codec not in _TEXT_CODECS:
            raise BadRequest(f"charset {charset!r} is not supported (use utf-8)", status=415)
        try:
            return data.decode(codec)
        except UnicodeDecodeError as exc:
            raise BadRequest(f"the {what} is not valid {charset} ({exc.reason} at byte {exc.start})") from None

    async def _json_value(self, request: web.Request) -> JSON:
        """The body as JSON (any value; NaN and Infinity, which are not JSON, are refused)."""
        text = await self._text(request, "body")
        try:
            body: JSON = json.loads(text, parse_constant=_no_constant)
        except RecursionError:
            raise BadRequest("the body is not valid JSON: nested too deeply") from None
        except ValueError as exc:
            raise BadRequest(_one_line(f"the body is not valid JSON: {exc}")) from None
        return body

    async def _json_object(self, request: web.Request) -> dict[str, Any]:
        body = await self._json_value(request)
        if not isinstance(body, dict):
            raise BadRequest("the body must be a JSON object")
        return body

    # -- forwarding to the leader -----------------------------------------------------------------
    async def _forward(self, request: web.Request, not_leader: NotLeader) -> web.Response:
        server = self.server
        leader, address = not_leader.leader_id, not_leader.leader_address
        if leader is None or address is None:
            return _error(503, "no leader yet", outcome=NOT_APPLIED, retry=True, node=server.node_id,
                          role=server.role.name, term=server.core.term)
        forwarded_by = request.headers.get(FORWARDED_HEADER)
        if forwarded_by is not None:
            return _error(
                503, f"node {server.node_id} got a request forwarded by {forwarded_by} but is not the leader "
                f"(it believes {leader} is); not forwarding twice", outcome=NOT_APPLIED, retry=True,
                node=server.node_id, leader=leader,
            )
        assert self._session is not None
        headers: CIMultiDict[str] = CIMultiDict(
            (k, v) for k, v in request.headers.items() if k.lower() not in _HOP_BY_HOP)
        headers[FORWARDED_HEADER] = server.node_id
        if self.token is not None:
            headers["Authorization"] = f"Bearer {self.token}"
        # the raw path, byte for byte: a rebuilt URL would normalize `..` or re-encode `%ff`
        url = URL(f"{self.scheme}://{address}{request.rel_url.raw_path_qs}", encoded=True)
        body = await self._body(request)
        attempt = _ForwardAttempt()
        try:
            async with self._session.request(request.method, url, data=body, headers=headers,
                                             allow_redirects=False, trace_request_ctx=attempt) as upstream:
                payload = await upstream.read()
                relayed = web.Response(body=payload, status=upstream.status, headers=CIMultiDict(
                    (name, value) for name, value in upstream.headers.items()
                    if name.lower() not in _HOP_BY_HOP and name.lower() not in ("date", "server")))
        except (aiohttp.ClientError, OSError) as exc:  # TimeoutError is an OSError
            reason = _one_line(f"{type(exc).__name__}: {exc}")
            suppressed = self._forward_warnings.allow()
            if suppressed is not None:
                self.log.warning("node %s: forwarding %s to leader %s at %s failed%s: %s%s", server.node_id,
                                 request.method, leader, address, "" if attempt.connected else " (not sent)",
                                 reason, f" ({suppressed} more such failures not logged)" if suppressed else "")
            if not attempt.connected:
                # no connection to the leader was obtained: not one byte of the request left
                return _error(503, f"the leader {leader} at {address} is unreachable from {server.node_id}: "
                              f"{reason}; nothing was sent", outcome=NOT_APPLIED, retry=True,
                              node=server.node_id, leader=leader)
            if isinstance(exc, TimeoutError):
                return _error(504, f"the leader {leader} at {address} did not answer in time; "
                              "the command may or may not be applied", outcome=UNKNOWN,
                              node=server.node_id, leader=leader)
            return _error(502, f"forwarding to the leader {leader} at {address} failed after the request may "
                          f"have been sent ({reason}); the command may or may not be applied",
                          outcome=UNKNOWN, node=server.node_id, leader=leader)
        relayed.headers.setdefault(LEADER_HEADER, leader)
        if relayed.status == 503:
            relayed.headers.setdefault(OUTCOME_HEADER, NOT_APPLIED)
        return relayed


def _no_constant(name: str) -> JSON:
    raise ValueError(f"{name} is not a JSON value")


def _strict_dumps(value: Any) -> str:
    return json.dumps(value, allow_nan=False)


# -- the key-value routes --------------------------------------------------------------------------
class KVHttpApi(HttpApi[KVCommand, KVResult]):
    """The key-value store's API: the generic endpoints of `HttpApi` (with `KVApp`'s JSON)
    plus the `/kv/...` routes of docs/kv.md, which turn a path and a body into the same
    commands and share every outcome rule, forwarding and limit."""

    def __init__(
        self,
        server: RaftServer[KVCommand, KVResult],
        app: KVApp | None = None,
        *,
        app_name: str | None = None,
        apply_timeout: float = 5.0,
        logger: logging.Logger | None = None,
        token: str | None = None,
        ssl_context: ssl.SSLContext | None = None,
        forward_ssl_context: ssl.SSLContext | None = None,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        header_timeout: float = DEFAULT_HEADER_TIMEOUT,
    ) -> None:
        super().__init__(
            server, app or KVApp(), app_name=app_name or "runtime.kv:factory", apply_timeout=apply_timeout,
            logger=logger, token=token, ssl_context=ssl_context, forward_ssl_context=forward_ssl_context,
            max_connections=max_connections, header_timeout=header_timeout,
        )

    def routes(self) -> list[web.RouteDef]:
        return [
            *super().routes(),
            web.post("/kv/{key}/cas", self._cas),
            web.put("/kv/{key}", self._put),
            web.get("/kv/{key}", self._get),
            web.delete("/kv/{key}", self._delete),
        ]

    async def _put(self, request: web.Request) -> web.Response:
        key = self._key(request)
        value = await self._value(request)
        return await self._execute(request, Put(key, value), self._value_answer)

    async def _get(self, request: web.Request) -> web.Response:
        mode = self._read_mode(request)
        if mode == "log":
            return await self._execute(request, Get(self._key(request)), self._value_answer)
        return await self._read(request, Get(self._key(request)), self._value_answer)

    async def _delete(self, request: web.Request) -> web.Response:
        return await self._execute(request, Delete(self._key(request)), self._value_answer)

    async def _cas(self, request: web.Request) -> web.Response:
        key = self._key(request)
        body = await self._json_object(request)
        value = body.get("value")
        if not isinstance(value, str):
            raise BadRequest('compare-and-set needs "value": a string')
        expected = body.get("expected", ...)
        if expected is not None and not isinstance(expected, str):
            raise BadRequest('compare-and-set needs "expected": a string, or null for "the key must be absent"')
        _check_text(value, '"value"')
        if expected is not None:
            _check_text(expected, '"expected"')

        def answer(command: KVCommand, result: KVResult) -> web.Response:
            return web.json_response({"key": key, "ok": result.ok, "value": result.value})

        return await self._execute(request, CompareAndSet(key, expected, value), answer)

    @staticmethod
    def _value_answer(command: KVCommand, result: KVResult) -> web.Response:
        if isinstance(command, (Get, Delete)) and not result.ok:
            return web.json_response({"error": "not found", "key": command.key}, status=404)
        return web.json_response({"key": command.key, "value": result.value})

    @staticmethod
    def _key(request: web.Request) -> str:
        """The key as the client wrote it: the raw path segment after /kv/, percent-decoded,
        then strictly UTF-8 decoded (aiohttp would leave `%ff` undecoded, so that `%ff` and
        `%25ff` named the same key)."""
        segment = request.rel_url.raw_path.split("/")[2]
        try:
            return unquote_to_bytes(segment).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise BadRequest(f"the key is not UTF-8 once percent-decoded ({exc.reason} at byte {exc.start})") \
                from None

    async def _value(self, request: web.Request) -> str:
        """A JSON body `{"value": "..."}` when the content type says JSON, else the raw text."""
        if request.content_type == "application/json":
            body = await self._json_object(request)
            value = body.get("value")
            if not isinstance(value, str):
                raise BadRequest('a JSON body must be {"value": "<string>"}')
            _check_text(value, '"value"')
            return value
        return await self._text(request, "value")


def _check_text(value: str, what: str) -> None:
    """JSON can carry lone surrogates (\\ud800) that no UTF-8 encoder accepts."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise BadRequest(f"{what} is not valid Unicode: {exc.reason} at position {exc.start}") from None

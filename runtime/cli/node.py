"""`raftfsm node`: one node — SQLite storage, the Raft server and the HTTP API — of the app
named by `--app package.module:factory` (runtime/app.py; default: the key-value store,
`runtime.kv:factory`, which also gets the `/kv/...` routes).

Exit status: 0 after SIGTERM/SIGINT, 2 when the node cannot start (bad flags, a corrupt or
locked data directory, a port in use), with one line on stderr and no traceback. A storage
failure while running sends the node to the error role; the process keeps serving
/status so that an operator sees `role: error` and the reason.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import ipaddress
import logging
import signal
import sys
from typing import Any

from runtime.app import App, load_app
from runtime.errors import AppError, RaftError, SecretError, StorageError
from runtime.http import (
    DEFAULT_HEADER_TIMEOUT,
    DEFAULT_MAX_CONNECTIONS,
    HttpApi,
    KVHttpApi,
    client_ssl_context,
    server_ssl_context,
)
from runtime.kv import KVApp
from runtime.server import DEFAULT_MAX_PENDING, DEFAULT_MAX_PENDING_BYTES, RaftServer
from runtime.storage.sqlite import SqliteStorage
from runtime.transport.auth import load_secret
from runtime.transport.tcp import TlsConfig

log = logging.getLogger("raftfsm.node")

HTTP_PORT_OFFSET = 1000
"""Without --http, a node serves HTTP on its Raft port + 1000 (7001 -> 8001)."""
DEFAULT_APP = "runtime.kv:factory"
"""The key-value store (docs/kv.md)."""


class UsageError(Exception):
    """A flag's value is wrong; the message says which and why."""


def parse_address(text: str, what: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) < 65536:
        raise UsageError(f"{what}: expected HOST:PORT, got {text!r}")
    return host.strip("[]"), int(port)


def format_address(address: tuple[str, int]) -> str:
    host, port = address
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def parse_map(text: str, what: str) -> dict[str, tuple[str, int]]:
    """`n1=127.0.0.1:7001,n2=...` -> {id: (host, port)}."""
    result: dict[str, tuple[str, int]] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        node_id, sep, address = item.partition("=")
        if not sep or not node_id:
            raise UsageError(f"{what}: expected ID=HOST:PORT, got {item!r}")
        if node_id in result:
            raise UsageError(f"{what}: node {node_id!r} is listed twice")
        result[node_id] = parse_address(address, f"{what} ({node_id})")
    if not result:
        raise UsageError(f"{what}: no nodes given")
    return result


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--id", required=True, help="this node's id (must be one of --peers)")
    parser.add_argument("--listen", required=True, metavar="HOST:PORT", help="Raft address to listen on")
    parser.add_argument("--peers", required=True, metavar="ID=HOST:PORT,...",
                        help="every voter's Raft address, this node included")
    parser.add_argument("--data-dir", required=True, metavar="DIR",
                        help="this node's own directory for raft.db (created if missing)")
    parser.add_argument("--http", metavar="HOST:PORT",
                        help="HTTP API address (default: the --listen host, port + 1000)")
    parser.add_argument("--peers-http", metavar="ID=HOST:PORT,...",
                        help="every node's HTTP address, used to forward requests to the leader "
                             "(default: each peer's Raft host, port + 1000)")
    parser.add_argument("--app", default=DEFAULT_APP, metavar="MODULE:FACTORY",
                        help="the application to serve: FACTORY() in MODULE returns an App (docs/library.md); "
                             f"every node of a cluster must run the same one (default {DEFAULT_APP}, the key-value "
                             "store)")
    parser.add_argument("--app-dir", default=".", metavar="DIR",
                        help="put DIR first on the module search path before importing an --app other than the "
                             "default (default: the current directory)")
    parser.add_argument("--cluster-id", default="raftfsm", help="cluster name, checked on every connection "
                        "and stored in the data directory (default raftfsm)")
    parser.add_argument("--tls-ca", metavar="FILE", help="CA certificate (PEM) for mutual TLS between nodes")
    parser.add_argument("--tls-cert", metavar="FILE", help="this node's certificate (PEM)")
    parser.add_argument("--tls-key", metavar="FILE", help="this node's private key (PEM)")
    parser.add_argument("--secret-file", metavar="FILE",
                        help="the cluster secret shared by every node (at least 16 bytes; the file must not be "
                             "accessible by group/others; `raftfsm secret --out FILE` makes one): peers prove they "
                             "know it and every Raft frame is MACed. Give this or the --tls-* files")
    parser.add_argument("--insecure", action="store_true",
                        help="allow --secret-file (authenticated, but unencrypted) Raft traffic on a non-loopback "
                             "address; peers are always authenticated, this only waives encryption")
    parser.add_argument("--no-fsync", action="store_true",
                        help="do not fsync (a power cut may lose acknowledged writes; tests only)")
    http = parser.add_argument_group("HTTP API and client requests")
    http.add_argument("--http-tls-cert", metavar="FILE", help="serve the HTTP API over HTTPS with this certificate "
                      "(PEM; it must name the host in this node's --peers-http address)")
    http.add_argument("--http-tls-key", metavar="FILE", help="the private key (PEM) of --http-tls-cert")
    http.add_argument("--http-tls-ca", metavar="FILE", help="CA certificates (PEM) that the other nodes' HTTPS "
                      "certificates are verified against when forwarding (default: the system's trust store)")
    http.add_argument("--http-token-file", metavar="FILE", help="require 'Authorization: Bearer <token>' on "
                      "every HTTP request, the token being this file's content (the same on every node)")
    http.add_argument("--http-max-connections", type=int, default=DEFAULT_MAX_CONNECTIONS, metavar="N",
                      help=f"open HTTP connections at most (default {DEFAULT_MAX_CONNECTIONS})")
    http.add_argument("--http-header-timeout", type=float, default=DEFAULT_HEADER_TIMEOUT, metavar="SECONDS",
                      help="close a connection that does not deliver a complete request this long after it was "
                           f"opened or last answered (default {DEFAULT_HEADER_TIMEOUT:g})")
    http.add_argument("--max-pending", type=int, default=DEFAULT_MAX_PENDING, metavar="N",
                      help=f"commands awaiting their answer at most; more get 503 (default {DEFAULT_MAX_PENDING})")
    http.add_argument("--max-pending-bytes", type=int, default=DEFAULT_MAX_PENDING_BYTES, metavar="BYTES",
                      help=f"the same bound in bytes (default {DEFAULT_MAX_PENDING_BYTES})")
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"],
                        help="logging level (default info)")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class NodeOptions:
    """The validated flags of `raftfsm node`."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.node_id: str = args.id
        self.listen = parse_address(args.listen, "--listen")
        self.peers = parse_map(args.peers, "--peers")
        if self.node_id not in self.peers:
            raise UsageError(f"--id {self.node_id!r} is not in --peers ({', '.join(sorted(self.peers))})")
        if self.peers[self.node_id][1] != self.listen[1]:
            raise UsageError(f"--listen port {self.listen[1]} differs from {self.node_id}'s port in --peers "
                             f"({self.peers[self.node_id][1]})")
        self.http = (parse_address(args.http, "--http") if args.http
                     else (self.listen[0], self.listen[1] + HTTP_PORT_OFFSET))
        if args.peers_http:
            self.peers_http = parse_map(args.peers_http, "--peers-http")
            missing = sorted(set(self.peers) - set(self.peers_http))
            if missing:
                raise UsageError(f"--peers-http lacks {', '.join(missing)}")
        else:
            self.peers_http = {pid: (host, port + HTTP_PORT_OFFSET) for pid, (host, port) in self.peers.items()}
            self.peers_http[self.node_id] = self.http
        self.data_dir: str = args.data_dir
        self.cluster_id: str = args.cluster_id
        tls_files = (args.tls_ca, args.tls_cert, args.tls_key)
        if any(tls_files) and not all(tls_files):
            raise UsageError("--tls-ca, --tls-cert and --tls-key go together")
        self.tls = TlsConfig(args.tls_ca, args.tls_cert, args.tls_key) if all(tls_files) else None
        if self.tls is None and not args.secret_file:
            raise UsageError("peers must authenticate: give --secret-file FILE (the cluster secret; "
                             "`raftfsm secret --out FILE` makes one) or --tls-ca/--tls-cert/--tls-key")
        if self.tls is not None and args.secret_file:
            raise UsageError("give either --secret-file or the --tls-* files, not both")
        self.secret: bytes | None = None
        if args.secret_file:
            try:
                self.secret = load_secret(args.secret_file)
            except SecretError as exc:
                raise UsageError(str(exc)) from None
        self.insecure: bool = args.insecure
        if self.tls is None and not self.insecure and not _is_loopback(self.listen[0]):
            raise UsageError(f"refusing to listen on {self.listen[0]} without TLS (the cluster secret authenticates "
                             "peers but does not encrypt): give --tls-ca/--tls-cert/--tls-key, or --insecure")
        self.fsync = not args.no_fsync
        self.http_options = _http_options(args)
        self.max_pending: int = args.max_pending
        self.max_pending_bytes: int = args.max_pending_bytes
        if self.max_pending < 1 or self.max_pending_bytes < 1:
            raise UsageError("--max-pending and --max-pending-bytes must be at least 1")
        self.app_name: str = args.app
        try:
            # the module path changes only for an app of the user's (as `python -m` would)
            self.app: App[Any, Any] = load_app(args.app, None if args.app == DEFAULT_APP else args.app_dir)
        except AppError as exc:
            raise UsageError(" ".join(str(exc).split())) from None


def _http_options(args: argparse.Namespace) -> dict[str, Any]:
    """HttpApi's keyword arguments from the --http-* flags (files read and checked here)."""
    options: dict[str, Any] = {}
    if bool(args.http_tls_cert) != bool(args.http_tls_key):
        raise UsageError("--http-tls-cert and --http-tls-key go together")
    try:
        if args.http_tls_cert:
            options["ssl_context"] = server_ssl_context(args.http_tls_cert, args.http_tls_key)
        if args.http_tls_ca or args.http_tls_cert:
            options["forward_ssl_context"] = client_ssl_context(args.http_tls_ca)
    except (OSError, ValueError) as exc:
        raise UsageError(f"--http-tls-*: cannot load the certificates: {exc}") from None
    if args.http_token_file:
        try:
            with open(args.http_token_file, encoding="utf-8") as file:
                token = file.read().strip()
        except (OSError, ValueError) as exc:
            raise UsageError(f"--http-token-file: {exc}") from None
        if not token or any(not 0x21 <= ord(c) <= 0x7E for c in token):
            raise UsageError(f"--http-token-file {args.http_token_file}: the token must be one word of printable "
                             "ASCII characters")
        options["token"] = token
    if args.http_max_connections < 1:
        raise UsageError("--http-max-connections must be at least 1")
    if not args.http_header_timeout > 0:
        raise UsageError("--http-header-timeout must be positive")
    options["max_connections"] = args.http_max_connections
    options["header_timeout"] = args.http_header_timeout
    return options


async def serve(options: NodeOptions, stop: asyncio.Event) -> None:
    """Run the node until `stop` is set. Raises StorageError/OSError/ValueError at startup."""
    storage = SqliteStorage(options.data_dir, node_id=options.node_id, cluster_id=options.cluster_id,
                            fsync=options.fsync)
    app = options.app
    try:
        server: RaftServer[Any, Any] = RaftServer(
            options.node_id, options.peers, app.state_machine(), storage,
            cluster_id=options.cluster_id, tls=options.tls, secret=options.secret, insecure=options.insecure,
            client_addresses={pid: format_address(a) for pid, a in options.peers_http.items()},
            max_pending=options.max_pending, max_pending_bytes=options.max_pending_bytes,
        )
    except BaseException:
        storage.close()
        raise
    api: HttpApi[Any, Any] = (
        KVHttpApi(server, app, app_name=options.app_name, **options.http_options) if isinstance(app, KVApp)
        else HttpApi(server, app, app_name=options.app_name, **options.http_options)
    )
    try:
        await server.start()
    except BaseException:
        await server.stop()
        raise
    try:
        await api.start(*options.http)
        # Everything allocated so far lives as long as the process: keep it out of the cyclic
        # collector, whose full passes over it stalled the leader for 50-160 ms under a flood
        # of client requests (long enough for an election).
        gc.freeze()
        log.info("node %s: app %s, raft %s, http %s, data %s, %s", options.node_id, options.app_name,
                 format_address(options.listen), format_address(options.http), options.data_dir,
                 "mutual TLS" if options.tls else "plain TCP authenticated by the cluster secret")
        await stop.wait()
        log.info("node %s: stopping", options.node_id)
    finally:
        await api.stop()
        await server.stop()


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(
        level=getattr(logging, args.log_level.upper()), stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        options = NodeOptions(args)
    except UsageError as exc:
        print(f"raftfsm node: {exc}", file=sys.stderr)
        return 2

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        await serve(options, stop)

    try:
        asyncio.run(main())
    except (StorageError, RaftError, OSError, ValueError) as exc:
        message = " ".join(str(exc).split()) or type(exc).__name__
        print(f"raftfsm node: {message}", file=sys.stderr)
        return 2
    return 0

"""`raftfsm cluster | status | certs | secret | kv | apply | read`: run a local cluster and talk
to one over HTTP."""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import ssl
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
from pathlib import Path
from types import FrameType
from typing import Any

from runtime.cluster import LocalCluster, http_json
from runtime.errors import ClusterError

DEFAULT_CLUSTER = "127.0.0.1:8001,127.0.0.1:8002,127.0.0.1:8003"
"""The HTTP addresses `raftfsm cluster --nodes 3` uses."""


def _addresses(text: str) -> list[str]:
    """`HOST:PORT` or `http(s)://HOST:PORT` items -> base URLs (http:// when none is given)."""
    addresses = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        if "://" not in item:
            item = f"http://{item}"
        addresses.append(item.rstrip("/"))
    return addresses


def _shown(url: str) -> str:
    return url.removeprefix("http://")


class ClientOptions:
    """--token-file and --ca of `kv` and `status`: headers and TLS context for every request."""

    def __init__(self, args: argparse.Namespace, command: str) -> None:
        self.headers: dict[str, str] = {}
        self.context: ssl.SSLContext | None = None
        if args.token_file:
            try:
                with open(args.token_file, encoding="utf-8") as file:
                    token = file.read().strip()
            except (OSError, ValueError) as exc:
                raise SystemExit(f"raftfsm {command}: --token-file: {exc}") from None
            if not token:
                raise SystemExit(f"raftfsm {command}: --token-file {args.token_file} is empty")
            self.headers["Authorization"] = f"Bearer {token}"
        if args.ca:
            try:
                self.context = ssl.create_default_context(cafile=args.ca)
            except (OSError, ValueError) as exc:
                raise SystemExit(f"raftfsm {command}: --ca: {exc}") from None


def _add_client_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--token-file", metavar="FILE",
                        help="send 'Authorization: Bearer <token>', the token being this file's content")
    parser.add_argument("--ca", metavar="FILE", help="CA certificates (PEM) to verify https:// nodes with "
                        "(default: the system's trust store)")


# -- raftfsm cluster -------------------------------------------------------------------------------
def add_cluster_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--nodes", type=int, default=3, help="how many nodes, named n1..nN (default 3)")
    parser.add_argument("--base-port", type=int, default=7001, help="Raft port of n1; n2 gets the next (default 7001)")
    parser.add_argument("--http-base-port", type=int, default=8001,
                        help="HTTP port of n1; n2 gets the next (default 8001)")
    parser.add_argument("--data-dir", metavar="DIR",
                        help="keep data, logs and the cluster secret or certificates here (default: a temporary "
                             "directory, removed on exit); an existing DIR restarts the cluster it holds")
    parser.add_argument("--tls", action="store_true",
                        help="mutual TLS between nodes, with development certificates made in DIR/certs "
                             "(default: plain TCP authenticated by a random cluster secret made in DIR/secret)")
    parser.add_argument("--no-fsync", action="store_true", help="pass --no-fsync to every node (tests only)")
    parser.add_argument("--app", metavar="MODULE:FACTORY",
                        help="the application every node serves (raftfsm node --app; default: the key-value store)")


def run_cluster(args: argparse.Namespace) -> int:
    if args.nodes < 1:
        print("raftfsm cluster: --nodes must be at least 1", file=sys.stderr)
        return 2
    temporary = args.data_dir is None
    base = Path(tempfile.mkdtemp(prefix="raftfsm-cluster-")) if temporary else Path(args.data_dir)
    cluster = LocalCluster(base, args.nodes, base_port=args.base_port, http_base_port=args.http_base_port,
                           tls=args.tls, fsync=not args.no_fsync, app=args.app)
    stopping = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stopping.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        cluster.start()
        print(f"{'node':<6} {'raft':<22} {'http':<22} pid")
        for node_id in cluster.ids:
            print(f"{node_id:<6} {cluster.raft_addresses[node_id]:<22} {cluster.http_url(node_id):<22} "
                  f"{cluster.processes[node_id].pid}")
        print(f"data and logs: {base}{' (temporary)' if temporary else ''}"
              f"; {'mutual TLS between nodes' if args.tls else f'cluster secret in {cluster.secret_file}'}")
        try:
            cluster.wait_until_serving(timeout=15.0)
            leader = cluster.wait_for_leader(timeout=15.0, agreed=True)
        except ClusterError as exc:
            print(f"raftfsm cluster: {exc}", file=sys.stderr)
            return 1
        addresses = ",".join(cluster.http_addresses.values())
        if args.app is None:
            print(f"leader: {leader}. Try: raftfsm kv put greeting hello --cluster {addresses}")
        else:
            print(f"leader: {leader}. Try: raftfsm apply '<command as JSON>' --cluster {addresses}")
        print("Ctrl-C stops the cluster.", flush=True)
        reported: set[str] = set()
        while not stopping.wait(0.5):
            for node_id, process in cluster.processes.items():
                if process.poll() is not None and node_id not in reported:
                    reported.add(node_id)
                    print(f"node {node_id} exited with status {process.returncode}: "
                          f"{cluster.last_log_line(node_id)}", flush=True)
        print("stopping the cluster...", flush=True)
        return 0
    finally:
        statuses = cluster.stop()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        if temporary:
            shutil.rmtree(base, ignore_errors=True)
        if statuses:
            print("stopped: " + ", ".join(f"{nid} ({code})" for nid, code in statuses.items()))


# -- raftfsm status ------------------------------------------------------------------------------
def add_status_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--cluster", default=DEFAULT_CLUSTER, metavar="[https://]HOST:PORT,...",
                        help=f"HTTP addresses of the nodes (default {DEFAULT_CLUSTER})")
    parser.add_argument("--timeout", type=float, default=2.0, help="seconds to wait for each node (default 2)")
    _add_client_arguments(parser)


def run_status(args: argparse.Namespace) -> int:
    addresses = _addresses(args.cluster)
    if not addresses:
        print("raftfsm status: --cluster names no node", file=sys.stderr)
        return 2
    client = ClientOptions(args, "status")
    columns = ("address", "id", "role", "term", "leader", "commit", "applied")
    rows: list[tuple[str, ...]] = []
    unreachable = 0
    for address in addresses:
        try:
            code, body, _ = http_json("GET", f"{address}/status", timeout=args.timeout, headers=client.headers,
                                      context=client.context)
        except OSError as exc:
            unreachable += 1
            reason = getattr(exc, "reason", exc)
            rows.append((_shown(address), "-", f"unreachable ({reason})", "", "", "", ""))
            continue
        if code != 200:
            unreachable += 1
            rows.append((_shown(address), "-", f"HTTP {code}: {body.get('error', '')}".rstrip(": "),
                         "", "", "", ""))
            continue
        rows.append((_shown(address), *(str(body.get(c) if body.get(c) is not None else "-") for c in columns[1:])))
        if body.get("role") == "error" and body.get("halt_reason"):
            rows[-1] = (*rows[-1][:2], f"error: {body['halt_reason']}", *rows[-1][3:])
    widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(columns)]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip())
    for row in rows:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())
    return 1 if unreachable else 0


# -- raftfsm certs ------------------------------------------------------------------------------
def add_certs_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, metavar="DIR", help="directory for ca.pem/ca.key and <id>.pem/.key")
    parser.add_argument("--nodes", required=True, metavar="ID,...", help="node ids, e.g. n1,n2,n3")


def run_certs(args: argparse.Namespace) -> int:
    from runtime.certs import make_dev_certs

    node_ids = [n.strip() for n in args.nodes.split(",") if n.strip()]
    if not node_ids:
        print("raftfsm certs: --nodes names no node", file=sys.stderr)
        return 2
    try:
        configs = make_dev_certs(args.out, node_ids)
    except (ValueError, OSError, RuntimeError) as exc:
        print(f"raftfsm certs: {exc}", file=sys.stderr)
        return 2
    out = Path(args.out)
    print(f"CA:   {out / 'ca.pem'} (key {out / 'ca.key'}; reused if it existed)")
    for node_id, config in configs.items():
        print(f"{node_id}: --tls-ca {config.ca_file} --tls-cert {config.cert_file} --tls-key {config.key_file}")
    print("development certificates only: keep ca.key private, use your own PKI in production")
    return 0


# -- raftfsm secret ------------------------------------------------------------------------------
def add_secret_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, metavar="FILE",
                        help="the file to create (mode 0600; an existing file is never overwritten)")


def run_secret(args: argparse.Namespace) -> int:
    from runtime.transport.auth import write_secret

    try:
        path = write_secret(args.out)
    except FileExistsError:
        print(f"raftfsm secret: {args.out} exists; not overwriting it", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"raftfsm secret: cannot create {args.out}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    print(f"wrote a random cluster secret to {path} (mode 0600): copy it to every node, keep it private, "
          f"and give each node --secret-file {path}")
    return 0


# -- raftfsm kv --------------------------------------------------------------------------------
def add_kv_arguments(parser: argparse.ArgumentParser) -> None:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--cluster", default=DEFAULT_CLUSTER, metavar="[https://]HOST:PORT,...",
                        help=f"HTTP addresses of the nodes, tried in order (default {DEFAULT_CLUSTER})")
    common.add_argument("--timeout", type=float, default=10.0,
                        help="give up after this many seconds of retries (default 10)")
    common.add_argument("--json", action="store_true", help="print the JSON answer instead of the value")
    _add_client_arguments(common)
    ops = parser.add_subparsers(dest="op", required=True, metavar="OP")
    put = ops.add_parser("put", parents=[common], help="set KEY to VALUE", description="Set KEY to VALUE.")
    put.add_argument("key")
    put.add_argument("value")
    get = ops.add_parser("get", parents=[common], help="print KEY's value (exit 1 if absent)",
                         description="Print KEY's value; exit status 1 if it is absent.")
    get.add_argument("key")
    delete = ops.add_parser("del", parents=[common], help="remove KEY (exit 1 if absent)",
                            description="Remove KEY; exit status 1 if it was absent.")
    delete.add_argument("key")
    cas = ops.add_parser("cas", parents=[common], help="set KEY to VALUE if it holds --expected (or is --absent)",
                         description="Compare-and-set: set KEY to VALUE only if it currently holds --expected "
                                     "(or, with --absent, does not exist). Exit status 1 if it did not.")
    cas.add_argument("key")
    cas.add_argument("value")
    which = cas.add_mutually_exclusive_group(required=True)
    which.add_argument("--expected", help="the value KEY must hold now")
    which.add_argument("--absent", action="store_true", help="KEY must not exist now")


class KVClientError(Exception):
    """No node could serve the request within the timeout."""


def kv_request(addresses: list[str], method: str, path: str, body: bytes | None, *, timeout: float,
               idempotent: bool, content_type: str = "application/json",
               client: ClientOptions | None = None,
               extra_headers: dict[str, str] | None = None) -> tuple[int, dict[str, Any], str]:
    """Send the request to the listed nodes (base URLs) in turn until one answers it: a
    request that could not be sent (no connection) or got 503 (never applied) moves on to
    the next node (and, after each round, waits a little longer, from 50 to 500 ms). An
    outcome-unknown failure — 502, 504, or the connection lost after the request was sent —
    is retried only for idempotent requests; otherwise KVClientError says the outcome is
    unknown. Returns (status, JSON body, the address that answered)."""
    headers = {"Content-Type": content_type, **(client.headers if client else {}), **(extra_headers or {})}
    deadline = time.monotonic() + timeout
    backoff = 0.05
    last = "no node tried"
    while True:
        for address in addresses:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise KVClientError(f"gave up after {timeout}s: {last}")
            try:
                code, answer, _ = http_json(method, f"{address}{path}", body, timeout=min(remaining, 7.0),
                                            headers=headers, context=client.context if client else None)
            except urllib.error.URLError as exc:  # raised while connecting or sending: not (fully) sent
                last = f"{address}: {exc.reason}"
                continue
            except OSError as exc:  # while waiting for the answer: the request was sent
                last = f"{address}: no answer after the request was sent ({exc or type(exc).__name__})"
                if not idempotent:
                    raise KVClientError(f"{last}; the outcome is unknown") from None
                continue
            if code == 503 or (code in (502, 504) and idempotent):
                last = f"{address}: HTTP {code}: {answer.get('error', answer)}"
                continue
            return code, answer, address
        time.sleep(max(0.0, min(backoff, deadline - time.monotonic())))
        backoff = min(backoff * 2, 0.5)


def _write_once(addresses: list[str], method: str, path: str, body: bytes | None, deadline: float,
                client: ClientOptions) -> tuple[int, dict[str, Any]]:
    """One write under a client session of its own: opened first (POST /sessions), then the
    command as sequence 1, retried on any node after any unclear outcome until it is
    definite — the session makes every retry return the first answer instead of applying
    the command again. An expired session (410: not applied) gets a new session."""
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise KVClientError("gave up: no session could be opened in time")
        code, answer, _ = kv_request(addresses, "POST", "/sessions", b"", timeout=remaining, idempotent=True,
                                     client=client)
        if code != 201 or not isinstance(answer.get("session"), int):
            return code, answer
        session = {"X-Raft-Session": str(answer["session"]), "X-Raft-Sequence": "1"}
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise KVClientError("gave up after opening a session; the command was not sent")
        code, answer, _ = kv_request(addresses, method, path, body, timeout=remaining, idempotent=True,
                                     client=client, extra_headers=session)
        if code != 410:
            return code, answer


def run_kv(args: argparse.Namespace) -> int:
    addresses = _addresses(args.cluster)
    if not addresses:
        print("raftfsm kv: --cluster names no node", file=sys.stderr)
        return 2
    path = f"/kv/{urllib.parse.quote(args.key, safe='')}"
    body: bytes | None = None
    if args.op == "put":
        method, body = "PUT", json.dumps({"value": args.value}).encode()
    elif args.op == "get":
        method = "GET"
    elif args.op == "del":
        method = "DELETE"
    else:
        method, path = "POST", path + "/cas"
        body = json.dumps({"expected": None if args.absent else args.expected, "value": args.value}).encode()
    client = ClientOptions(args, "kv")
    deadline = time.monotonic() + args.timeout
    try:
        if method == "GET":  # a read changes nothing: retrying it is always safe
            code, answer, _ = kv_request(addresses, method, path, body, timeout=args.timeout, idempotent=True,
                                         client=client)
        else:
            code, answer = _write_once(addresses, method, path, body, deadline, client)
    except KVClientError as exc:
        print(f"raftfsm kv: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps({"status": code, **answer}))
    if code == 404:
        if not args.json:
            print(f"raftfsm kv: {args.key!r} not found", file=sys.stderr)
        return 1
    if code != 200:
        if not args.json:
            print(f"raftfsm kv: HTTP {code}: {answer.get('error', answer)}", file=sys.stderr)
        return 1
    if args.op == "cas" and not answer.get("ok"):
        if not args.json:
            current = answer.get("value")
            print(f"raftfsm kv: compare-and-set failed; {args.key!r} "
                  f"{'is absent' if current is None else f'holds {current!r}'}", file=sys.stderr)
        return 1
    if not args.json:
        print(answer.get("value") if args.op == "get" else "OK")
    return 0


# -- raftfsm apply | read (any app) ------------------------------------------------------------------
def add_apply_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("body", metavar="JSON", help="the command, as the app's command_from_json reads it")
    _add_app_client_arguments(parser)


def add_read_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("body", metavar="JSON", help="the query, as the app's query_from_json reads it")
    parser.add_argument("--log", action="store_true", help="read through the log instead of ReadIndex")
    _add_app_client_arguments(parser)


def _add_app_client_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--cluster", default=DEFAULT_CLUSTER, metavar="[https://]HOST:PORT,...",
                        help=f"HTTP addresses of the nodes, tried in order (default {DEFAULT_CLUSTER})")
    parser.add_argument("--timeout", type=float, default=10.0,
                        help="give up after this many seconds of retries (default 10)")
    _add_client_arguments(parser)


def run_apply(args: argparse.Namespace) -> int:
    """`POST /apply` under a session of its own (resent until the outcome is definite, applied
    once); prints the result as JSON. Exit 1 when the command was refused or failed."""
    return _run_app_request(args, "apply", "/apply", args.body, write=True)


def run_read(args: argparse.Namespace) -> int:
    """`POST /read` (a ReadIndex read, or through the log with --log); prints the result."""
    return _run_app_request(args, "read", "/read?read=log" if args.log else "/read", args.body, write=False)


def _run_app_request(args: argparse.Namespace, command: str, path: str, text: str, *, write: bool) -> int:
    addresses = _addresses(args.cluster)
    if not addresses:
        print(f"raftfsm {command}: --cluster names no node", file=sys.stderr)
        return 2
    try:
        body = json.dumps(json.loads(text)).encode()
    except ValueError as exc:
        print(f"raftfsm {command}: the argument is not JSON: {exc}", file=sys.stderr)
        return 2
    client = ClientOptions(args, command)
    try:
        if write:
            code, answer = _write_once(addresses, "POST", path, body, time.monotonic() + args.timeout, client)
        else:  # a read changes nothing: retrying it is always safe
            code, answer, _ = kv_request(addresses, "POST", path, body, timeout=args.timeout, idempotent=True,
                                         client=client)
    except KVClientError as exc:
        print(f"raftfsm {command}: {exc}", file=sys.stderr)
        return 1
    if code != 200:
        print(f"raftfsm {command}: HTTP {code}: {answer.get('error', answer)}", file=sys.stderr)
        return 1
    print(json.dumps(answer.get("result")))
    return 0

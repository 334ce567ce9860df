"""`LocalCluster`: N `raftfsm node` processes on this machine, for `raftfsm cluster`, the
demo and the process tests. `app="package.module:factory"` runs that app (runtime/app.py)
instead of the key-value store; the nodes find it on PYTHONPATH, which starts with the
project root (so `examples.lock:factory` works from a checkout), or in the caller's
current directory (`raftfsm node --app-dir`, default `.`).

Layout of the base directory:

    data/<id>/     each node's data directory (raft.db)
    logs/<id>.log  each node's stderr and stdout
    certs/         the development CA and node certificates (tls=True), and the nodes'
                   HTTPS certificates http-<id>.pem/.key (http_tls=True)
    http-token     the bearer token every HTTP request needs (http_token=...)
    secret         the cluster secret, mode 0600 (unless tls=True)

The HTTP helpers here are synchronous (urllib): the callers are scripts and tests.
"""

from __future__ import annotations

import json
import logging
import os
import resource
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from runtime.errors import ClusterError as ClusterError  # moved to runtime.errors; re-exported

log = logging.getLogger("raftfsm.cluster")

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """Ports the kernel reports free right now (bound together, so they are distinct)."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind((host, 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def http_json(
    method: str, url: str, body: bytes | None = None, *, timeout: float = 2.0,
    headers: Mapping[str, str] | None = None, context: ssl.SSLContext | None = None,
) -> tuple[int, dict[str, Any], dict[str, str]]:
    """One HTTP request; returns (status, decoded JSON body, headers). HTTP error statuses are
    returned, not raised; connection failures raise OSError (urllib.error.URLError is one).
    `context` verifies an https:// server."""
    request = urllib.request.Request(url, data=body, method=method, headers=dict(headers or {}))
    try:
        with urllib.request.urlopen(request, timeout=timeout, context=context) as response:
            status, raw, got = response.status, response.read(), dict(response.headers.items())
    except urllib.error.HTTPError as error:
        status, raw, got = error.code, error.read(), dict(error.headers.items())
        error.close()
    try:
        decoded = json.loads(raw) if raw else {}
    except ValueError:
        decoded = {"error": raw.decode(errors="replace")}
    return status, decoded if isinstance(decoded, dict) else {"value": decoded}, got


class LocalCluster:
    """`nodes` node processes `n1..nN` under `base_dir`. Ports default to free ones picked at
    start; give `base_port`/`http_base_port` for fixed ones (n1 gets the base port).
    `http_tls` serves the HTTP API over HTTPS (certificates from the development CA);
    `http_token` requires that bearer token; `app` is the `--app` of every node (default: the
    key-value store); `node_args` are appended to every node's command."""

    def __init__(
        self,
        base_dir: str | os.PathLike[str],
        nodes: int = 3,
        *,
        base_port: int | None = None,
        http_base_port: int | None = None,
        host: str = "127.0.0.1",
        tls: bool = False,
        fsync: bool = True,
        cluster_id: str = "raftfsm",
        python: str = sys.executable,
        log_level: str = "info",
        http_tls: bool = False,
        http_token: str | None = None,
        app: str | None = None,
        node_args: Sequence[str] = (),
    ) -> None:
        if nodes < 1:
            raise ValueError("a cluster needs at least one node")
        self.base_dir = Path(base_dir)
        self.ids = [f"n{i}" for i in range(1, nodes + 1)]
        self.host = host
        self.tls = tls
        self.fsync = fsync
        self.cluster_id = cluster_id
        self.python = python
        self.log_level = log_level
        self.http_tls = http_tls
        self.http_token = http_token
        self.app = app
        self.node_args = list(node_args)
        raft_ports = ([base_port + i for i in range(nodes)] if base_port is not None
                      else free_ports(nodes, host))
        http_ports = ([http_base_port + i for i in range(nodes)] if http_base_port is not None
                      else free_ports(nodes, host))
        self.raft_addresses = {nid: f"{host}:{port}" for nid, port in zip(self.ids, raft_ports, strict=True)}
        self.http_addresses = {nid: f"{host}:{port}" for nid, port in zip(self.ids, http_ports, strict=True)}
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self._logs: dict[str, IO[bytes]] = {}

    # -- paths -----------------------------------------------------------------------------
    def data_dir(self, node_id: str) -> Path:
        return self.base_dir / "data" / node_id

    def log_path(self, node_id: str) -> Path:
        return self.base_dir / "logs" / f"{node_id}.log"

    @property
    def certs_dir(self) -> Path:
        return self.base_dir / "certs"

    @property
    def secret_file(self) -> Path:
        return self.base_dir / "secret"

    def http_url(self, node_id: str) -> str:
        return f"{'https' if self.http_tls else 'http'}://{self.http_addresses[node_id]}"

    @property
    def token_file(self) -> Path:
        return self.base_dir / "http-token"

    def http_context(self) -> ssl.SSLContext | None:
        """What verifies the nodes' HTTPS certificates (None without http_tls)."""
        return ssl.create_default_context(cafile=str(self.certs_dir / "ca.pem")) if self.http_tls else None

    def http_headers(self, headers: Mapping[str, str] | None = None) -> dict[str, str]:
        """`headers` plus the bearer token, if the cluster has one."""
        result = dict(headers or {})
        if self.http_token is not None:
            result.setdefault("Authorization", f"Bearer {self.http_token}")
        return result

    def http(self, method: str, node_id: str, path: str, body: bytes | None = None, *, timeout: float = 2.0,
             headers: Mapping[str, str] | None = None) -> tuple[int, dict[str, Any], dict[str, str]]:
        """`http_json` against one node, with the cluster's token and CA."""
        return http_json(method, f"{self.http_url(node_id)}{path}", body, timeout=timeout,
                         headers=self.http_headers(headers), context=self.http_context())

    def command(self, node_id: str) -> list[str]:
        """The `raftfsm node` command line of one node."""
        join = ",".join
        command = [
            self.python, "-m", "runtime.cli", "node", "--id", node_id,
            "--listen", self.raft_addresses[node_id],
            "--peers", join(f"{nid}={address}" for nid, address in self.raft_addresses.items()),
            "--http", self.http_addresses[node_id],
            "--peers-http", join(f"{nid}={address}" for nid, address in self.http_addresses.items()),
            "--data-dir", str(self.data_dir(node_id)), "--cluster-id", self.cluster_id,
            "--log-level", self.log_level,
        ]
        if self.tls:
            certs = self.certs_dir
            command += ["--tls-ca", str(certs / "ca.pem"), "--tls-cert", str(certs / f"{node_id}.pem"),
                        "--tls-key", str(certs / f"{node_id}.key")]
        else:
            command += ["--secret-file", str(self.secret_file)]
        if not self.fsync:
            command.append("--no-fsync")
        if self.http_tls:
            certs = self.certs_dir
            command += ["--http-tls-cert", str(certs / f"http-{node_id}.pem"),
                        "--http-tls-key", str(certs / f"http-{node_id}.key"), "--http-tls-ca", str(certs / "ca.pem")]
        if self.http_token is not None:
            command += ["--http-token-file", str(self.token_file)]
        if self.app is not None:
            command += ["--app", self.app]
        return command + self.node_args

    # -- lifecycle ------------------------------------------------------------------------------
    def start(self) -> None:
        """Start every node."""
        for node_id in self.ids:
            self.start_node(node_id)

    def _make_credentials(self) -> None:
        """Dev certificates when tls=True, otherwise a random cluster secret (mode 0600);
        existing ones are reused."""
        if self.tls and not (self.certs_dir / "ca.pem").exists():
            from runtime.certs import make_dev_certs

            make_dev_certs(self.certs_dir, self.ids)
        if not self.tls and not self.secret_file.exists():
            from runtime.transport.auth import write_secret

            write_secret(self.secret_file)
        if self.http_tls and not (self.certs_dir / f"http-{self.ids[-1]}.pem").exists():
            make_http_certs(self.certs_dir, self.ids, [self.host, "localhost"])
        if self.http_token is not None:
            self.base_dir.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.token_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as out:
                out.write(self.http_token + "\n")

    def start_node(self, node_id: str, file_size_limit: int | None = None) -> subprocess.Popen[bytes]:
        """Start one node (making the cluster's certificates or secret first if they are
        missing). `file_size_limit` (bytes) caps the files it may write (RLIMIT_FSIZE): a
        real "disk full" for that process alone."""
        if node_id not in self.raft_addresses:
            raise KeyError(f"no node {node_id!r} in this cluster ({', '.join(self.ids)})")
        self._make_credentials()
        running = self.processes.get(node_id)
        if running is not None and running.poll() is None:
            raise ClusterError(f"node {node_id} is already running (pid {running.pid})")
        self.log_path(node_id).parent.mkdir(parents=True, exist_ok=True)
        log_file = self._logs.get(node_id)
        if log_file is None:
            log_file = self._logs[node_id] = open(self.log_path(node_id), "ab")  # noqa: SIM115
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PROJECT_ROOT), env.get("PYTHONPATH")]))
        process = subprocess.Popen(
            self.command(node_id), stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT,
            env=env, start_new_session=True,  # a Ctrl-C in the terminal reaches us, and we stop the nodes
            preexec_fn=None if file_size_limit is None else lambda: _limit_file_size(file_size_limit),
        )
        self.processes[node_id] = process
        log.info("started %s (pid %d): raft %s, http %s", node_id, process.pid, self.raft_addresses[node_id],
                 self.http_addresses[node_id])
        return process

    def kill(self, node_id: str) -> None:
        """SIGKILL one node (a crash: nothing is flushed or closed) and reap it."""
        process = self.processes[node_id]
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
        process.wait()
        log.info("killed %s (pid %d)", node_id, process.pid)

    def stop_node(self, node_id: str, timeout: float = 5.0) -> int | None:
        """SIGTERM one node, SIGKILL it after `timeout`; returns its exit status."""
        process = self.processes.get(node_id)
        if process is None:
            return None
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                log.warning("%s ignored SIGTERM for %.1fs; killing it", node_id, timeout)
                process.kill()
                process.wait()
        return process.returncode

    def restart(self, node_id: str) -> subprocess.Popen[bytes]:
        self.stop_node(node_id)
        return self.start_node(node_id)

    def stop(self, timeout: float = 5.0) -> dict[str, int | None]:
        """SIGTERM every node, SIGKILL those still running after `timeout`; returns exit statuses."""
        for process in self.processes.values():
            if process.poll() is None:
                process.terminate()
        deadline = time.monotonic() + timeout
        statuses: dict[str, int | None] = {}
        for node_id, process in self.processes.items():
            try:
                process.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("%s ignored SIGTERM for %.1fs; killing it", node_id, timeout)
                process.kill()
                process.wait()
            statuses[node_id] = process.returncode
        for log_file in self._logs.values():
            log_file.close()
        self._logs.clear()
        return statuses

    def __enter__(self) -> LocalCluster:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.stop()

    def running(self, node_id: str) -> bool:
        process = self.processes.get(node_id)
        return process is not None and process.poll() is None

    # -- observing ------------------------------------------------------------------------------
    def status(self, node_id: str, timeout: float = 1.0) -> dict[str, Any] | None:
        """The node's /status, or None if it does not answer."""
        try:
            code, body, _ = self.http("GET", node_id, "/status", timeout=timeout)
        except OSError:
            return None
        return body if code == 200 else None

    def leader(self, among: Iterable[str] | None = None) -> str | None:
        """The node that reports itself leader in the highest term, or None."""
        best: tuple[int, str] | None = None
        for node_id in among if among is not None else self.ids:
            if not self.running(node_id):
                continue
            status = self.status(node_id, timeout=0.5)
            if status is not None and status.get("role") == "leader":
                term = int(status.get("term", 0))
                if best is None or term > best[0]:
                    best = (term, node_id)
        return best[1] if best else None

    def wait_until_serving(self, timeout: float = 10.0, interval: float = 0.01) -> None:
        """Poll until every running node answers /status."""
        deadline = time.monotonic() + timeout
        waiting = [nid for nid in self.ids if self.running(nid)]
        while waiting:
            waiting = [nid for nid in waiting if self.running(nid) and self.status(nid, timeout=0.5) is None]
            self._check_exits(waiting)
            if waiting and time.monotonic() >= deadline:
                raise ClusterError(f"{', '.join(waiting)} not serving HTTP within {timeout}s; "
                                   f"logs in {self.base_dir / 'logs'}")
            if waiting:
                time.sleep(interval)

    def _all_follow(self, leader: str, among: Iterable[str] | None) -> bool:
        for node_id in among if among is not None else self.ids:
            if self.running(node_id):
                status = self.status(node_id, timeout=0.5)
                if status is None or status.get("leader") != leader:
                    return False
        return True

    def _check_exits(self, among: Iterable[str] | None) -> None:
        """Raise if a node (of `among`) exited on its own, with the last line of its log."""
        for node_id, process in self.processes.items():
            if (among is None or node_id in among) and process.poll() is not None \
                    and process.returncode not in (0, -signal.SIGKILL, -signal.SIGTERM):
                raise ClusterError(f"node {node_id} exited with status {process.returncode}: "
                                   f"{self.last_log_line(node_id)} (log: {self.log_path(node_id)})")

    def wait_for_leader(self, timeout: float = 10.0, among: Iterable[str] | None = None,
                        interval: float = 0.01, agreed: bool = False) -> str:
        """Poll /status until a node (of `among`) reports itself leader; return its id. With
        `agreed`, also wait until every running node of `among` names that leader, so that
        each of them can serve (forward) requests."""
        candidates = list(among) if among is not None else None
        deadline = time.monotonic() + timeout
        while True:
            leader = self.leader(candidates)
            if leader is not None and (not agreed or self._all_follow(leader, candidates)):
                return leader
            self._check_exits(candidates)
            if time.monotonic() >= deadline:
                raise ClusterError(f"no leader within {timeout}s; logs in {self.base_dir / 'logs'}")
            time.sleep(interval)

    def last_log_line(self, node_id: str) -> str:
        try:
            lines = self.log_path(node_id).read_text(errors="replace").strip().splitlines()
        except OSError:
            return ""
        return lines[-1] if lines else ""

    # -- the key-value API ---------------------------------------------------------------------
    def put(self, node_id: str, key: str, value: str, timeout: float = 6.0) -> tuple[int, dict[str, Any]]:
        code, body, _ = self.http("PUT", node_id, f"/kv/{_quote(key)}", value.encode(), timeout=timeout,
                                  headers={"Content-Type": "text/plain; charset=utf-8"})
        return code, body

    def get(self, node_id: str, key: str, timeout: float = 6.0) -> tuple[int, dict[str, Any]]:
        code, body, _ = self.http("GET", node_id, f"/kv/{_quote(key)}", timeout=timeout)
        return code, body


    # -- any app: the generic endpoints ------------------------------------------------------------
    def open_session(self, node_id: str, timeout: float = 6.0) -> int:
        """`POST /sessions` on one node; the session id (ClusterError if none was opened)."""
        code, body, _ = self.http("POST", node_id, "/sessions", b"", timeout=timeout)
        if code != 201 or not isinstance(body.get("session"), int):
            raise ClusterError(f"{node_id} opened no session: HTTP {code} {body}")
        session: int = body["session"]
        return session

    def apply(self, node_id: str, command: Any, *, session: tuple[int, int] | None = None,
              timeout: float = 6.0) -> tuple[int, dict[str, Any], dict[str, str]]:
        """`POST /apply` of `command` (JSON) on one node, under `session=(id, sequence)` if
        given; returns (status, JSON body, headers)."""
        headers = {"Content-Type": "application/json"}
        if session is not None:
            headers.update({"X-Raft-Session": str(session[0]), "X-Raft-Sequence": str(session[1])})
        return self.http("POST", node_id, "/apply", json.dumps(command).encode(), timeout=timeout, headers=headers)

    def read(self, node_id: str, query: Any, timeout: float = 6.0) -> tuple[int, dict[str, Any], dict[str, str]]:
        """`POST /read` of `query` (JSON) on one node: a ReadIndex read; (status, body, headers)."""
        return self.http("POST", node_id, "/read", json.dumps(query).encode(), timeout=timeout,
                         headers={"Content-Type": "application/json"})


def _limit_file_size(limit: int) -> None:
    """In the child, before exec: writes past `limit` fail with EFBIG instead of the
    default SIGXFSZ killing the process (an ignored signal stays ignored across exec)."""
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)


def _quote(key: str) -> str:
    return urllib.parse.quote(key, safe="")


def make_http_certs(certs_dir: str | os.PathLike[str], node_ids: Iterable[str], hosts: Iterable[str]) -> None:
    """Development HTTPS certificates http-<id>.pem/.key in `certs_dir`, signed by the development
    CA there (made if missing, as `raftfsm certs` does) and naming every host in `hosts` (IP
    addresses or DNS names) and the node id, so that clients verify them with ca.pem."""
    import datetime
    import ipaddress

    from runtime.certs import NODE_VALIDITY, _crypto, _key_pem, _load_or_make_ca, _write

    crypto = _crypto()
    x509 = crypto.x509
    out = Path(certs_dir)
    now = datetime.datetime.now(datetime.UTC)
    ca, ca_key = _load_or_make_ca(crypto, out, now)
    names: list[Any] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    for node_id in node_ids:
        key = crypto.ec.generate_private_key(crypto.ec.SECP256R1())
        certificate = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(crypto.NameOID.COMMON_NAME, node_id)]))
            .issuer_name(ca.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + NODE_VALIDITY)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.SubjectAlternativeName([*names, x509.DNSName(node_id)]), critical=False)
            .add_extension(x509.ExtendedKeyUsage([crypto.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                           critical=False)
            .sign(ca_key, crypto.hashes.SHA256())
        )
        _write(out / f"http-{node_id}.key", _key_pem(crypto, key), private=True)
        _write(out / f"http-{node_id}.pem", certificate.public_bytes(crypto.serialization.Encoding.PEM),
               private=False)

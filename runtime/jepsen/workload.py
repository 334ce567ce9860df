"""The clients of the Jepsen-style test: threads doing get/put/cas/delete over HTTP on a
few keys, each request to a random node, every operation recorded in a `History`.

**Outcomes** (docs/kv.md; `Pending.http` maps statuses): 200 and 404 are ok answers with
the result from the JSON body; 503 (and other 4xx) are definite failures — nothing was
applied; 502, 504 and any other status are unknown. A request whose TCP connection could
not be opened was never sent: a definite failure too. Once connected, a timeout, a reset
or a malformed answer leaves the outcome unknown.

**Keys.** Each write writes a unique value (`"<client>-<n>"`), and a key takes at most
`ops_per_key` operations before it is retired and a fresh key takes its place, so no key
gets more operations than the checker handles quickly, however long the run.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import random
import threading
import time
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final

from attrs import frozen

from runtime.kv import CompareAndSet, Delete, Get, KVCommand, Put
from runtime.linearizability import History, Operation, Outcome

__all__ = ["Detail", "KeySpace", "Mix", "Workload", "request"]

_MAX_ANSWER: Final = 1 << 16
"""The longest answer body read (the API's answers are small JSON objects)."""


@frozen
class Detail:
    """What the client saw for one operation, beyond its outcome: the node it asked, the
    HTTP status (None: no answer), the leader header and a short note (error text)."""

    node: str
    status: int | None
    leader: str | None
    note: str

    def describe(self) -> str:
        answer = "no answer" if self.status is None else f"HTTP {self.status}"
        leader = f", served by {self.leader}" if self.leader else ""
        note = f": {self.note}" if self.note else ""
        return f"to {self.node}, {answer}{leader}{note}"


def _http_request(command: KVCommand) -> tuple[str, str, bytes | None, dict[str, str]]:
    path = f"/kv/{urllib.parse.quote(command.key, safe='')}"
    if isinstance(command, Get):
        return "GET", path, None, {}
    if isinstance(command, Put):
        return "PUT", path, command.value.encode(), {"Content-Type": "text/plain; charset=utf-8"}
    if isinstance(command, Delete):
        return "DELETE", path, None, {}
    body = json.dumps({"expected": command.expected, "value": command.value}).encode()
    return "POST", f"{path}/cas", body, {"Content-Type": "application/json"}


def _short(text: str, limit: int = 160) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit - 3] + "..."


def request(history: History, client: str, node: str, address: str, command: KVCommand,
            timeout: float) -> tuple[Operation, Detail]:
    """Send `command` to the node at `address` (HOST:PORT) on a fresh connection and record
    it in `history` as `client`'s operation: invoked just before connecting, completed as
    soon as the answer (or the error) is in."""
    host, _, port = address.rpartition(":")
    method, path, body, headers = _http_request(command)
    headers = {**headers, "Connection": "close"}
    pending = history.invoke(client, command)
    connection = http.client.HTTPConnection(host, int(port), timeout=timeout)
    try:
        try:
            connection.connect()
        except OSError as exc:
            return pending.fail(), Detail(node, None, None, _short(f"cannot connect, nothing sent: {exc!r}"))
        try:
            connection.request(method, path, body=body, headers=headers)
            response = connection.getresponse()
            raw = response.read(_MAX_ANSWER)
            status, leader = response.status, response.getheader("X-Raft-Leader")
        except (OSError, http.client.HTTPException) as exc:
            return pending.unknown(), Detail(node, None, None, _short(f"sent, then {exc!r}"))
    finally:
        connection.close()
    decoded: Any = None
    with contextlib.suppress(ValueError):
        decoded = json.loads(raw) if raw else None
    answer: Mapping[str, Any] | None = decoded if isinstance(decoded, dict) else None
    note = "" if answer is None or status in (200, 404) else _short(str(answer.get("error", "")))
    if status == 200 and (answer is None or answer.get("key") != command.key):
        return pending.unknown(), Detail(node, status, leader, _short(f"malformed 200 answer: {raw!r}"))
    try:
        operation = pending.http(status, answer)
    except (ValueError, KeyError, TypeError) as exc:
        return pending.unknown(), Detail(node, status, leader, _short(f"malformed answer {raw!r}: {exc}"))
    return operation, Detail(node, status, leader, note)


class KeySpace:
    """`active` keys at a time; each is retired after `ops_per_key` operations and
    replaced by a fresh one. Thread-safe."""

    def __init__(self, active: int, ops_per_key: int) -> None:
        if active < 1 or ops_per_key < 1:
            raise ValueError("need at least one key and one operation per key")
        self.ops_per_key = ops_per_key
        self._lock = threading.Lock()
        self._created = 0
        self._counts: dict[str, int] = {}
        self._active = [self._new() for _ in range(active)]

    def _new(self) -> str:
        self._created += 1
        key = f"k{self._created}"
        self._counts[key] = 0
        return key

    def take(self, rng: random.Random) -> str:
        """A key for one more operation."""
        with self._lock:
            slot = rng.randrange(len(self._active))
            key = self._active[slot]
            self._counts[key] += 1
            if self._counts[key] >= self.ops_per_key:
                self._active[slot] = self._new()
            return key

    def keys(self) -> list[str]:
        """Every key used so far, in creation order."""
        with self._lock:
            return [key for key, count in self._counts.items() if count]


@frozen
class Mix:
    """Relative weights of the four operations."""

    get: float = 0.3
    put: float = 0.3
    cas: float = 0.2
    delete: float = 0.2


class Workload:
    """`clients` threads `c1..cN` issuing operations until `stop()`. `addresses` maps each
    node id to its HTTP HOST:PORT; `history` records everything, `details` what each
    operation's client saw (by operation id)."""

    def __init__(self, addresses: Mapping[str, str], *, clients: int, seed: int | str, keys: KeySpace,
                 history: History, timeout: float, mix: Mix = Mix(),
                 backoff: tuple[float, float] = (0.05, 0.2)) -> None:
        self.addresses = dict(addresses)
        self.nodes: Sequence[str] = sorted(self.addresses)
        self.keys = keys
        self.history = history
        self.timeout = timeout
        self.mix = mix
        self.backoff = backoff
        self.details: dict[int, Detail] = {}
        self._details_lock = threading.Lock()
        self._observed: dict[str, str | None] = {}
        self._observed_lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._client, args=(f"c{i}", random.Random(f"{seed}-c{i}")),
                                          name=f"jepsen-c{i}", daemon=True)
                         for i in range(1, clients + 1)]
        self.errors: list[str] = []

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self, timeout: float) -> list[str]:
        """Stop the clients, waiting up to `timeout` s in all (each finishes its request, which
        its own timeout bounds); returns the names of threads still running."""
        self._stop.set()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        return [thread.name for thread in self._threads if thread.is_alive()]

    def record(self, operation: Operation, detail: Detail) -> None:
        with self._details_lock:
            self.details[operation.id] = detail

    def _command(self, rng: random.Random, client: str, number: int, key: str) -> KVCommand:
        mix = self.mix
        kind = rng.choices(("get", "put", "cas", "delete"), (mix.get, mix.put, mix.cas, mix.delete))[0]
        value = f"{client}-{number}"
        if kind == "get":
            return Get(key)
        if kind == "put":
            return Put(key, value)
        if kind == "delete":
            return Delete(key)
        with self._observed_lock:
            expected = self._observed.get(key) if rng.random() < 0.8 else f"{client}-{rng.randrange(1, number + 1)}"
        return CompareAndSet(key, expected, value)

    def _observe(self, operation: Operation) -> None:
        if operation.outcome is not Outcome.OK or operation.result is None:
            return
        command, result = operation.command, operation.result
        with self._observed_lock:
            if isinstance(command, Delete):
                self._observed[command.key] = None
            else:
                self._observed[command.key] = result.value

    def _client(self, client: str, rng: random.Random) -> None:
        number = 0
        try:
            while not self._stop.is_set():
                number += 1
                key = self.keys.take(rng)
                command = self._command(rng, client, number, key)
                node = rng.choice(self.nodes)
                operation, detail = request(self.history, client, node, self.addresses[node], command,
                                            self.timeout)
                self.record(operation, detail)
                self._observe(operation)
                if operation.outcome is not Outcome.OK:
                    self._stop.wait(rng.uniform(*self.backoff))
        except Exception as exc:  # a bug in the harness: report it, do not hang the run
            self.errors.append(f"{client}: {exc!r}")
            raise


def final_reads(history: History, addresses: Mapping[str, str], keys: Sequence[str], *,
                leader: Callable[[], str | None], deadline: Callable[[], bool], timeout: float,
                record: Callable[[Operation, Detail], None], pause: Callable[[float], object]) -> list[str]:
    """Read every key until one read is ok (client `final`, each attempt recorded), asking
    the leader when one is known. Returns the keys that could not be read before
    `deadline()` became true."""
    unread: list[str] = []
    nodes = sorted(addresses)
    for index, key in enumerate(keys):
        attempt = 0
        while True:
            if deadline():
                unread.extend(keys[index:])
                return unread
            node = leader() if attempt else None
            node = node or nodes[(index + attempt) % len(nodes)]
            operation, detail = request(history, "final", node, addresses[node], Get(key), timeout)
            record(operation, detail)
            if operation.outcome is Outcome.OK:
                break
            attempt += 1
            pause(0.1)
    return unread

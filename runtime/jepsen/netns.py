"""A private network of Linux network namespaces, one per node, that can be partitioned.

Topology (built by `NamespaceNetwork.create`, removed by `close`):

- node `n<i>` runs in namespace `rfj<tag>-<pid>-n<i>` and owns one address,
  `10.213.<s>.<i>/32` on its loopback device, for Raft and HTTP alike;
- every pair of nodes has its own link: a veth from each namespace into a two-port bridge
  `rfj<tag>b<i><j>` in the root namespace (ports `rfj<tag>x<i><j>` and `rfj<tag>x<j><i>`),
  with a /32 route and a permanent neighbour entry for the peer on each side;
- the test's clients, in the root namespace, reach node `n<i>` over its own veth
  `rfj<tag>c<i>` (root address `10.213.<s>.<100+i>`), which partitions never touch, so a
  client can always talk to a node on the minority side.

A partition takes links down at the bridge ports in the root namespace (`ip link set ...
down`): the node sides keep their routes and neighbour entries, so packets are dropped
silently, as on a real network, instead of failing fast with "network unreachable".
Healing sets the ports up again. `<tag>` is random per network, `<s>` a /24 not in use in
the root namespace, `<pid>` the creating process: `cleanup_stale` removes what a process
that no longer exists left behind (namespaces, the processes still in them, root links).

Needs root and `ip` (iproute2); `create` raises `NetworkError` when the kernel or the
user refuses, and leaves nothing behind.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import random
import re
import signal
import subprocess
from collections.abc import Collection, Iterable, Sequence
from itertools import combinations
from types import TracebackType

__all__ = ["PREFIX", "NamespaceNetwork", "NetworkError", "cleanup_stale", "unavailable_reason"]

PREFIX = "rfj"
"""Every namespace and root-namespace link this module creates starts with it."""
_NAMESPACE = re.compile(rf"^{PREFIX}([0-9a-f]{{4}})-(\d+)-n(\d+)$")
_ROOT_LINK = re.compile(rf"^{PREFIX}([0-9a-f]{{4}})[bxc]\d+$")
_MAX_NODES = 9
"""Interface names are at most 15 characters: one digit per node index keeps them short."""
_IP_TIMEOUT = 10.0


class NetworkError(Exception):
    """An `ip` command failed (not root, no namespace support, ...)."""


def _ip(*args: str, check: bool = True) -> str:
    try:
        done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=_IP_TIMEOUT, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise NetworkError(f"ip {' '.join(args)}: {exc}") from None
    if check and done.returncode != 0:
        raise NetworkError(f"ip {' '.join(args)}: {done.stderr.strip() or f'exit status {done.returncode}'}")
    return done.stdout


def unavailable_reason() -> str | None:
    """Why namespaces cannot be used here (None: they may; `create` has the last word)."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return "not running as root"
    try:
        _ip("-V")
    except NetworkError as exc:
        return f"the ip command is missing: {exc}"
    return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _namespaces() -> list[str]:
    out = _ip("netns", "list", check=False)
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def _root_links() -> list[str]:
    try:
        links = json.loads(_ip("-j", "link", "show", check=False) or "[]")
    except ValueError:
        return []
    return [str(link.get("ifname", "")) for link in links if isinstance(link, dict)]


def _kill_namespace_processes(namespace: str) -> list[int]:
    """SIGCONT + SIGKILL every process in `namespace` (only called on namespaces this module
    created). Returns their pids."""
    pids = [int(p) for p in _ip("netns", "pids", namespace, check=False).split() if p.isdigit()]
    for pid in pids:
        for signum in (signal.SIGKILL, signal.SIGCONT):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)
    return pids


def cleanup_stale() -> list[str]:
    """Remove the namespaces and root links of networks whose creating process is gone (a
    run that crashed or was killed). Returns what it removed."""
    removed: list[str] = []
    live_tags: set[str] = set()
    for namespace in _namespaces():
        match = _NAMESPACE.match(namespace)
        if match is None:
            continue
        tag, pid = match.group(1), int(match.group(2))
        if _alive(pid):
            live_tags.add(tag)
            continue
        _kill_namespace_processes(namespace)
        _ip("netns", "delete", namespace, check=False)
        removed.append(namespace)
    for link in _root_links():
        match = _ROOT_LINK.match(link)
        if match is not None and match.group(1) not in live_tags:
            _ip("link", "delete", "dev", link, check=False)
            removed.append(link)
    return removed


class NamespaceNetwork:
    """`nodes` namespaces `n1..nN` with a partitionable link between every pair (see the
    module docstring). Use as a context manager, or call `create` then `close`."""

    RAFT_PORT = 7000
    HTTP_PORT = 8000

    def __init__(self, nodes: int) -> None:
        if not 1 <= nodes <= _MAX_NODES:
            raise ValueError(f"a namespace network has 1 to {_MAX_NODES} nodes, not {nodes}")
        rng = random.SystemRandom()
        self.tag = f"{rng.randrange(1 << 16):04x}"
        self.ids = [f"n{i}" for i in range(1, nodes + 1)]
        self._index = {nid: i for i, nid in enumerate(self.ids, start=1)}
        self.namespaces = {nid: f"{PREFIX}{self.tag}-{os.getpid()}-{nid}" for nid in self.ids}
        self.subnet = -1
        self.addresses: dict[str, str] = {}
        self._created_namespaces: list[str] = []
        self._created_links: list[str] = []
        self._cut: set[frozenset[str]] = set()
        self._closed = False

    # -- names ---------------------------------------------------------------------------------
    def _bridge(self, a: str, b: str) -> str:
        i, j = sorted((self._index[a], self._index[b]))
        return f"{PREFIX}{self.tag}b{i}{j}"

    def _port(self, a: str, b: str) -> str:
        """The root-namespace end of `a`'s veth toward `b`."""
        return f"{PREFIX}{self.tag}x{self._index[a]}{self._index[b]}"

    def _client_link(self, node: str) -> str:
        return f"{PREFIX}{self.tag}c{self._index[node]}"

    def client_address(self, node: str) -> str:
        """The root namespace's address on the client link of `node`."""
        return f"10.213.{self.subnet}.{100 + self._index[node]}"

    def links(self) -> list[frozenset[str]]:
        return [frozenset(pair) for pair in combinations(self.ids, 2)]

    # -- lifecycle -----------------------------------------------------------------------------
    def _pick_subnet(self) -> int:
        used = _ip("-4", "-o", "addr", "show", check=False) + _ip("-4", "route", "show", "table", "all", check=False)
        free = [s for s in range(256) if f"10.213.{s}." not in used]
        if not free:
            raise NetworkError("no free 10.213.x.0/24 subnet")
        return random.SystemRandom().choice(free)

    def create(self) -> NamespaceNetwork:
        """Build the namespaces and links; on failure remove what was made and raise NetworkError."""
        reason = unavailable_reason()
        if reason is not None:
            raise NetworkError(reason)
        atexit.register(self.close)
        try:
            self._create()
        except BaseException:
            self.close()
            raise
        return self

    def _create(self) -> None:
        self.subnet = self._pick_subnet()
        self.addresses = {nid: f"10.213.{self.subnet}.{self._index[nid]}" for nid in self.ids}
        for nid in self.ids:
            namespace = self.namespaces[nid]
            _ip("netns", "add", namespace)
            self._created_namespaces.append(namespace)
            _ip("-n", namespace, "link", "set", "dev", "lo", "up")
            _ip("-n", namespace, "addr", "add", f"{self.addresses[nid]}/32", "dev", "lo")
        for a, b in combinations(self.ids, 2):
            bridge = self._bridge(a, b)
            _ip("link", "add", "name", bridge, "type", "bridge")
            self._created_links.append(bridge)
            _ip("link", "set", "dev", bridge, "up")
            macs: dict[str, str] = {}
            for here, there in ((a, b), (b, a)):
                port, inner = self._port(here, there), f"peer{self._index[there]}"
                _ip("link", "add", "name", port, "type", "veth", "peer", "name", inner,
                    "netns", self.namespaces[here])
                self._created_links.append(port)
                _ip("link", "set", "dev", port, "master", bridge)
                _ip("link", "set", "dev", port, "up")
                _ip("-n", self.namespaces[here], "link", "set", "dev", inner, "up")
                shown = json.loads(_ip("-j", "-n", self.namespaces[here], "link", "show", "dev", inner))
                macs[here] = str(shown[0]["address"])
            for here, there in ((a, b), (b, a)):
                namespace, inner = self.namespaces[here], f"peer{self._index[there]}"
                _ip("-n", namespace, "route", "add", f"{self.addresses[there]}/32", "dev", inner,
                    "src", self.addresses[here])
                _ip("-n", namespace, "neigh", "replace", self.addresses[there], "lladdr", macs[there],
                    "dev", inner, "nud", "permanent")
        for nid in self.ids:
            link, namespace = self._client_link(nid), self.namespaces[nid]
            _ip("link", "add", "name", link, "type", "veth", "peer", "name", "client", "netns", namespace)
            self._created_links.append(link)
            _ip("addr", "add", f"{self.client_address(nid)}/32", "dev", link)
            _ip("link", "set", "dev", link, "up")
            _ip("-n", namespace, "link", "set", "dev", "client", "up")
            _ip("route", "add", f"{self.addresses[nid]}/32", "dev", link, "src", self.client_address(nid))
            _ip("-n", namespace, "route", "add", f"{self.client_address(nid)}/32", "dev", "client",
                "src", self.addresses[nid])

    def close(self) -> None:
        """Remove everything `create` made (idempotent; also registered with atexit). Any
        process still inside one of the namespaces is killed first."""
        if self._closed:
            return
        self._closed = True
        atexit.unregister(self.close)
        for namespace in self._created_namespaces:
            _kill_namespace_processes(namespace)
        for link in reversed(self._created_links):
            _ip("link", "delete", "dev", link, check=False)
        for namespace in self._created_namespaces:
            _ip("netns", "delete", namespace, check=False)
        self._created_links.clear()
        self._created_namespaces.clear()

    def leftovers(self) -> list[str]:
        """Namespaces and root links of this network that still exist (empty after `close`)."""
        names = set(self.namespaces.values())
        prefix = f"{PREFIX}{self.tag}"
        return [ns for ns in _namespaces() if ns in names] + [
            link for link in _root_links() if link.startswith(prefix) and _ROOT_LINK.match(link)]

    def __enter__(self) -> NamespaceNetwork:
        return self.create()

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()

    # -- partitions ----------------------------------------------------------------------------
    def _set(self, a: str, b: str, state: str) -> None:
        for here, there in ((a, b), (b, a)):
            _ip("link", "set", "dev", self._port(here, there), state)

    def cut(self, a: str, b: str) -> None:
        """Drop every packet between `a` and `b`, both ways."""
        if a == b:
            raise ValueError("a node is never cut from itself")
        self._set(a, b, "down")
        self._cut.add(frozenset((a, b)))

    def connect(self, a: str, b: str) -> None:
        """Undo `cut(a, b)`."""
        self._set(a, b, "up")
        self._cut.discard(frozenset((a, b)))

    def partition(self, groups: Sequence[Collection[str]]) -> list[frozenset[str]]:
        """Heal, then cut every link between nodes of different groups (a node in no group
        is alone). Returns the links cut."""
        self.heal()
        side = {nid: i for i, group in enumerate(groups) for nid in group}
        cut = [pair for pair in self.links()
               if side.get(min(pair), f"alone-{min(pair)}") != side.get(max(pair), f"alone-{max(pair)}")]
        for pair in cut:
            self.cut(*sorted(pair))
        return cut

    def cut_links(self, links: Iterable[frozenset[str]]) -> None:
        for pair in links:
            self.cut(*sorted(pair))

    def heal(self) -> None:
        """Reconnect every cut link."""
        for pair in sorted(self._cut, key=sorted):
            self.connect(*sorted(pair))

    @property
    def cut_now(self) -> frozenset[frozenset[str]]:
        return frozenset(self._cut)

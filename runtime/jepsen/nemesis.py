"""The nemesis of the Jepsen-style test: seeded, bounded faults on a running cluster.

One fault at a time, each followed by its repair and a quiet spell; the faults come in
rounds, each fault once per round in a random order, so that even a short run has them all:

- `kill`: SIGKILL a node (the leader more often than not), restart it after a moment;
- `pause`: SIGSTOP a node, SIGCONT it after at most a few seconds;
- `partition` (needs a `NamespaceNetwork`): cut links between nodes — isolate one node
  (often the leader), split the cluster into a majority and a minority, or a "bridge"
  (two halves that cannot talk, plus one node that talks to both; with three nodes: one
  cut link) — and heal them.

Every repair is in a `finally`, and `heal()` (resume, reconnect, restart everything) is
safe to call at any time, twice included. Every fault is logged as an `Event`, with the
time of the history's clock, so a violation's timeline can be read against it.
"""

from __future__ import annotations

import random
import signal
import threading
import time
from collections.abc import Callable, Sequence
from itertools import combinations
from typing import Final

from attrs import frozen

from runtime.cluster import LocalCluster
from runtime.jepsen.netns import NamespaceNetwork

__all__ = ["FAULTS", "Event", "Nemesis"]

FAULTS: Final = ("kill", "pause", "partition")


@frozen
class Event:
    at: float
    what: str


class Nemesis:
    """Faults on `cluster` (and `network`, for partitions), chosen by `random.Random(seed)`;
    a fault listed twice in `faults` comes twice per round.

    `leader_bias` is the chance that a fault aimed at one node targets the leader (found
    through /status); the `*_time` ranges bound how long a node stays dead or paused and a
    partition lasts; `quiet` bounds the spell between two faults.
    """

    def __init__(self, cluster: LocalCluster, faults: Sequence[str], seed: int | str, *,
                 network: NamespaceNetwork | None = None, clock: Callable[[], float] = time.monotonic,
                 log: Callable[[str], None] = print, leader_bias: float = 0.6,
                 kill_time: tuple[float, float] = (0.2, 2.0), pause_time: tuple[float, float] = (0.5, 3.0),
                 partition_time: tuple[float, float] = (1.0, 5.0), quiet: tuple[float, float] = (0.5, 2.0)) -> None:
        unknown = sorted(set(faults) - set(FAULTS))
        if unknown:
            raise ValueError(f"unknown faults {unknown}; choose among {', '.join(FAULTS)}")
        if "partition" in faults and network is None:
            raise ValueError("partitions need a NamespaceNetwork")
        if not faults:
            raise ValueError("no faults to inject")
        self.cluster = cluster
        self.network = network
        self.faults = tuple(faults)
        self.rng = random.Random(f"{seed}-nemesis")
        self.clock = clock
        self.log = log
        self.leader_bias = leader_bias
        self.kill_time, self.pause_time = kill_time, pause_time
        self.partition_time, self.quiet = partition_time, quiet
        self.events: list[Event] = []
        self.counts: dict[str, int] = dict.fromkeys(FAULTS, 0)
        self._paused: set[str] = set()
        self._killed: set[str] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()

    def _event(self, what: str) -> None:
        event = Event(self.clock(), what)
        with self._lock:
            self.events.append(event)
        self.log(f"nemesis: {what}")

    def _target(self) -> str:
        """A node to hit: the leader with probability `leader_bias` (when one is known)."""
        ids = self.cluster.ids
        if self.rng.random() < self.leader_bias:
            leader = self.cluster.leader()
            if leader is not None:
                return leader
        return self.rng.choice(ids)

    def _describe(self, node: str) -> str:
        """`node`, marked when it is the leader right now (as far as /status tells)."""
        status = self.cluster.status(node, timeout=0.3)
        return f"{node} (leader)" if status is not None and status.get("role") == "leader" else node

    # -- faults -------------------------------------------------------------------------------
    def kill(self, node: str, down: float) -> None:
        who = self._describe(node)
        self._killed.add(node)
        self.cluster.kill(node)
        self._event(f"kill -9 {who}")
        try:
            self._stop.wait(down)
        finally:
            self._restart(node)

    def _restart(self, node: str) -> None:
        if node in self._killed:
            self.cluster.start_node(node)
            self._killed.discard(node)
            self._event(f"restart {node}")

    def pause(self, node: str, hold: float) -> None:
        process = self.cluster.processes[node]
        who = self._describe(node)
        self._paused.add(node)
        process.send_signal(signal.SIGSTOP)
        self._event(f"pause {who} (SIGSTOP)")
        try:
            self._stop.wait(hold)
        finally:
            self._resume(node)

    def _resume(self, node: str) -> None:
        if node in self._paused:
            process = self.cluster.processes[node]
            if process.poll() is None:
                process.send_signal(signal.SIGCONT)
            self._paused.discard(node)
            self._event(f"resume {node} (SIGCONT)")

    def _partition_links(self) -> tuple[str, list[frozenset[str]]]:
        """A random partition: its shape and the links to cut."""
        ids = list(self.cluster.ids)
        shape = self.rng.choice(("isolate", "split", "bridge") if len(ids) >= 3 else ("isolate",))
        if shape == "isolate":
            node = self._target()
            sides = [[node], [nid for nid in ids if nid != node]]
        elif shape == "split":
            shuffled = self.rng.sample(ids, len(ids))
            minority = max(1, len(ids) // 2 if len(ids) % 2 else len(ids) // 2 - 1)
            sides = [shuffled[:minority], shuffled[minority:]]
        else:  # bridge: halves a and b cannot talk; the remaining node talks to both
            shuffled = self.rng.sample(ids, len(ids))
            rest = shuffled[1:]
            sides = [rest[:len(rest) // 2], rest[len(rest) // 2:]]
        side = {nid: i for i, group in enumerate(sides) for nid in group}
        links = [frozenset((a, b)) for a, b in combinations(ids, 2)
                 if a in side and b in side and side[a] != side[b]]
        return shape, links

    def partition(self, hold: float) -> None:
        network = self.network
        assert network is not None
        shape, links = self._partition_links()
        network.heal()
        network.cut_links(links)
        shown = ", ".join("-".join(sorted(link)) for link in sorted(links, key=sorted))
        self._event(f"partition ({shape}): cut {shown}")
        try:
            self._stop.wait(hold)
        finally:
            network.heal()
            self._event("heal the network")

    # -- the schedule ---------------------------------------------------------------------------
    def run(self, duration: float) -> None:
        """Inject faults for `duration` seconds (the last fault may end a few seconds later:
        it is repaired, never cut short by the deadline), then heal."""
        deadline = time.monotonic() + duration
        rng = self.rng
        round_: list[str] = []
        try:
            while not self._stop.is_set():
                self._stop.wait(rng.uniform(*self.quiet))
                if self._stop.is_set() or time.monotonic() >= deadline:
                    break
                if not round_:  # every fault once per round, in a random order
                    round_ = rng.sample(self.faults, len(self.faults))
                fault = round_.pop()
                self.counts[fault] += 1
                if fault == "kill":
                    self.kill(self._target(), rng.uniform(*self.kill_time))
                elif fault == "pause":
                    self.pause(self._target(), rng.uniform(*self.pause_time))
                else:
                    self.partition(rng.uniform(*self.partition_time))
        finally:
            self.heal()

    def stop(self) -> None:
        """Make `run` return early (from another thread)."""
        self._stop.set()

    def heal(self) -> None:
        """Resume paused nodes, reconnect the network, restart killed nodes: every repair is
        tried even if one fails; the first failure is raised at the end."""
        repairs: list[tuple[Callable[[str], None], str]] = [(self._resume, node) for node in sorted(self._paused)]
        if self.network is not None and self.network.cut_now:
            repairs.append((self._heal_network, ""))
        repairs += [(self._restart, node) for node in sorted(self._killed)]
        failure: BaseException | None = None
        for repair, node in repairs:
            try:
                repair(node)
            except Exception as exc:
                self.log(f"nemesis: repair failed: {exc!r}")
                failure = failure or exc
        if failure is not None:
            raise failure

    def _heal_network(self, _: str) -> None:
        assert self.network is not None
        self.network.heal()
        self._event("heal the network")

"""One Jepsen-style run: start a cluster of real `raftfsm node` processes, run the clients
and the nemesis, heal, let the cluster settle, read every key, check the history.

    report = run(Config(seed=1, duration=20), Path("/tmp/run"))
    print(report.format())

Files left in the run's directory: `history.json` (the whole history, for
`python -m runtime.linearizability`), `clients.json` (what the client saw for each
operation id: node, HTTP status, leader header, error), `report.txt` (what
`Report.format` prints), and the cluster's `data/` and `logs/` (see runtime/cluster.py).
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Final

from attrs import asdict, define, field, frozen

from runtime.cluster import LocalCluster
from runtime.errors import ClusterError
from runtime.jepsen.cluster import NamespacedCluster
from runtime.jepsen.nemesis import FAULTS, Event, Nemesis
from runtime.jepsen.netns import NamespaceNetwork, NetworkError, cleanup_stale, unavailable_reason
from runtime.jepsen.workload import Detail, KeySpace, Mix, Workload, final_reads
from runtime.linearizability import History, Operation, Outcome, Result, Verdict, check, save

__all__ = ["NETWORKS", "Config", "Report", "run"]

NETWORKS: Final = ("auto", "netns", "loopback")


def _faults(value: Sequence[str]) -> tuple[str, ...]:
    faults = tuple(value)
    unknown = sorted(set(faults) - set(FAULTS))
    if unknown:
        raise ValueError(f"unknown faults {unknown}; choose among {', '.join(FAULTS)}")
    return faults


@frozen
class Config:
    """What to run. `network`: "netns" (namespaces, or fail), "loopback" (127.0.0.1, no
    partitions) or "auto" (namespaces where the machine allows, else loopback). `keys`
    keys are in use at a time, each retired after `ops_per_key` operations. After the
    nemesis stops and everything is healed, the clients go on for `recovery` seconds.
    `leader_bias`, `quiet` and the `*_time` ranges go to the `Nemesis`; a fault listed
    twice in `faults` comes twice per round."""

    seed: int
    duration: float = 20.0
    nodes: int = 3
    clients: int = 5
    faults: tuple[str, ...] = field(default=FAULTS, converter=_faults)
    network: str = "auto"
    request_timeout: float = 3.0
    keys: int = 6
    ops_per_key: int = 150
    mix: Mix = field(factory=Mix)
    recovery: float = 3.0
    leader_bias: float = 0.6
    quiet: tuple[float, float] = (0.5, 2.0)
    kill_time: tuple[float, float] = (0.2, 2.0)
    pause_time: tuple[float, float] = (0.5, 3.0)
    partition_time: tuple[float, float] = (1.0, 5.0)
    settle_timeout: float = 30.0
    check_timeout: float = 60.0
    fsync: bool = False

    def __attrs_post_init__(self) -> None:
        if self.network not in NETWORKS:
            raise ValueError(f"network must be one of {', '.join(NETWORKS)}, not {self.network!r}")


@define
class Report:
    """The outcome of one run. `ok`: the history is linearizable and nothing else went
    wrong (`problems`: a node that died on its own, no leader after healing, keys that
    could not be read back, stuck clients)."""

    config: Config
    network: str
    faults: tuple[str, ...]
    result: Result
    operations: list[Operation]
    details: dict[int, Detail]
    events: list[Event]
    problems: list[str]
    timings: dict[str, float]
    directory: Path
    history_path: Path

    @property
    def ok(self) -> bool:
        return self.result.verdict is Verdict.OK and not self.problems

    def counts(self) -> Counter[str]:
        return Counter(str(op.outcome) for op in self.operations)

    def summary(self) -> str:
        counts = self.counts()
        per_key = Counter(op.key for op in self.operations)
        nemesis = Counter(event.what.split(" ")[0] for event in self.events)
        shown = ", ".join(f"{what} x{n}" for what, n in sorted(nemesis.items())) or "none"
        on_leader = sum(1 for event in self.events if "(leader)" in event.what)
        if on_leader:
            shown += f" ({on_leader} of the kills and pauses hit the leader)"
        timings = ", ".join(f"{name} {seconds:.1f} s" for name, seconds in self.timings.items())
        return "\n".join([
            f"jepsen: seed {self.config.seed}, {self.config.nodes} nodes on {self.network}, "
            f"faults {', '.join(self.faults) or 'none'}, {self.config.duration:g} s of nemesis, "
            f"{self.config.clients} clients",
            f"  {len(self.operations)} operations on {len(per_key)} keys (at most {max(per_key.values(), default=0)} "
            f"per key): ok {counts['ok']}, fail {counts['fail']}, unknown {counts['unknown']}",
            f"  nemesis events: {shown}",
            f"  timings: {timings}",
            f"  history: {self.history_path}",
        ])

    def format(self) -> str:
        lines = [self.summary(), "", self.result.format()]
        start = self.result.start
        by_id = {op.id: op for op in self.operations}
        for violation in self.result.violations:
            lines += ["", f"what the clients saw on key {violation.key!r} (witness, then suspects):"]
            witness = {op.id for op in violation.witness}
            lo = min(op.call for op in violation.witness)
            hi = max((op.ret if op.ret is not None else op.call) for op in violation.witness)
            # suspects: failed writes whose value the witness observes (the checker's list),
            # and deletes on the key that a node answered "failed" while the witness ran (a
            # delete writes no value to observe); one that was applied after all explains a
            # violation. Requests that never connected were never sent: not suspects.
            suspects = {op.id for op in violation.failed} | {
                op.id for op in self.operations
                if op.key == violation.key and op.kind == "delete" and op.outcome is Outcome.FAIL
                and op.id not in witness and op.call <= hi and (op.ret is None or op.ret >= lo)
                and (detail := self.details.get(op.id)) is not None and detail.status is not None}
            for op_id in [*sorted(witness), *sorted(suspects)]:
                op = by_id[op_id]
                detail = self.details.get(op_id)
                seen = detail.describe() if detail is not None else "(no detail)"
                ret = f"{op.ret - start:9.3f}" if op.ret is not None else "        ?"
                mark = "  " if op_id in witness else "? "
                lines.append(f"  {mark}#{op.id} {op.client} {op.call - start:9.3f} .. {ret} {op.describe()} "
                             f"-> {op.outcome}: {seen}")
            nearby = [event for event in self.events if lo - 5.0 <= event.at <= hi + 5.0]
            if nearby:
                lines.append("  nemesis around it:")
                lines += [f"    {event.at - start:9.3f}  {event.what}" for event in nearby]
        if self.problems:
            lines += ["", "problems:"] + [f"  {problem}" for problem in self.problems]
        lines += ["", "verdict: " + ("ok" if self.ok else "FAILED")]
        return "\n".join(lines)


def _open_network(config: Config, log: Callable[[str], None]) -> tuple[NamespaceNetwork | None, str]:
    """The namespace network, or None and why not (only when config.network allows loopback)."""
    if config.network == "loopback":
        return None, "asked for loopback"
    reason = unavailable_reason()
    if reason is None:
        removed = cleanup_stale()
        if removed:
            log(f"jepsen: removed what crashed runs left behind: {', '.join(removed)}")
        try:
            return NamespaceNetwork(config.nodes).create(), ""
        except NetworkError as exc:
            reason = str(exc)
    if config.network == "netns":
        raise NetworkError(f"network namespaces are unavailable: {reason}")
    return None, reason


def _not_running(cluster: LocalCluster) -> list[str]:
    problems = []
    for nid in cluster.ids:
        process = cluster.processes.get(nid)
        if process is None or process.poll() is not None:
            status = None if process is None else process.returncode
            problems.append(f"node {nid} is not running (exit status {status}): {cluster.last_log_line(nid)}")
    return problems


def run(config: Config, directory: Path, log: Callable[[str], None] = print) -> Report:
    """Run once in `directory` (created; the cluster's data, logs and the history go there)."""
    began = time.monotonic()
    directory.mkdir(parents=True, exist_ok=True)
    log(f"jepsen: seed {config.seed} (replay with this seed; thread timing still varies)")
    timings: dict[str, float] = {}
    problems: list[str] = []
    faults = config.faults
    network, reason = _open_network(config, log)
    if network is None:
        faults = tuple(f for f in faults if f != "partition")
        where = f"127.0.0.1 (no network namespaces: {reason}; no partitions)"
        log(f"jepsen: falling back to loopback: {reason}; faults {', '.join(faults) or 'none'}")
    else:
        prefix = network.namespaces[network.ids[0]].rsplit("-", 1)[0]
        where = f"network namespaces {prefix}-* (10.213.{network.subnet}.0/24)"
        log(f"jepsen: {config.nodes} nodes in {where}")
    history_events: list[Event] = []
    history = History()
    history_path = directory / "history.json"
    details: dict[int, Detail] = {}
    try:
        cluster: LocalCluster = (
            NamespacedCluster(directory, network, fsync=config.fsync, log_level="warning") if network is not None
            else LocalCluster(directory, config.nodes, fsync=config.fsync, log_level="warning"))
        try:
            cluster.start()
            cluster.wait_until_serving(timeout=30)
            cluster.wait_for_leader(timeout=30, agreed=True)
            timings["startup"] = time.monotonic() - began
            workload = Workload(cluster.http_addresses, clients=config.clients, seed=config.seed,
                                keys=KeySpace(config.keys, config.ops_per_key), history=history,
                                timeout=config.request_timeout, mix=config.mix)
            nemesis = (Nemesis(cluster, faults, config.seed, network=network, log=log,
                               leader_bias=config.leader_bias, quiet=config.quiet, kill_time=config.kill_time,
                               pause_time=config.pause_time, partition_time=config.partition_time)
                       if faults else None)
            phase = time.monotonic()
            workload.start()
            try:
                if nemesis is not None:
                    nemesis.run(config.duration)
                else:
                    time.sleep(config.duration)
                time.sleep(config.recovery)  # the clients keep going on the healed cluster
            finally:
                if nemesis is not None:
                    nemesis.heal()
                    history_events = list(nemesis.events)
                stuck = workload.stop(timeout=2 * config.request_timeout + 5.0)
                details = workload.details
                if stuck:
                    problems.append(f"clients still running after stop: {', '.join(stuck)}")
                problems += [f"client failed: {error}" for error in workload.errors]
            timings["workload"] = time.monotonic() - phase
            phase = time.monotonic()
            try:
                leader = cluster.wait_for_leader(timeout=config.settle_timeout, agreed=True)
                log(f"jepsen: settled, leader {leader}")
            except ClusterError as exc:
                problems.append(f"no agreed leader {config.settle_timeout:g} s after healing: {exc}")
            settle_deadline = time.monotonic() + config.settle_timeout
            unread = final_reads(
                history, cluster.http_addresses, workload.keys.keys(), leader=cluster.leader,
                deadline=lambda: time.monotonic() >= settle_deadline, timeout=config.request_timeout,
                record=workload.record, pause=time.sleep)
            if unread:
                problems.append(f"{len(unread)} keys could not be read back after healing: {', '.join(unread[:10])}")
            problems += _not_running(cluster)
            timings["final reads"] = time.monotonic() - phase
        finally:
            cluster.stop()
    finally:
        if network is not None:
            network.close()
            left = network.leftovers()
            if left:
                problems.append(f"network not fully removed: {', '.join(left)}")
        save(history_path, history.operations())  # kept for a post-mortem even if the run broke off
    operations = history.operations()
    phase = time.monotonic()
    result = check(operations, timeout=config.check_timeout)
    timings["check"] = time.monotonic() - phase
    timings["total"] = time.monotonic() - began
    report = Report(config, where, faults, result, operations, dict(details), history_events,
                    problems, timings, directory, history_path)
    (directory / "report.txt").write_text(report.format() + "\n")
    (directory / "clients.json").write_text(json.dumps(
        {str(op_id): asdict(detail) for op_id, detail in sorted(report.details.items())}, indent=0) + "\n")
    return report


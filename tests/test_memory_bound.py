"""Memory of real node processes under 1 MB writes: 100 PUTs of 1 MB to distinct keys, and
100 to one key, each against a fresh 3-node cluster; then every node's VmRSS and VmHWM
(the peak) from /proc/<pid>/status must stay under the bound of docs/security.md, derived
here from the settings in the code (see `rss_bound`).

Before the byte trigger of compaction, 100 PUTs of 1 MB grew every node by 100-200 MB
whatever the keys, and the growth went on with every write (the log stayed in memory until
10,000 entries: ~10 GB of 1 MB commands); now the log is bounded in bytes, so with one key
the nodes stop growing at about the log's bound, and only the state (what the keys hold)
grows with the writes.

One term is not a constant: the leader keeps each answered command's result until the
command's deadline passes (APPLY_TIMEOUT), so it holds the values of the PUTs answered in
the last 5 s; the test measures that from the client's side (docs/security.md, "Memory").
"""

from __future__ import annotations

import inspect
import time
from pathlib import Path

import pytest

from runtime.cluster import LocalCluster
from runtime.consensus import Config
from runtime.http import MAX_BODY, KVHttpApi
from runtime.server import DEFAULT_MAX_PENDING_BYTES, MAX_COMMAND_BYTES, RaftServer
from runtime.transport.tcp import OUTBOUND_QUEUE_BYTES, WRITE_BATCH_BYTES, TcpTransport

MB = 1_000_000
MiB = 1 << 20
VALUE_BYTES = 1_000_000
"""Each PUT's value: 1 MB of text (under MAX_BODY, 1 MiB)."""

APPLY_TIMEOUT = inspect.signature(KVHttpApi.__init__).parameters["apply_timeout"].default
"""RaftServer keeps an answered command's future (and so its result: for a PUT, the value)
in its deadline heap until the deadline passes, APPLY_TIMEOUT after the HTTP API called
apply()."""
STATE_COPIES = 4
"""Copies of the state a node may hold at once: the state machine's own (the key-value dict),
the core's last snapshot, and while compacting the new snapshot and one more transient copy
(msgpack's buffer while packing it, or SQLite's copy of the blob while storing it)."""
BODY_COPIES = 4
"""Copies of a request body an HTTP request holds at once: the body, the decoded value, the
encoded command, the entry payload."""


def _default(name: str) -> int:
    value = inspect.signature(RaftServer.__init__).parameters[name].default
    assert isinstance(value, int)
    return value


def rss_bound(idle: int, state: int, answered: int, nodes: int = 3, connections: int = 1,
              ) -> tuple[int, dict[str, int]]:
    """The bound of docs/security.md ("Memory"), in bytes, for a node whose idle RSS was
    `idle` holding `state` bytes of keys and values, serving `connections` HTTP requests
    at a time, `answered` being the most command bytes the leader answered within one
    APPLY_TIMEOUT (+1 s); with the term-by-term breakdown."""
    config = Config()
    max_frame = inspect.signature(TcpTransport.__init__).parameters["max_frame"].default
    terms = {
        "idle process": idle,
        f"state x {STATE_COPIES}": STATE_COPIES * state,
        "log: snapshot_every_bytes + trailing_bytes + one command": (
            _default("snapshot_every_bytes") + _default("trailing_bytes") + MAX_COMMAND_BYTES),
        "unapplied entries: max_pending_bytes (leader) or max_inflight x max_bytes_per_message (follower)": max(
            DEFAULT_MAX_PENDING_BYTES, config.max_inflight * config.max_bytes_per_message),
        "transport: per peer, outbound queue + write batch + one inbound frame": (nodes - 1) * (
            OUTBOUND_QUEUE_BYTES + WRITE_BATCH_BYTES + max_frame),
        f"HTTP: {connections} request(s) x {BODY_COPIES} copies of MAX_BODY": connections * BODY_COPIES * MAX_BODY,
        "results answered within the apply timeout (leader)": answered,
    }
    return sum(terms.values()), terms


def memory(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) of a process, in bytes."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            number, unit = value.split()
            assert unit == "kB"
            fields[name] = int(number) * 1024
    return fields["VmRSS"], fields["VmHWM"]


def all_applied(cluster: LocalCluster, timeout: float = 60.0) -> None:
    """Poll until every node has applied everything the leader committed."""
    deadline = time.monotonic() + timeout
    while True:
        statuses = [cluster.status(node_id, timeout=5) for node_id in cluster.ids]
        if all(s is not None for s in statuses):
            commit = max(int(s["commit"]) for s in statuses if s is not None)
            if all(int(s["applied"]) >= commit for s in statuses if s is not None):
                return
        if time.monotonic() > deadline:
            raise AssertionError(f"the nodes did not all apply within {timeout}s: {statuses}")
        time.sleep(0.1)


def most_in_a_window(answers: list[tuple[float, int]], window: float) -> int:
    """The most bytes answered within any `window` seconds."""
    return max((sum(size for at, size in answers if start <= at < start + window) for start, _ in answers),
               default=0)


def write_and_measure(base: Path, keys: list[str]) -> tuple[int, int, dict[str, tuple[int, int, int]]]:
    """A fresh cluster; PUT 1 MB under each of `keys` (in order, through the leader, each
    acknowledged); returns (state bytes, the most bytes answered within APPLY_TIMEOUT + 1 s,
    {node: (idle VmHWM, VmRSS, VmHWM)})."""
    with LocalCluster(base, nodes=3, fsync=False, log_level="warning") as cluster:
        if not Path(f"/proc/{next(iter(cluster.processes.values())).pid}/status").exists():
            pytest.skip("reads the nodes' memory from /proc (Linux)")
        leader = cluster.wait_for_leader(timeout=20, agreed=True)
        assert cluster.put(leader, "warm", "up")[0] == 200
        all_applied(cluster)
        idle = {node_id: memory(cluster.processes[node_id].pid)[1] for node_id in cluster.ids}
        state: dict[str, int] = {"warm": 6}
        answers: list[tuple[float, int]] = []
        for number, key in enumerate(keys):
            value = f"{number:08d}" + "x" * (VALUE_BYTES - 8)
            deadline = time.monotonic() + 30
            while True:
                leader = cluster.wait_for_leader(timeout=20)
                code, body = cluster.put(leader, key, value, timeout=20)
                if code == 200:
                    break
                assert code == 503 and time.monotonic() < deadline, (code, body)  # 503: not applied, retry
            state[key] = len(key) + len(value)
            answers.append((time.monotonic(), len(value)))
        all_applied(cluster)
        leader = cluster.wait_for_leader(timeout=20)
        measured = {}
        for node_id in cluster.ids:
            rss, hwm = memory(cluster.processes[node_id].pid)
            measured[f"{node_id} ({'leader' if node_id == leader else 'follower'})"] = (idle[node_id], rss, hwm)
        statuses = {node_id: cluster.status(node_id) for node_id in cluster.ids}
        assert all(s is not None and s["role"] != "error" for s in statuses.values()), statuses
    return sum(state.values()), most_in_a_window(answers, APPLY_TIMEOUT + 1.0), measured


def check(label: str, state: int, answered: int, measured: dict[str, tuple[int, int, int]]) -> None:
    for node_id, (idle, rss, hwm) in measured.items():
        bound, terms = rss_bound(idle, state, answered if "leader" in node_id else 0)
        print(f"{label}, {node_id}: idle {idle / MiB:.0f} MiB, now VmRSS {rss / MiB:.0f} MiB, peak VmHWM "
              f"{hwm / MiB:.0f} MiB (+{(hwm - idle) / MiB:.0f} MiB); bound {bound / MiB:.0f} MiB = "
              + " + ".join(f"{value / MiB:.0f} ({name})" for name, value in terms.items()))
        assert rss <= hwm <= bound, f"{label}: {node_id} peaked at {hwm / MiB:.0f} MiB, over {bound / MiB:.0f} MiB"


def test_100_puts_of_1_mb_to_distinct_keys_stay_under_the_bound(tmp_path: Path) -> None:
    state, answered, measured = write_and_measure(tmp_path, [f"key-{number}" for number in range(100)])
    assert state > 100 * MB
    check("100 x 1 MB, distinct keys", state, answered, measured)


def test_100_puts_of_1_mb_to_one_key_stay_under_the_bound(tmp_path: Path, long_run: bool) -> None:
    """The history is 100 MB (300 MB with --long) but the state 1 MB: the log is compacted on
    bytes, so the nodes grow by about the log's bound, not by what was written."""
    puts = 300 if long_run else 100
    state, answered, measured = write_and_measure(tmp_path, ["same"] * puts)
    assert state < 2 * MB
    check(f"{puts} x 1 MB, one key", state, answered, measured)

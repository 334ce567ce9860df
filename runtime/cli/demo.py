"""`raftfsm demo`: a three-node cluster survives the crash of its leader.

It starts three `raftfsm node` processes on SQLite in a temporary directory, writes keys
through the HTTP API of every node (followers forward to the leader), SIGKILLs the
leader, measures the failover — from the kill until a new leader acknowledges a write —
and reads every acknowledged key back through the new leader.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from runtime.cluster import LocalCluster, http_json
from runtime.errors import ClusterError
from runtime.http import FORWARDED_HEADER, LEADER_HEADER

KEYS = 20
POLL_INTERVAL = 0.01
DEADLINE = 30.0
"""The whole demo gives up (exit 1) after this many seconds."""


class DemoFailed(Exception):
    pass


class Timeline:
    def __init__(self) -> None:
        self.start = time.perf_counter()

    def at(self, message: str, when: float | None = None) -> None:
        elapsed = (when if when is not None else time.perf_counter()) - self.start
        print(f"  {elapsed:7.3f}s  {message}", flush=True)


def _check_deadline(timeline: Timeline, what: str) -> None:
    if time.perf_counter() - timeline.start > DEADLINE:
        raise DemoFailed(f"gave up after {DEADLINE:.0f}s while {what}")


def run_cluster_demo() -> int:
    base = Path(tempfile.mkdtemp(prefix="raftfsm-demo-"))
    cluster = LocalCluster(base, 3)
    timeline = Timeline()
    print(f"\nA 3-node key-value cluster on SQLite in {base} (HTTP API, SIGKILL of the leader):\n")
    try:
        return _demo(cluster, timeline)
    except (DemoFailed, ClusterError) as exc:
        print(f"\ndemo FAILED: {exc}")
        return 1
    finally:
        cluster.stop()
        shutil.rmtree(base, ignore_errors=True)


def _put(cluster: LocalCluster, node_id: str, key: str, value: str) -> tuple[int, dict[str, Any], dict[str, str]]:
    """PUT through `node_id`, retrying for up to 2 s while it answers 503 (nothing was applied:
    e.g. a node that has not heard from the new leader yet). Status 0: no connection."""
    deadline = time.perf_counter() + 2.0
    while True:
        try:
            code, body, headers = http_json("PUT", f"{cluster.http_url(node_id)}/kv/{key}", value.encode(),
                                            timeout=6.0, headers={"Content-Type": "text/plain"})
        except OSError as exc:
            code, body, headers = 0, {"error": str(getattr(exc, "reason", exc))}, {}
        if code not in (0, 503) or time.perf_counter() > deadline:
            return code, body, headers
        time.sleep(POLL_INTERVAL)


def _demo(cluster: LocalCluster, timeline: Timeline) -> int:
    cluster.start()
    for nid in cluster.ids:
        timeline.at(f"started {nid}: pid {cluster.processes[nid].pid}, raft {cluster.raft_addresses[nid]}, "
                    f"http {cluster.http_url(nid)}")
    cluster.wait_until_serving(timeout=15.0)
    timeline.at("every node answers GET /status")
    leader = cluster.wait_for_leader(timeout=15.0, agreed=True)
    old_status = cluster.status(leader) or {}
    old_term = int(old_status.get("term", 0))
    timeline.at(f"{leader} is leader in term {old_term}, and every node follows it")

    acknowledged: dict[str, str] = {}
    forwarded = 0
    for i in range(1, KEYS + 1):
        key, value = f"key-{i:02d}", f"value-{i:02d}"
        node_id = cluster.ids[i % len(cluster.ids)]  # every node takes writes; followers forward them
        code, body, headers = _put(cluster, node_id, key, value)
        if code == 200 and body.get("value") == value:
            acknowledged[key] = value
            if headers.get(LEADER_HEADER) != node_id:
                forwarded += 1
        else:
            timeline.at(f"write {key} via {node_id} not acknowledged: HTTP {code} {body.get('error', body)}")
    timeline.at(f"{len(acknowledged)}/{KEYS} writes acknowledged, sent round-robin to all nodes "
                f"({forwarded} forwarded by a follower to {leader})")
    if not acknowledged:
        raise DemoFailed("no write was acknowledged")

    pid = cluster.processes[leader].pid
    killed_at = time.perf_counter()
    cluster.kill(leader)
    timeline.at(f"SIGKILL {leader} (pid {pid})", killed_at)

    survivors = [nid for nid in cluster.ids if nid != leader]
    elected_at: float | None = None
    new_leader: str | None = None
    probe = 0
    while True:
        _check_deadline(timeline, "waiting for a new leader")
        candidate = cluster.leader(survivors)
        if candidate is not None:
            if elected_at is None or candidate != new_leader:
                elected_at, new_leader = time.perf_counter(), candidate
            probe += 1
            # Marked as forwarded so that a node that is no longer leader answers 503 itself.
            headers = {"Content-Type": "text/plain", FORWARDED_HEADER: "demo"}
            try:
                code, _, _ = http_json("PUT", f"{cluster.http_url(candidate)}/kv/failover-probe", b"ok",
                                       timeout=2.0, headers=headers)
            except OSError:
                code = 0
            if code == 200:
                written_at = time.perf_counter()
                break
        time.sleep(POLL_INTERVAL)
    assert new_leader is not None and elected_at is not None
    new_status = cluster.status(new_leader) or {}
    timeline.at(f"{new_leader} reports itself leader in term {new_status.get('term', '?')}", elected_at)
    timeline.at(f"{new_leader} acknowledged a write (attempt {probe})", written_at)

    missing, wrong = [], []
    for key, value in acknowledged.items():
        code, body = cluster.get(new_leader, key)
        if code == 404:
            missing.append(key)
        elif code != 200 or body.get("value") != value:
            wrong.append(f"{key}: HTTP {code} {body}")
    timeline.at(f"read back {len(acknowledged) - len(missing) - len(wrong)}/{len(acknowledged)} acknowledged keys "
                f"through {new_leader}")
    failover_ms = (written_at - killed_at) * 1000
    election_ms = (elected_at - killed_at) * 1000
    print(f"\nfailover: {failover_ms:.0f} ms from SIGKILL of {leader} until {new_leader} acknowledged a write "
          f"(new leader visible in /status after {election_ms:.0f} ms)")
    if missing or wrong:
        print(f"LOST acknowledged writes: missing {missing}, wrong {wrong}")
        return 1
    print(f"no acknowledged write lost ({len(acknowledged)} keys checked)")
    return 0

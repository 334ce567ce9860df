"""Survive kill -9 at any instant: real `raftfsm node` processes on SQLite (fsync on), a
writer acknowledging keys through the HTTP API, and a killer that SIGKILLs random nodes
(the leader included) and restarts them. Afterwards every acknowledged key must read back
unchanged, and no node may have voted for two candidates in one term (read from its
database after each kill, while the process is dead)."""

from __future__ import annotations

import random
import threading
import time
from pathlib import Path

from runtime.cluster import LocalCluster, http_json
from runtime.storage.sqlite import SqliteStorage

SEED = 20261127


def read_vote(cluster: LocalCluster, node_id: str) -> tuple[int, str | None]:
    storage = SqliteStorage(cluster.data_dir(node_id), node_id=node_id, cluster_id=cluster.cluster_id)
    try:
        hard_state = storage.initial_state().hard_state
    finally:
        storage.close()
    return hard_state.term, hard_state.vote


def writer(cluster: LocalCluster, name: str, stop: threading.Event, acknowledged: dict[str, str]) -> None:
    rng = random.Random(f"{SEED}-{name}")
    number = 0
    while not stop.is_set():
        number += 1
        key, value = f"{name}-{number}", f"value-{name}-{number}"
        node = rng.choice(cluster.ids)
        try:
            code, body, _ = http_json("PUT", f"{cluster.http_url(node)}/kv/{key}", value.encode(), timeout=3.0,
                                      headers={"Content-Type": "text/plain; charset=utf-8"})
        except OSError:
            continue
        if code == 200 and body.get("value") == value:
            acknowledged[key] = value


def test_no_acknowledged_write_lost_and_no_double_vote_under_kill9(tmp_path: Path, long_run: bool) -> None:
    kills = 300 if long_run else 50
    rng = random.Random(SEED)
    acknowledged: dict[str, str] = {}
    votes: dict[tuple[str, int], str] = {}
    with LocalCluster(tmp_path, nodes=3, log_level="warning") as cluster:
        cluster.wait_for_leader(timeout=20)
        stop = threading.Event()
        writers = [threading.Thread(target=writer, args=(cluster, f"w{i}", stop, acknowledged)) for i in range(3)]
        for thread in writers:
            thread.start()
        try:
            for kill in range(kills):
                time.sleep(rng.uniform(0.0, 0.3))  # a random instant, not waiting for an event
                leader = cluster.leader()
                victim = leader if leader is not None and rng.random() < 0.5 else rng.choice(cluster.ids)
                cluster.kill(victim)
                term, vote = read_vote(cluster, victim)
                if vote is not None:
                    previous = votes.setdefault((victim, term), vote)
                    assert previous == vote, (
                        f"seed {SEED}, kill {kill}: {victim} voted for {previous} and {vote} in term {term}"
                    )
                cluster.restart(victim)
                cluster.wait_until_serving(timeout=20)
                if kill % 5 == 4:
                    cluster.wait_for_leader(timeout=20)
        finally:
            stop.set()
            for thread in writers:
                thread.join()
        leader = cluster.wait_for_leader(timeout=20, agreed=True)
        assert len(acknowledged) > kills, f"seed {SEED}: only {len(acknowledged)} writes were acknowledged"
        missing = {}
        for key, value in acknowledged.items():
            code, body = cluster.get(leader, key)
            if code != 200 or body.get("value") != value:
                missing[key] = (code, body)
        print(f"{kills} kills, {len(acknowledged)} acknowledged writes, {len(votes)} (node, term) votes read")
        assert not missing, f"seed {SEED}: {len(missing)} acknowledged writes lost, e.g. {list(missing.items())[:3]}"

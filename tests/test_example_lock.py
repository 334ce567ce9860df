"""The example app, examples/lock.py: the state machine alone, under the simulator, and served
by three `raftfsm node --app examples.lock:factory` processes over HTTP; and the embedding
script of docs/library.md."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from examples.lock import (
    Acquire,
    Granted,
    Holder,
    LockApp,
    LockMachine,
    LockResult,
    LockState,
    Release,
    Released,
    factory,
)
from runtime import CommandRejected, LocalCluster, Simulation
from runtime.app import load_app

ROOT = Path(__file__).resolve().parent.parent
APP = "examples.lock:factory"


# -- the state machine ---------------------------------------------------------------------------------------
def test_tokens_grow_and_a_held_lock_is_refused_without_a_trace() -> None:
    machine = LockMachine()
    first = machine.apply(Acquire("db", "alice"))
    assert first == Granted("db", 1, None)
    assert machine.apply(Acquire("queue", "bob")) == Granted("queue", 2, None)
    before = machine.snapshot()
    for refused in (Acquire("db", "bob"), Acquire("db", "alice"), Release("db", "bob", 1), Release("db", "alice", 2),
                    Release("nothing", "alice", 1), Acquire("", "alice"), Acquire("x" * 257, "alice")):
        with pytest.raises(CommandRejected):
            machine.apply(refused)
        assert machine.snapshot() == before, f"{refused} changed the state"
    assert machine.apply(Release("db", "alice", 1)) == Released("db", 1)
    assert machine.query(Holder("db")) == LockState("db", None, None, None)
    assert machine.apply(Acquire("db", "bob")) == Granted("db", 3, None), "a token is never reused"


def test_a_lease_expires_by_the_time_the_commands_carry() -> None:
    machine = LockMachine()
    assert machine.apply(Acquire("db", "alice", ttl_ms=1000, now_ms=5000)) == Granted("db", 1, 6000)
    with pytest.raises(CommandRejected, match="held by 'alice'"):
        machine.apply(Acquire("db", "bob", ttl_ms=1000, now_ms=5999))
    with pytest.raises(CommandRejected, match="held by 'alice'"):
        machine.apply(Acquire("db", "bob"))  # no clock: a lease never looks expired
    assert machine.query(Holder("db", now_ms=5999)).owner == "alice"  # type: ignore[union-attr]
    assert machine.query(Holder("db", now_ms=6000)) == LockState("db", None, None, None)
    assert machine.apply(Acquire("db", "bob", ttl_ms=1000, now_ms=6000)) == Granted("db", 2, 7000)
    with pytest.raises(CommandRejected, match="not held by 'alice' with token 1"):
        machine.apply(Release("db", "alice", 1))  # the stale holder is fenced off
    for bad in (Acquire("db", "carol", ttl_ms=10), Acquire("db", "carol", ttl_ms=0, now_ms=1),
                Acquire("db", "carol", ttl_ms=(1 << 63) - 1, now_ms=2), Acquire("db", "carol", now_ms=-1)):
        with pytest.raises(CommandRejected):
            machine.apply(bad)


def test_commands_results_and_snapshots_round_trip() -> None:
    machine = LockMachine()
    for command in (Acquire("db", "alice"), Acquire("db", "ålice", ttl_ms=5, now_ms=7), Release("db", "a", 3),
                    Holder("db"), Holder("db", now_ms=9)):
        assert machine.decode(machine.encode(command)) == command
    results: list[LockResult] = [Granted("db", 1, None), Granted("db", 2, 10), Released("db", 2),
                                 LockState("db", None, None, None), LockState("db", "a", 4, 99)]
    for result in results:
        assert machine.decode_result(machine.encode_result(result)) == result
    machine.apply(Acquire("a", "x", ttl_ms=10, now_ms=1))
    machine.apply(Acquire("b", "y"))
    copy = LockMachine()
    copy.restore(machine.snapshot())
    assert copy.locks == machine.locks and copy.last_token == 2
    with pytest.raises(ValueError):
        machine.decode(b'["steal", "db"]')
    with pytest.raises(CommandRejected, match="not a query"):
        machine.query(Acquire("db", "x"))


def test_the_app_reads_json_and_refuses_what_it_cannot() -> None:
    app = factory()
    assert isinstance(app, LockApp)
    assert app.command_from_json({"op": "acquire", "name": "db", "owner": "a", "ttl_ms": 5, "now_ms": 9}) \
        == Acquire("db", "a", 5, 9)
    assert app.command_from_json({"op": "release", "name": "db", "owner": "a", "token": 3}) == Release("db", "a", 3)
    assert app.query_from_json({"name": "db"}) == Holder("db")
    assert app.result_to_json(Granted("db", 4, None)) == {"name": "db", "token": 4, "expires_ms": None}
    for bad in ([], "acquire", {"op": "steal"}, {"op": "acquire", "name": 3, "owner": "a"},
                {"op": "release", "name": "db", "owner": "a"}, {"op": "release", "name": "db", "owner": "a",
                                                                 "token": True},
                {"op": "acquire", "name": "db", "owner": "a", "ttl_ms": -1}, {"op": "acquire", "name": "",
                                                                              "owner": "a"}):
        with pytest.raises(ValueError):
            app.command_from_json(bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        app.query_from_json({"op": "acquire", "name": "db"})
    assert isinstance(load_app(APP), LockApp)


# -- under the simulator -------------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", range(6))
def test_the_lock_service_under_the_simulator(seed: int) -> None:
    """Owners race for three locks while the leader is partitioned away and nodes crash; every
    grant gets a larger token than the one before, a refused command changes nothing, and
    every node ends with the same locks."""
    sim = Simulation(nodes=3, seed=seed, state_machine=LockMachine, snapshot_every=7)
    sim.run(60)
    granted: list[int] = []
    refused = 0
    for step in range(60):
        leader = sim.leader()
        if leader is not None:
            name, owner = f"lock{step % 3}", f"owner{step % 4}"
            holder = sim.nodes[leader].machine.locks.get(name)
            command = (Release(name, holder.owner, holder.token) if holder is not None and step % 4 == 3
                       else Acquire(name, owner))
            handle = sim.propose(command)
            sim.run(15)
            if isinstance(handle.result, Granted):
                granted.append(handle.result.token)
            elif isinstance(handle.error, CommandRejected):
                refused += 1
        if step == 20:
            sim.isolate(leader or "n1")
        if step == 30:
            sim.heal()
            sim.crash("n2")
        if step == 40:
            sim.restart("n2")
        sim.run(5)
    sim.heal()
    sim.run(200)
    sim.check()
    assert granted == sorted(set(granted)) and len(granted) >= 5, granted
    assert refused >= 3
    machines = [node.machine for node in sim.nodes.values()]
    assert all(m.locks == machines[0].locks and m.last_token == machines[0].last_token for m in machines)
    assert machines[0].last_token >= max(granted)


# -- three node processes ----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    with LocalCluster(tmp_path_factory.mktemp("locks"), 3, fsync=False, app=APP) as cluster:
        cluster.wait_until_serving(timeout=15)
        cluster.wait_for_leader(timeout=15, agreed=True)
        yield cluster


def _follower(cluster: LocalCluster) -> str:
    leader = cluster.wait_for_leader(timeout=10, agreed=True)
    return next(node_id for node_id in cluster.ids if node_id != leader)


def test_three_nodes_serve_the_app_through_a_follower_with_sessions(cluster: LocalCluster) -> None:
    follower = _follower(cluster)
    leader = cluster.wait_for_leader(timeout=10)
    session = cluster.open_session(follower)
    acquire = {"op": "acquire", "name": "db", "owner": "alice"}
    code, body, headers = cluster.apply(follower, acquire, session=(session, 1))
    assert code == 200, body
    assert headers["X-Raft-Outcome"] == "applied" and headers["X-Raft-Leader"] == leader
    token = body["result"]["token"]
    assert body == {"result": {"name": "db", "token": token, "expires_ms": None}}

    # the same (session, sequence) again, through another node: the first answer, not a second grant
    code, again, _ = cluster.apply(leader, acquire, session=(session, 1))
    assert (code, again) == (200, body)

    for node_id in cluster.ids:  # a ReadIndex read on every node sees the grant
        code, state, headers = cluster.read(node_id, {"op": "holder", "name": "db"})
        assert code == 200 and state["result"] == {"name": "db", "owner": "alice", "token": token,
                                                   "expires_ms": None}, (node_id, state)

    code, released, _ = cluster.apply(follower, {"op": "release", "name": "db", "owner": "alice", "token": token},
                                      session=(session, 2))
    assert code == 200 and released["result"] == {"name": "db", "released": True, "token": token}
    code, granted, _ = cluster.apply(follower, {"op": "acquire", "name": "db", "owner": "bob"},
                                     session=(session, 3))
    assert code == 200 and granted["result"]["token"] > token, "fencing tokens only grow"


def test_a_refused_acquire_reaches_the_client_and_every_node_stays_up(cluster: LocalCluster) -> None:
    follower = _follower(cluster)
    code, body, _ = cluster.apply(follower, {"op": "acquire", "name": "cron", "owner": "alice"})
    assert code == 200, body
    token = body["result"]["token"]
    code, body, headers = cluster.apply(follower, {"op": "acquire", "name": "cron", "owner": "mallory"})
    assert code == 422 and headers["X-Raft-Outcome"] == "not-applied", body
    assert f"lock 'cron' is held by 'alice' (token {token})" in body["error"]
    code, body, _ = cluster.apply(follower, {"op": "release", "name": "cron", "owner": "mallory", "token": token})
    assert code == 422 and "not held by 'mallory'" in body["error"]
    code, body, headers = cluster.apply(follower, {"op": "acquire", "name": "cron"})
    assert code == 400 and headers["X-Raft-Outcome"] == "not-applied" and '"owner"' in body["error"]
    code, body, _ = cluster.read(follower, {"op": "release"})
    assert code == 400, body
    for node_id in cluster.ids:
        assert cluster.running(node_id), f"{node_id} exited: {cluster.last_log_line(node_id)}"
        status = cluster.status(node_id)
        assert status is not None and status["role"] in ("leader", "follower") and status["app"] == APP
    code, state, _ = cluster.read(follower, {"op": "holder", "name": "cron"})
    assert code == 200 and state["result"]["owner"] == "alice", "the refusals changed nothing"


def test_the_cli_clients_apply_and_read(cluster: LocalCluster) -> None:
    addresses = ",".join(cluster.http_addresses[node_id] for node_id in reversed(cluster.ids))

    def raftfsm(*args: str) -> subprocess.CompletedProcess[str]:
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        return subprocess.run([sys.executable, "-m", "runtime.cli", *args, "--cluster", addresses],
                              capture_output=True, text=True, timeout=30, env=env)

    done = raftfsm("apply", json.dumps({"op": "acquire", "name": "cli", "owner": "carol", "ttl_ms": 60_000,
                                        "now_ms": int(time.time() * 1000)}))
    assert done.returncode == 0, done.stderr
    granted = json.loads(done.stdout)
    assert granted["name"] == "cli" and granted["token"] >= 1
    read = raftfsm("read", json.dumps({"op": "holder", "name": "cli"}))
    assert read.returncode == 0 and json.loads(read.stdout)["owner"] == "carol", read.stderr
    refused = raftfsm("apply", json.dumps({"op": "acquire", "name": "cli", "owner": "dave"}))
    assert refused.returncode == 1 and "HTTP 422" in refused.stderr and "held by 'carol'" in refused.stderr


def test_a_node_with_an_app_it_cannot_load_exits_2(tmp_path: Path) -> None:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    (tmp_path / "secret").write_text("s" * 32)
    (tmp_path / "secret").chmod(0o600)
    for app, reason in (("examples.nothing:factory", "cannot import examples.nothing"),
                        ("examples.lock:nothing", "has no attribute 'nothing'"),
                        ("examples.lock:MAX_INT", "is not callable"),
                        ("examples.lock:Granted", "Granted() raised TypeError"),
                        ("examples.lock:LockMachine", "LockMachine is not an App"),
                        ("examples.lock", "expected package.module:factory")):
        done = subprocess.run(
            [sys.executable, "-m", "runtime.cli", "node", "--id", "n1", "--listen", "127.0.0.1:1",
             "--peers", "n1=127.0.0.1:1", "--data-dir", str(tmp_path / "data"), "--secret-file",
             str(tmp_path / "secret"), "--app", app],
            capture_output=True, text=True, timeout=30, env=env, cwd=tmp_path)
        assert done.returncode == 2, (app, done.stderr)
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("raftfsm node: --app") and reason in lines[0], (app, lines)


# -- the embedding script of docs/library.md --------------------------------------------------------------------
def test_the_embedding_script_runs(tmp_path: Path) -> None:
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    done = subprocess.run([sys.executable, str(ROOT / "examples" / "embed.py")], capture_output=True, text=True,
                          timeout=60, cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("leader: n")
    assert lines[1] == "alice holds 'db' with fencing token 1"
    assert lines[2] == "bob is refused: lock 'db' is held by 'alice' (token 1)"
    assert "owner='alice', token=1" in lines[3]
    assert "is not the leader; the leader is" in lines[4]
    assert lines[5] == "released: Released(name='db', token=1)"
    assert lines[6].endswith("LockState(name='db', owner=None, token=None, expires_ms=None)")

"""Hostile traffic of every kind from issue #8, all at once, against a real 3-node cluster
on 127.0.0.1, while clients keep writing through the HTTP API (one through each node).

Hostile threads (strangers: they know the cluster id, the node ids and the frame format
from the public source, not the cluster secret) send, at the Raft ports: garbage bytes,
garbage and truncated frames, huge length prefixes, hellos with a wrong cluster id,
schema or version, hellos claiming a real node's id without the secret (no proof, a
guessed proof, "no authentication"), frames with a made-up MAC, and behind every kind of
hello the forged messages that broke protocol version 1 — `RequestVote` with term
2^63-1 and term+1000, `AppendEntries` carrying `put pwned evil`, `AppendEntriesReply`
with match_index 10^9. At the HTTP ports: slowloris connections, bad JSON (lone
surrogates, deep nesting), oversized bodies and bursts of concurrent PUTs.

Acceptance (asserted): no node enters the error role, no node's term moves (its /status
before and after), nothing forged is stored (each node's raft.db is opened read-only
after it stopped and every entry and the snapshot searched for `pwned`), a client's PUT
commits during and after the attack, and writes are acknowledged in every second of it
(the clients' and the bursts': under a burst, the clients' PUTs wait behind it).

`make test` runs SHORT_SECONDS of attack; `pytest --long` runs LONG_SECONDS (the header
timeout then closes slowloris connections, which reconnect). HOSTILE_SEED=<n> replays the
attackers' choices (printed at the start; timing still varies).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import os
import random
import resource
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from generated.raft_fsm import AppendEntries, AppendEntriesReply, Entry, EntryKind, RequestVote, WireMessage
from runtime.cluster import LocalCluster
from runtime.codec import decode, encode
from runtime.http import MAX_BODY
from runtime.kv import KVStateMachine, Put
from runtime.limits import MAX_TERM
from runtime.sessions import encode_command
from runtime.transport import auth
from tests.test_http_input import BAD, deep
from tests.test_http_limits import Answer
from tests.test_tcp_transport import frame, hello, hello_v1

SHORT_SECONDS = 10.0
"""Attack time in `make test` (the whole test stays under 30 s)."""
LONG_SECONDS = 30.0
"""Attack time with `pytest --long`."""
FORGED_MARK = b"pwned"
"""In every forged command; no honest write contains it."""
SLOWLORIS_PER_NODE = 100
FLOOD_BURST = 200
RAFT_WORKERS_PER_NODE = 3


@pytest.fixture(autouse=True)
def enough_file_descriptors() -> Iterator[None]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 4096
    if soft != resource.RLIM_INFINITY and soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted if hard == resource.RLIM_INFINITY else min(wanted, hard),
                                                    hard))
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


# -- what the strangers send at the Raft ports --------------------------------------------------------------------
def forged_messages(target: str, claimed: str, leader: str, term: int, last_index: int) -> list[WireMessage]:
    """The messages that broke protocol version 1, from `claimed` to `target`."""
    evil = encode_command(KVStateMachine().encode(Put("pwned", "evil")), int(time.time() * 1000))
    messages: list[WireMessage] = [
        RequestVote(msg_id=1, sender=claimed, receiver=target, term=MAX_TERM, candidate_id=claimed,
                    last_log_index=MAX_TERM, last_log_term=MAX_TERM),
        RequestVote(msg_id=2, sender=claimed, receiver=target, term=term + 1000, candidate_id=claimed,
                    last_log_index=last_index + 1000, last_log_term=term + 1000),
        AppendEntries(msg_id=3, sender=claimed, receiver=target, term=term, leader_id=claimed,
                      prev_log_index=last_index, prev_log_term=term, leader_commit=last_index + 1, read_round=0,
                      entries=(Entry(term=term, index=last_index + 1, kind=EntryKind.data, data=evil),)),
        AppendEntries(msg_id=4, sender=claimed, receiver=target, term=term + 1, leader_id=claimed,
                      prev_log_index=0, prev_log_term=0, leader_commit=1, read_round=0,
                      entries=(Entry(term=term + 1, index=1, kind=EntryKind.data, data=evil),)),
    ]
    if target == leader:
        messages.append(AppendEntriesReply(msg_id=5, sender=claimed, receiver=target, term=term, success=True,
                                           match_index=10**9, reject_index=0, conflict_index=0, conflict_term=0,
                                           read_round=0))
    return messages


def sealed_lookalike(body: bytes, sequence: int, rng: random.Random) -> bytes:
    """An authenticated frame's layout with a made-up MAC (a stranger has no frame key)."""
    return auth.FRAME_HEADER.pack(len(body), sequence) + rng.randbytes(auth.MAC_BYTES) + body


class RaftPayloads:
    """Every kind of stranger input for one target node, by name."""

    def __init__(self, cluster: LocalCluster, target: str, leader: str, term: int, last_index: int) -> None:
        self.cluster_id = cluster.cluster_id
        self.target = target
        self.claimable = [n for n in cluster.ids if n != target]
        self.leader, self.term, self.last_index = leader, term, last_index

    def make(self, kind: str, rng: random.Random) -> bytes:
        claimed = rng.choice(self.claimable)
        cid = self.cluster_id
        if kind == "garbage":
            return rng.randbytes(rng.randrange(1, 4096))
        if kind == "garbage frame":
            return frame(rng.randbytes(rng.randrange(1, 4000)))
        if kind == "truncated frame":
            body = rng.randbytes(rng.randrange(10, 2000))
            return rng.choice([frame(body)[: rng.randrange(1, 4)], frame(body)[: rng.randrange(4, len(body))],
                               hello(claimed, cluster=cid)[:-5]])
        if kind == "huge length":
            return rng.choice([2**31, 2**32 - 1, 4097, 16 * 2**20 + 1]).to_bytes(4, "big") + rng.randbytes(64)
        if kind == "wrong cluster id":
            return hello(claimed, cluster="evil-cluster")
        if kind == "wrong schema":
            return hello(claimed, cluster=cid, schema=rng.choice(["0" * 16, "deadbeefdeadbeef"]))
        if kind == "wrong version":
            return rng.choice([hello_v1(claimed, cluster=cid), hello(claimed, cluster=cid, version=3),
                               hello(claimed, cluster=cid, version=2**40)])
        if kind == "claims a node, no secret":
            return rng.choice([hello(claimed, cluster=cid), hello(claimed, cluster=cid, mode="none"),
                               hello(claimed, cluster=cid) + frame(rng.randbytes(32)),
                               hello(claimed, cluster=cid, mode="tls")])
        forged = forged_messages(self.target, claimed, self.leader, self.term, self.last_index)
        if kind == "bad MAC frames":
            return (hello(claimed, cluster=cid) + frame(rng.randbytes(32))
                    + b"".join(sealed_lookalike(encode(m), n, rng) for n, m in enumerate(forged)))
        if kind == "forged messages":
            opening = rng.choice([hello_v1(claimed, cluster=cid), hello(claimed, cluster=cid),
                                  hello(claimed, cluster=cid, mode="none"),
                                  hello(claimed, cluster=cid) + frame(rng.randbytes(32))])
            return opening + b"".join(frame(encode(m)) for m in forged)
        raise ValueError(kind)


RAFT_KINDS = ("garbage", "garbage frame", "truncated frame", "huge length", "wrong cluster id", "wrong schema",
              "wrong version", "claims a node, no secret", "bad MAC frames", "forged messages")


async def raft_attacker(address: str, payloads: RaftPayloads, rng: random.Random, stop: threading.Event,
                        sent: collections.Counter[str]) -> None:
    """One connection after another: a payload, then wait (briefly) for the node to hang up."""
    host, port = address.rsplit(":", 1)
    number = 0
    while not stop.is_set():
        kind = RAFT_KINDS[number % len(RAFT_KINDS)]
        number += 1
        try:
            reader, writer = await asyncio.open_connection(host, int(port))
        except OSError:
            await asyncio.sleep(0.02)
            continue
        try:
            writer.write(payloads.make(kind, rng))
            if rng.random() < 0.5:
                writer.write_eof()
            await writer.drain()
            sent[kind] += 1
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(0.3):
                    while await reader.read(4096):
                        pass
        except OSError:
            pass
        finally:
            writer.transport.abort()
        await asyncio.sleep(rng.uniform(0.0, 0.01))


# -- what they send at the HTTP ports ------------------------------------------------------------------------------
async def http_exchange(address: str, method: str, target: str, body: bytes = b"",
                        headers: dict[str, str] | None = None, timeout: float = 15.0) -> Answer:
    host, port = address.rsplit(":", 1)
    head = "".join(f"{name}: {value}\r\n" for name, value in (headers or {}).items())
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(host, int(port))
            try:
                writer.write(f"{method} {target} HTTP/1.1\r\nHost: t\r\n{head}Content-Length: {len(body)}\r\n"
                             "Connection: close\r\n\r\n".encode() + body)
                data = await reader.read()
            finally:
                writer.close()
    except (OSError, TimeoutError) as exc:
        return Answer(0, {}, type(exc).__name__)
    status_line, _, rest = data.partition(b"\r\n")
    fields = status_line.split()
    if len(fields) < 2 or not fields[1].isdigit():
        return Answer(0, {}, "no status line")
    header_block = rest.partition(b"\r\n\r\n")[0].decode("latin-1")
    parsed = dict(line.split(": ", 1) for line in header_block.split("\r\n") if ": " in line)
    return Answer(int(fields[1]), parsed)


BAD_JSON = {
    "lone surrogate": ("PUT", "/kv/s", b'{"value": "a\\ud800b"}'),
    "lone low surrogate": ("PUT", "/kv/s", b'{"value": "\\udfff"}'),
    "lone surrogate in cas": ("POST", "/kv/s/cas", b'{"expected": null, "value": "\\ud800"}'),
    "deep nesting": ("PUT", "/kv/d", deep(100_000)),
    "deep nesting in cas": ("POST", "/kv/d/cas", BAD["deeply nested cas"][2] or b""),
    "huge integer": ("PUT", "/kv/n", BAD["huge integer"][2] or b""),
}


BAD_INPUT_CASES = (*BAD_JSON, "oversized body", "oversized claim, then gone")


async def slowloris(address: str, rng: random.Random, stop: threading.Event, counts: collections.Counter[str]) -> None:
    """A request whose headers never end, one byte at a time; reopened when the node closes it."""
    host, port = address.rsplit(":", 1)
    while not stop.is_set():
        try:
            reader, writer = await asyncio.open_connection(host, int(port))
        except OSError:
            counts["connect failed"] += 1
            await asyncio.sleep(0.1)
            continue
        counts["opened"] += 1
        closed = asyncio.ensure_future(reader.read())
        try:
            writer.write(b"PUT /kv/loris HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n")
            while not stop.is_set() and not closed.done():
                writer.write(b"X"[:1])
                await asyncio.wait([closed], timeout=rng.uniform(0.5, 1.5))
            if closed.done():
                data = closed.result() if not closed.exception() else b""
                counts["answered 503" if data.startswith(b"HTTP/1.1 503") else "closed by the node"] += 1
        except OSError:
            counts["closed by the node"] += 1
        finally:
            closed.cancel()
            writer.transport.abort()


async def bad_input(case: str, addresses: list[str], rng: random.Random, stop: threading.Event,
                    answers: collections.Counter[str]) -> None:
    """One kind of bad request (bad JSON, an oversized body), again and again, to any node."""
    while not stop.is_set():
        address = rng.choice(addresses)
        if case == "oversized body":
            answer = await http_exchange(address, "PUT", "/kv/big", b"x" * (2 * MAX_BODY),
                                         {"Content-Type": "text/plain"})
        elif case == "oversized claim, then gone":
            await oversized_claim(address)
            answer = Answer(0, {})
        else:
            method, target, body = BAD_JSON[case]
            answer = await http_exchange(address, method, target, body, {"Content-Type": "application/json"})
        answers[f"{case}: {answer.status}"] += 1
        await asyncio.sleep(rng.uniform(0.0, 0.1))


async def oversized_claim(address: str) -> None:
    """Headers announcing a 1 GB body, 64 KiB of it, and the connection is gone."""
    host, port = address.rsplit(":", 1)
    with contextlib.suppress(OSError, TimeoutError):
        async with asyncio.timeout(5):
            _, writer = await asyncio.open_connection(host, int(port))
            try:
                writer.write(b"PUT /kv/claim HTTP/1.1\r\nHost: t\r\nContent-Type: text/plain\r\n"
                             b"Content-Length: 1000000000\r\n\r\n" + b"x" * 65536)
                await writer.drain()
            finally:
                writer.transport.abort()


async def put_bursts(addresses: list[str], rng: random.Random, stop: threading.Event,
                     kinds: collections.Counter[str], applied: list[float]) -> None:
    """FLOOD_BURST concurrent PUTs at one node, again and again; `applied` gets the time of
    each applied answer."""

    async def put(address: str, key: str) -> None:
        answer = await http_exchange(address, "PUT", f"/kv/{key}", b"v", {"Content-Type": "text/plain"})
        kinds[answer.kind] += 1
        if answer.kind == "applied":
            applied.append(time.monotonic())

    burst = 0
    while not stop.is_set():
        burst += 1
        address = rng.choice(addresses)
        await asyncio.gather(*(put(address, f"flood-{burst}-{i}") for i in range(FLOOD_BURST)))
        await asyncio.sleep(rng.uniform(0.5, 1.5))


# -- the test --------------------------------------------------------------------------------------------------------
class Soak:
    """The attackers, the writing clients (one per node) and the /status monitor, each in its own thread."""

    def __init__(self, cluster: LocalCluster, seed: int, leader: str, term: int, last_index: int) -> None:
        self.cluster = cluster
        self.seed = seed
        self.leader, self.term, self.last_index = leader, term, last_index
        self.stop = threading.Event()
        self.raft_sent: collections.Counter[str] = collections.Counter()
        self.loris: collections.Counter[str] = collections.Counter()
        self.bad_answers: collections.Counter[str] = collections.Counter()
        self.flood: collections.Counter[str] = collections.Counter()
        self.writes: list[tuple[float, int]] = []
        """(time, status) of the honest clients' PUTs"""
        self.flood_applied: list[float] = []
        self.seen: list[tuple[float, str, str, int]] = []
        """(time, node, role, term) from the monitor"""
        self.failures: list[str] = []
        self.threads: list[threading.Thread] = []

    def _thread(self, name: str, target: Callable[[], Any]) -> None:
        def run() -> None:
            try:
                target()
            except BaseException as exc:  # reported by the test, not lost in a thread
                self.failures.append(f"{name}: {type(exc).__name__}: {exc}")

        thread = threading.Thread(target=run, name=name, daemon=True)
        self.threads.append(thread)
        thread.start()

    def start(self) -> None:
        cluster = self.cluster
        self._thread("raft attackers", lambda: asyncio.run(self._raft()))
        self._thread("http attackers", lambda: asyncio.run(self._http()))
        for node_id in cluster.ids:
            self._thread(f"client via {node_id}", functools.partial(self._client, node_id))
        self._thread("monitor", self._monitor)

    def finish(self, timeout: float = 30.0) -> None:
        self.stop.set()
        deadline = time.monotonic() + timeout
        for thread in self.threads:
            thread.join(max(0.1, deadline - time.monotonic()))
        alive = [t.name for t in self.threads if t.is_alive()]
        assert not alive, f"threads still running {timeout}s after the stop: {alive}"
        assert not self.failures, self.failures

    async def _raft(self) -> None:
        tasks = []
        for index, node_id in enumerate(self.cluster.ids):
            payloads = RaftPayloads(self.cluster, node_id, self.leader, self.term, self.last_index)
            for worker in range(RAFT_WORKERS_PER_NODE):
                rng = random.Random(self.seed * 1000 + index * 10 + worker)
                tasks.append(raft_attacker(self.cluster.raft_addresses[node_id], payloads, rng, self.stop,
                                           self.raft_sent))
        await asyncio.gather(*tasks)

    async def _http(self) -> None:
        addresses = [self.cluster.http_addresses[n] for n in self.cluster.ids]
        rng = random.Random(self.seed * 1000 + 500)
        tasks = [slowloris(address, random.Random(rng.random()), self.stop, self.loris)
                 for address in addresses for _ in range(SLOWLORIS_PER_NODE)]
        tasks += [bad_input(case, addresses, random.Random(rng.random()), self.stop, self.bad_answers)
                  for case in BAD_INPUT_CASES]
        tasks.append(put_bursts(addresses, random.Random(rng.random()), self.stop, self.flood, self.flood_applied))
        await asyncio.gather(*tasks)

    def _client(self, node_id: str) -> None:
        """An honest client: one PUT after another through one node (there is one per node)."""
        number = 0
        while not self.stop.is_set():
            number += 1
            try:
                code, _ = self.cluster.put(node_id, f"client-{node_id}-{number}", f"value-{number}", timeout=5)
            except OSError:
                code = 0
            self.writes.append((time.monotonic(), code))

    def _monitor(self) -> None:
        while not self.stop.wait(0.5):
            for node_id in self.cluster.ids:
                status = self.cluster.status(node_id, timeout=2)
                if status is not None:
                    self.seen.append((time.monotonic(), node_id, str(status["role"]), int(status["term"])))


def stored_entries(data_dir: Path) -> tuple[int, list[str]]:
    """Open a stopped node's raft.db read-only: (entries read, where FORGED_MARK was found)."""
    found = []
    connection = sqlite3.connect(f"file:{data_dir / 'raft.db'}?mode=ro", uri=True)
    try:
        rows = connection.execute("SELECT idx, term, data FROM entries").fetchall()
        found += [f"entry {idx} (term {term})" for idx, term, data in rows if FORGED_MARK in bytes(data)]
        for (data,) in connection.execute("SELECT data FROM snapshot"):
            if FORGED_MARK in bytes(data):
                found.append("the snapshot")
    finally:
        connection.close()
    for path in data_dir.iterdir():  # and nowhere in the files, whatever SQLite does with them
        if FORGED_MARK in path.read_bytes():
            found.append(f"the bytes of {path.name}")
    return len(rows), found


def terms(cluster: LocalCluster) -> dict[str, tuple[str, int, str | None]]:
    result = {}
    for node_id in cluster.ids:
        status = cluster.status(node_id, timeout=5)
        assert status is not None, f"{node_id} does not answer /status"
        result[node_id] = (str(status["role"]), int(status["term"]), status.get("leader"))
    return result


def test_hostile_traffic_of_every_kind_changes_nothing(tmp_path: Path, long_run: bool) -> None:
    seconds = LONG_SECONDS if long_run else SHORT_SECONDS
    seed = int(os.environ.get("HOSTILE_SEED") or random.randrange(2**31))
    print(f"\nhostile soak: HOSTILE_SEED={seed}, {seconds:g} s of attack")
    cluster = LocalCluster(tmp_path, nodes=3, fsync=False, log_level="info")
    try:
        cluster.start()
        cluster.wait_until_serving(timeout=20)
        leader = cluster.wait_for_leader(timeout=20, agreed=True)
        assert cluster.put(leader, "before", "attack")[0] == 200
        before = terms(cluster)
        status = cluster.status(leader) or {}
        term, last_index = int(status["term"]), int(status["last_index"])
        soak = Soak(cluster, seed, leader, term, last_index)
        offsets = {node_id: cluster.log_path(node_id).stat().st_size for node_id in cluster.ids}
        started = time.monotonic()
        soak.start()
        time.sleep(seconds)  # the attack runs in the threads; every wait in them has its own deadline
        ended = time.monotonic()
        soak.finish()
        after_attack = cluster.put(leader, "after", "attack")[0]
        after = terms(cluster)
    finally:
        cluster.stop()
    logs = {}
    for node_id in cluster.ids:  # what each node logged from the start of the attack on
        with open(cluster.log_path(node_id), errors="replace") as log:
            log.seek(offsets[node_id])
            logs[node_id] = log.read()

    # what was sent, and what came of it
    acked = [at for at, code in soak.writes if code == 200 and started <= at <= ended]

    def per_second(times: list[float]) -> list[int]:
        return [sum(1 for at in times if started + s <= at < started + s + 1) for s in range(int(seconds))]

    committed = per_second(acked + soak.flood_applied)
    codes = collections.Counter(code for _, code in soak.writes)
    rejected = {node_id: text.count("closed connection from 127.0.0.1:") for node_id, text in logs.items()}
    elections = [line for text in logs.values() for line in text.splitlines() if "candidate in term" in line
                 or "leader in term" in line]
    print(f"raft attacks sent: {dict(soak.raft_sent)} (total {sum(soak.raft_sent.values())})")
    print(f"connections the nodes closed and logged: {rejected}")
    print(f"slowloris: {dict(soak.loris)}")
    print(f"bad input answers: {dict(soak.bad_answers)}")
    print(f"PUT bursts: {dict(soak.flood)}")
    print(f"client writes: {dict(codes)}; acknowledged per second during the attack: clients {per_second(acked)}, "
          f"clients and bursts {committed}")
    print(f"before {before}, after {after}; elections logged: {elections}")

    # acceptance
    assert all(role != "error" for _, _, role, _ in soak.seen), [s for s in soak.seen if s[2] == "error"]
    for node_id, text in logs.items():
        assert "entering the error role" not in text and "internal error" not in text, f"{node_id}:\n{text[-3000:]}"
        assert "Traceback" not in text, f"{node_id} logged a traceback:\n{text[-3000:]}"
    assert {n: t for n, (_, t, _) in after.items()} == {n: t for n, (_, t, _) in before.items()}, \
        f"a term moved: before {before}, after {after}; {elections}"
    assert {n: (r, ld) for n, (r, _, ld) in after.items()} == {n: (r, ld) for n, (r, _, ld) in before.items()}
    assert after_attack == 200, "a PUT after the attack did not commit"
    assert acked, "no client PUT committed during the attack"
    assert min(committed) >= 1, f"a second without an acknowledged write: {committed}"
    for node_id in cluster.ids:
        count, found = stored_entries(cluster.data_dir(node_id))
        assert count > 0, f"{node_id}: no entries read from raft.db"
        assert found == [], f"{node_id}: forged data stored in {found}"

    # the attacks really happened and were answered as designed
    for kind in RAFT_KINDS:
        assert soak.raft_sent[kind] >= 3 * len(cluster.ids), (kind, soak.raft_sent)
    for node_id, count in rejected.items():
        assert count >= 20, f"{node_id} logged only {count} rejected connections"
    assert soak.loris["opened"] >= SLOWLORIS_PER_NODE * len(cluster.ids)
    if seconds > 10.0 + 2:  # the header timeout (DEFAULT_HEADER_TIMEOUT) closed the slow ones
        assert soak.loris["closed by the node"] >= SLOWLORIS_PER_NODE * len(cluster.ids), soak.loris
    for case in BAD_INPUT_CASES:
        statuses = {key.rsplit(": ", 1)[1] for key in soak.bad_answers if key.startswith(f"{case}: ")}
        expected = {"0"} if case == "oversized claim, then gone" else {"413"} if case == "oversized body" else {"400"}
        assert statuses == expected, (case, soak.bad_answers)
    assert set(soak.flood) <= {"applied", "not-applied", "unknown"}, soak.flood
    assert soak.flood["applied"] >= FLOOD_BURST, soak.flood


def test_the_soaks_forged_messages_are_well_formed_and_marked() -> None:
    """The soak's forged messages are well-formed (the codec takes them): only the
    authentication keeps them out. Their entries carry the mark the database search looks for."""
    forged = forged_messages("n1", "n2", "n1", 5, 10)
    for message in forged:
        assert decode(encode(message)) == message
    assert {type(m).__name__ for m in forged} == {"RequestVote", "AppendEntries", "AppendEntriesReply"}
    assert max(m.term for m in forged) == MAX_TERM == 2**63 - 1
    assert any(m.term == 1005 for m in forged)
    assert all(FORGED_MARK in e.data for m in forged if isinstance(m, AppendEntries) for e in m.entries)
    assert next(m for m in forged if isinstance(m, AppendEntriesReply)).match_index == 10**9

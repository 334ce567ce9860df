"""Nodes built from different specs on real sockets (127.0.0.1, cluster secret unless a
test says otherwise): a compatible successor talks in the layout both know, a breaking
one is refused at the handshake with one WARNING on each side naming the difference, and
a 3-node cluster of `raftfsm node` processes upgraded one node at a time (old, old, new
-> old, new, new -> new, new, new, each restarted on its data directory) keeps
committing throughout. The successor specs are in tests/spec_versions.py."""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import msgpack
import pytest

from generated import raft_fsm
from runtime.cluster import LocalCluster
from runtime.codec import DEFAULT, SCHEMA_DIGEST, Codec
from runtime.transport import auth
from runtime.transport.tcp import MAX_HELLO, PROTOCOL_VERSION, TcpTransport, TlsConfig
from tests import spec_versions
from tests.test_tcp_transport import (
    CLUSTER,
    SECRET,
    captured_logger,
    certs,  # noqa: F401 (a fixture)
    closed_by_server,
    frame,
    free_ports,
    hello,
    parse_hello,
    read_plain_frame,
    run,
    until,
)

# ------------------------------------------------------------------ helpers


@pytest.fixture(scope="module")
def modules(tmp_path_factory: pytest.TempPathFactory) -> dict[str, ModuleType]:
    directory = tmp_path_factory.mktemp("specs")
    return {
        "next": spec_versions.generated_module(directory / "next", spec_versions.NEXT, "raft_fsm_upgrade_next",
                                               spec_versions.NEXT_ROWS),
        "retyped": spec_versions.generated_module(directory / "retyped", spec_versions.RETYPED,
                                                  "raft_fsm_upgrade_retyped"),
    }


class Node:
    """A transport whose messages come from `module` (its codec), plus what it received
    and logged."""

    def __init__(self, node_id: str, ports: dict[str, int], module: ModuleType = raft_fsm, *,
                 tls: dict[str, TlsConfig] | None = None) -> None:
        self.inbox: list[Any] = []
        self.logger, self.log = captured_logger()
        self.module = module
        self.transport = TcpTransport(
            node_id, CLUSTER, ("127.0.0.1", ports[node_id]),
            {p: ("127.0.0.1", port) for p, port in ports.items() if p != node_id}, self.inbox.append,
            tls=tls[node_id] if tls else None, secret=None if tls else SECRET, logger=self.logger,
            codec=DEFAULT if module is raft_fsm else Codec(module),
        )
        self.node_id = node_id

    def lines(self, containing: str, level: int = 0) -> list[str]:
        return [r.getMessage() for r in self.log.records if r.levelno >= level and containing in r.getMessage()]


def reply(module: ModuleType, sender: str, receiver: str, msg_id: int = 1, **extra: Any) -> Any:
    return module.AppendEntriesReply(msg_id=msg_id, sender=sender, receiver=receiver, term=2, success=True,
                                     match_index=5, reject_index=0, conflict_index=0, conflict_term=0,
                                     read_round=3, **extra)


def entries(module: ModuleType, sender: str, receiver: str, **extra: Any) -> Any:
    entry = module.Entry(term=2, index=1, kind=module.EntryKind.data, data=b"cmd", **extra)
    return module.AppendEntries(msg_id=2, sender=sender, receiver=receiver, term=2, leader_id=sender,
                                prev_log_index=0, prev_log_term=0, entries=(entry,), leader_commit=0, read_round=0)


def of_type(node: Node, kind: type) -> list[Any]:
    return [m for m in node.inbox if isinstance(m, kind)]


async def delivered(sender: Node, receiver: Node, message: Any) -> list[Any]:
    """Send `message` until something arrives (frames queued before the first handshake
    are dropped when the peer turns out to have another layout: Raft resends too)."""
    await until(lambda: bool(receiver.inbox), action=lambda: sender.transport.send(message),
                what=f"a message from {sender.node_id}")
    return receiver.inbox


# ------------------------------------------------------------------ a compatible successor


def _exchange(modules: dict[str, ModuleType], tls: dict[str, TlsConfig] | None) -> None:
    nxt = modules["next"]

    async def main() -> None:
        ports = dict(zip(["n1", "n2"], free_ports(2), strict=True))
        old, new = Node("n1", ports, tls=tls), Node("n2", ports, nxt, tls=tls)
        await old.transport.start()
        await new.transport.start()
        try:
            # newer -> older: the trailing field (and the record's) are left out
            got = await delivered(new, old, reply(nxt, "n2", "n1", hint=7))
            assert set(got) == {reply(raft_fsm, "n2", "n1")}
            new.transport.send(entries(nxt, "n2", "n1", crc=99))
            await until(lambda: len(of_type(old, raft_fsm.AppendEntries)) == 1, what="AppendEntries from n2")
            assert of_type(old, raft_fsm.AppendEntries) == [entries(raft_fsm, "n2", "n1")]
            # older -> newer: they take their defaults
            got = await delivered(old, new, reply(raft_fsm, "n1", "n2"))
            assert set(got) == {reply(nxt, "n1", "n2", hint=0)}
            old.transport.send(entries(raft_fsm, "n1", "n2"))
            await until(lambda: len(of_type(new, nxt.AppendEntries)) == 1, what="AppendEntries from n1")
            assert of_type(new, nxt.AppendEntries) == [entries(nxt, "n1", "n2", crc=0)]
            # a message type the older node lacks is never sent, only counted; the link carries on
            new.transport.send(nxt.Nudge(msg_id=3, sender="n2", receiver="n1", term=2, reason="test"))
            new.transport.send(reply(nxt, "n2", "n1", msg_id=4))
            await until(lambda: any(m.msg_id == 4 for m in old.inbox), what="the message after Nudge")
            assert [m.msg_id for m in old.inbox if m.msg_id > 2] == [4]  # in order: TimeoutNow would be before
            assert new.transport.unsendable("n1") == 1 and old.transport.unsendable("n2") == 0
            assert new.lines("not sending Nudge to n1, whose spec is older: its spec has no Nudge")
            assert new.lines("n2: n1 has an older spec: this node sends it only what it knows "
                             "(AppendEntriesReply.hint is only in this node's spec; message Nudge (tag 11) is "
                             "only in this node's spec; Entry.crc is only in this node's spec; EntryKind.marker (4) "
                             "is only in this node's spec)")
            assert old.lines("n1: n2 has a newer spec: it sends this node only what this node knows")
            assert old.log.warnings() == [] and new.log.warnings() == []
        finally:
            await old.transport.stop()
            await new.transport.stop()

    run(main())


def test_nodes_of_compatible_specs_talk_in_the_layout_both_know(modules: dict[str, ModuleType]) -> None:
    _exchange(modules, None)


def test_nodes_of_compatible_specs_talk_over_mutual_tls_too(modules: dict[str, ModuleType],
                                                            certs: dict[str, TlsConfig]) -> None:  # noqa: F811
    _exchange(modules, certs)


# ------------------------------------------------------------------ a breaking successor


def test_a_breaking_change_is_refused_at_the_handshake_with_one_warning_each(modules: dict[str, ModuleType]) -> None:
    async def main() -> None:
        ports = dict(zip(["n1", "n2"], free_ports(2), strict=True))
        old, new = Node("n1", ports), Node("n2", ports, modules["retyped"])
        await old.transport.start()
        await new.transport.start()
        try:
            def refusals(node: Node) -> int:
                return len(node.lines("spec differs incompatibly"))

            # each node dials the other and retries every 1-2 s: wait for a few refusals
            await until(lambda: refusals(old) >= 4 and refusals(new) >= 4, timeout=15,
                        action=lambda: old.transport.send(reply(raft_fsm, "n1", "n2")),
                        what="repeated refusals")
            for node, peer, difference in (
                (old, "n2", "AppendEntries.entries changed type list[Entry] -> list[Record]"),
                (new, "n1", "AppendEntries.entries changed type list[Record] -> list[Entry]"),
            ):
                warnings = node.log.warnings()
                assert len(warnings) == 1, warnings
                assert f"peer {peer}'s spec differs incompatibly: {difference}" in warnings[0], warnings
            assert old.inbox == [] and new.inbox == []
        finally:
            await old.transport.stop()
            await new.transport.stop()

    run(main())


# ------------------------------------------------------------------ who may make a node read a layout


def test_before_authenticating_a_stranger_cannot_send_a_layout() -> None:
    """A hello announcing another layout gets nothing but the usual MAX_HELLO-bounded
    proof read: the layout frame is only read after the proof."""

    async def main() -> None:
        ports = dict(zip(["n1", "n2"], free_ports(2), strict=True))
        listener = Node("n1", ports)
        await listener.transport.start()
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", ports["n1"])
            writer.write(hello("n2", schema="f" * 64) + frame(os.urandom(MAX_HELLO * 16)))
            await writer.drain()
            assert await asyncio.wait_for(closed_by_server(reader), 5)
            writer.close()
            await until(lambda: bool(listener.log.warnings()), what="the refusal")
            assert listener.log.warnings()[0].endswith(f"frame length {MAX_HELLO * 16} exceeds the limit of "
                                                       f"{MAX_HELLO} bytes")
        finally:
            await listener.transport.stop()

    run(main())


@pytest.mark.parametrize(("case", "reason"), [
    ("another layout than announced", "its wire layout does not match the digest in its hello"),
    ("malformed layout", "its wire layout is malformed: expected [messages, records, enums], got 1 parts"),
])
def test_an_authenticated_peer_must_send_the_layout_it_announced(case: str, reason: str) -> None:
    async def main() -> None:
        ports = dict(zip(["n1", "n2"], free_ports(2), strict=True))
        listener = Node("n1", ports)
        await listener.transport.start()
        try:
            layout = msgpack.packb([[]]) if case == "malformed layout" else DEFAULT.layout_bytes
            announced = hashlib.sha256(layout).hexdigest() if case == "malformed layout" else "e" * 64
            reader, writer = await asyncio.open_connection("127.0.0.1", ports["n1"])
            nonce = auth.new_nonce()
            writer.write(hello("n2", schema=announced, nonce=nonce))
            _, their_nonce = parse_hello(await read_plain_frame(reader))
            transcript = auth.transcript(PROTOCOL_VERSION, CLUSTER, "n2", "n1", nonce, their_nonce,
                                         dialer_schema=announced, listener_schema=SCHEMA_DIGEST)
            writer.write(frame(auth.proof(SECRET, auth.DIALER, transcript)))
            assert await read_plain_frame(reader) == auth.proof(SECRET, auth.LISTENER, transcript)
            assert await read_plain_frame(reader) == DEFAULT.layout_bytes  # the digests differ: it sends its own
            writer.write(frame(layout))
            await writer.drain()
            assert await asyncio.wait_for(closed_by_server(reader), 5)
            writer.close()
            await until(lambda: bool(listener.log.warnings()), what="the refusal")
            assert listener.log.warnings() == [f"n1: closed connection from 127.0.0.1:"
                                               f"{writer.get_extra_info('sockname')[1]} (says it is 'n2'): {reason}"]
        finally:
            await listener.transport.stop()

    run(main())


# ------------------------------------------------------------------ a rolling upgrade of real processes


class Writer(threading.Thread):
    """A client writing k0, k1, ... one after another through whichever node answers,
    recording when each write was acknowledged."""

    def __init__(self, cluster: LocalCluster) -> None:
        super().__init__(daemon=True)
        self.cluster = cluster
        self.acked: list[tuple[str, float]] = []
        self.halt = threading.Event()

    def run(self) -> None:
        number = 0
        turn = 0
        while not self.halt.is_set():
            node = self.cluster.ids[turn % len(self.cluster.ids)]
            turn += 1
            if not self.cluster.running(node):
                continue
            key = f"k{number}"
            try:
                code, _ = self.cluster.put(node, key, str(number), timeout=3)
            except OSError:
                code = 0
            if code == 200:
                self.acked.append((key, time.monotonic()))
                number += 1
            else:
                self.halt.wait(0.05)

    def wait_for(self, count: int, timeout: float, what: str) -> None:
        """Until `count` more writes are acknowledged."""
        target = len(self.acked) + count
        deadline = time.monotonic() + timeout
        while len(self.acked) < target:
            if time.monotonic() > deadline:
                raise AssertionError(f"{what}: only {len(self.acked) - target + count} of {count} writes "
                                     f"acknowledged within {timeout}s")
            time.sleep(0.05)


def _caught_up(cluster: LocalCluster, node: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        leader = cluster.leader()
        mine, theirs = cluster.status(node), cluster.status(leader) if leader else None
        if mine and theirs and mine["applied"] >= theirs["commit"] > 0 and mine["leader"] == leader:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"{node} did not catch up within {timeout}s: {mine} vs {theirs}")
        time.sleep(0.05)


@pytest.fixture
def upgrade(tmp_path: Path) -> Iterator[tuple[LocalCluster, str]]:
    python = spec_versions.source_tree(tmp_path / "next", spec_versions.NEXT, spec_versions.NEXT_ROWS)
    cluster = LocalCluster(tmp_path / "cluster", 3, fsync=False)
    try:
        yield cluster, str(python)
    finally:
        cluster.stop()


def test_a_rolling_upgrade_across_a_compatible_change_keeps_committing(upgrade: tuple[LocalCluster, str]) -> None:
    cluster, new_python = upgrade
    cluster.start()
    cluster.wait_until_serving(timeout=15)
    cluster.wait_for_leader(timeout=15, agreed=True)
    writer = Writer(cluster)
    writer.start()
    try:
        writer.wait_for(20, 15, "old, old, old")
        for step, node in enumerate(("n3", "n2", "n1")):
            assert cluster.stop_node(node) == 0
            writer.wait_for(10, 15, f"with {node} down")
            cluster.python = new_python  # same data directory, new code
            cluster.start_node(node)
            cluster.wait_until_serving(timeout=15)
            _caught_up(cluster, node, 15)
            versions = ", ".join(("new" if i >= 2 - step else "old") for i in range(3))
            writer.wait_for(20, 15, versions)
            assert cluster.put(node, f"through-{node}", versions)[0] == 200
    finally:
        writer.halt.set()
        writer.join(10)
    # committing throughout: no long pause between two acknowledged writes
    times = [t for _, t in writer.acked]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert max(gaps) < 5, f"a {max(gaps):.1f}s pause in committing"
    # nothing acknowledged was lost, on any node
    for node in cluster.ids:
        for key, _ in writer.acked[:: max(1, len(writer.acked) // 20)] + writer.acked[-1:]:
            assert cluster.get(node, key)[0] == 200, (node, key)
    # the new nodes really ran the new spec, and spoke the old layout with the old ones
    n3_log = cluster.log_path("n3").read_text()
    assert "n3: n1 has an older spec: this node sends it only what it knows" in n3_log
    n1_log = cluster.log_path("n1").read_text()
    assert "n1: n3 has a newer spec" in n1_log
    assert "spec differs incompatibly" not in n1_log + n3_log + cluster.log_path("n2").read_text()

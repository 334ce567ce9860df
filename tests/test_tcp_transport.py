"""The TCP transport on 127.0.0.1: messages flow between real sockets, a peer that comes
back gets what was queued for it, and every kind of bad input is logged once, closed,
and leaves the listener serving good peers. Nodes authenticate with the cluster secret
unless a test says otherwise (TLS here; the attacks on authentication are in
tests/test_peer_auth.py)."""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import shutil
import socket
import ssl
import subprocess
import time
from collections.abc import Callable, Coroutine, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import attrs
import msgpack
import pytest

from generated.raft_fsm import AppendEntries, Entry, EntryKind, RequestVoteReply, WireMessage
from runtime.codec import SCHEMA_DIGEST, encode
from runtime.transport import auth
from runtime.transport.tcp import (
    HELLO_MAGIC,
    OUTBOUND_QUEUE,
    OUTBOUND_QUEUE_BYTES,
    PROTOCOL_VERSION,
    TcpTransport,
    TlsConfig,
)

CLUSTER = "test-cluster"
SECRET = b"the test cluster's secret, 32+ b"
T = TypeVar("T")


# ------------------------------------------------------------------ helpers


def run(main: Coroutine[Any, Any, T]) -> T:
    """Each test is one event loop with a hard deadline, so a hang fails instead of blocking."""
    return asyncio.run(asyncio.wait_for(main, 20))


async def until(condition: Callable[[], bool], *, timeout: float = 8.0,
                action: Callable[[], None] | None = None, what: str = "condition") -> None:
    """Poll `condition` (doing `action` each round) until it holds or the deadline passes."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        if action is not None:
            action()
        await asyncio.sleep(0.01)


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


class Captured(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def warnings(self, containing: str = "") -> list[str]:
        return [r.getMessage() for r in self.records
                if r.levelno >= logging.WARNING and containing in r.getMessage()]


_logger_serial = iter(range(10**9))


def captured_logger() -> tuple[logging.Logger, Captured]:
    logger = logging.getLogger(f"raftfsm.test.transport.{next(_logger_serial)}")
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    handler = Captured()
    logger.addHandler(handler)
    return logger, handler


class Node:
    """A transport plus what it received and logged."""

    def __init__(self, node_id: str, ports: dict[str, int], tls: dict[str, TlsConfig] | None = None,
                 *, peers: list[str] | None = None, secret: bytes | None = SECRET, no_auth: bool = False,
                 addresses: dict[str, int] | None = None) -> None:
        """`addresses` overrides the port this node dials for some peers (a proxy)."""
        self.inbox: list[WireMessage] = []
        self.logger, self.log = captured_logger()
        others = peers if peers is not None else [p for p in ports if p != node_id]
        dial = {**ports, **(addresses or {})}
        self.transport = TcpTransport(
            node_id, CLUSTER, ("127.0.0.1", ports[node_id]),
            {p: ("127.0.0.1", dial[p]) for p in others}, self.inbox.append,
            tls=tls[node_id] if tls else None, secret=None if tls or no_auth else secret,
            insecure_no_auth=no_auth, logger=self.logger,
        )
        self.node_id = node_id
        self.port = ports[node_id]

    def received(self, **match: Any) -> list[WireMessage]:
        return [m for m in self.inbox if all(getattr(m, k) == v for k, v in match.items())]


@asynccontextmanager
async def started(*nodes: Node) -> Any:
    for node in nodes:
        await node.transport.start()
    try:
        yield nodes
    finally:
        for node in nodes:
            await node.transport.stop()


def reply(sender: str, receiver: str, msg_id: int = 1, term: int = 1) -> RequestVoteReply:
    return RequestVoteReply(msg_id=msg_id, sender=sender, receiver=receiver, term=term, vote_granted=True)


def append(sender: str, receiver: str, entries: int = 2, size: int = 100, msg_id: int = 1) -> AppendEntries:
    return AppendEntries(
        msg_id=msg_id, sender=sender, receiver=receiver, term=2, leader_id=sender, prev_log_index=0,
        prev_log_term=0, leader_commit=0, read_round=0,
        entries=tuple(Entry(term=2, index=i + 1, kind=EntryKind.data, data=bytes(size)) for i in range(entries)),
    )


def frame(body: bytes) -> bytes:
    return len(body).to_bytes(4, "big") + body


def hello(node_id: str, cluster: str = CLUSTER, version: int = PROTOCOL_VERSION,
          schema: str = SCHEMA_DIGEST, mode: str = "secret", nonce: bytes | None = None) -> bytes:
    """A hello as this version sends it (`mode` "secret" gets a fresh nonce)."""
    if nonce is None:
        nonce = auth.new_nonce() if mode == "secret" else b""
    return frame(msgpack.packb([HELLO_MAGIC, version, schema, cluster, node_id, mode, nonce], use_bin_type=True))


def hello_v1(node_id: str, cluster: str = CLUSTER) -> bytes:
    """The hello of protocol version 1 (no authentication): what an attacker replayed."""
    return frame(msgpack.packb([HELLO_MAGIC, 1, SCHEMA_DIGEST, cluster, node_id], use_bin_type=True))


def parse_hello(body: bytes) -> tuple[str, bytes]:
    fields = msgpack.unpackb(body, raw=False)
    assert fields[:4] == [HELLO_MAGIC, PROTOCOL_VERSION, SCHEMA_DIGEST, CLUSTER], fields
    return fields[4], fields[6]


async def read_plain_frame(reader: asyncio.StreamReader) -> bytes:
    length = int.from_bytes(await reader.readexactly(4), "big")
    return await reader.readexactly(length)


async def handshake(port: int, node_id: str, secret: bytes = SECRET, listener: str = "n1",
                    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, auth.FrameSealer]:
    """Dial the listener on `port` as `node_id` and do the secret handshake the way a node
    does (with runtime.transport.auth): a peer that holds the secret."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    nonce = auth.new_nonce()
    writer.write(hello(node_id, nonce=nonce))
    their_id, their_nonce = parse_hello(await read_plain_frame(reader))
    assert their_id == listener
    transcript = auth.transcript(PROTOCOL_VERSION, CLUSTER, node_id, listener, nonce, their_nonce)
    writer.write(frame(auth.proof(secret, auth.DIALER, transcript)))
    answer = await read_plain_frame(reader)
    assert answer == auth.proof(secret, auth.LISTENER, transcript)
    return reader, writer, auth.FrameSealer(auth.frame_key(secret, transcript))


async def accept_handshake(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, listener: str,
                           secret: bytes = SECRET) -> tuple[str, auth.FrameOpener]:
    """The listener's side of the secret handshake, for fake peers in tests."""
    dialer, their_nonce = parse_hello(await read_plain_frame(reader))
    nonce = auth.new_nonce()
    writer.write(hello(listener, nonce=nonce))
    transcript = auth.transcript(PROTOCOL_VERSION, CLUSTER, dialer, listener, their_nonce, nonce)
    assert await read_plain_frame(reader) == auth.proof(secret, auth.DIALER, transcript)
    writer.write(frame(auth.proof(secret, auth.LISTENER, transcript)))
    return dialer, auth.FrameOpener(auth.frame_key(secret, transcript))


async def closed_by_server(reader: asyncio.StreamReader) -> bool:
    """Read until the server hangs up; True once it has (EOF or reset)."""
    try:
        while await reader.read(65536):
            pass
    except (ConnectionError, ssl.SSLError, OSError):
        pass
    return True


async def still_serves(good: Node, listener: Node, msg_id: int) -> None:
    """A good peer's message still arrives (re-sent while polling: Raft would retry too)."""
    await until(lambda: bool(listener.received(msg_id=msg_id)),
                action=lambda: good.transport.send(reply(good.node_id, listener.node_id, msg_id=msg_id)),
                what=f"message {msg_id} from {good.node_id}")


# ------------------------------------------------------------------ delivery


def test_two_nodes_exchange_messages_both_ways() -> None:
    async def main() -> None:
        ports = dict(zip(["n1", "n2"], free_ports(2), strict=True))
        n1, n2 = Node("n1", ports), Node("n2", ports)
        async with started(n1, n2):
            n1.transport.send(append("n1", "n2", entries=64))
            n2.transport.send(reply("n2", "n1"))
            await until(lambda: bool(n2.inbox) and bool(n1.inbox), what="both deliveries")
            assert n2.inbox == [append("n1", "n2", entries=64)]
            assert n1.inbox == [reply("n2", "n1")]
            assert n1.log.warnings() == [] and n2.log.warnings() == []

    run(main())


def test_three_nodes_all_pairs_in_order() -> None:
    async def main() -> None:
        ids = ["n1", "n2", "n3"]
        ports = dict(zip(ids, free_ports(3), strict=True))
        nodes = [Node(i, ports) for i in ids]
        async with started(*nodes):
            for sender in nodes:
                for receiver in ids:
                    if receiver != sender.node_id:
                        for msg_id in range(100):
                            sender.transport.send(reply(sender.node_id, receiver, msg_id=msg_id))
            await until(lambda: all(len(n.inbox) == 200 for n in nodes), what="600 messages")
            for node in nodes:
                for sender_id in ids:
                    if sender_id != node.node_id:
                        # one connection per direction: order is kept
                        assert [m.msg_id for m in node.received(sender=sender_id)] == list(range(100))

    run(main())


def test_a_peer_that_is_down_gets_queued_messages_once_it_comes_up() -> None:
    async def main() -> None:
        ports = dict(zip(["n1", "n2"], free_ports(2), strict=True))
        n1 = Node("n1", ports)
        async with started(n1):
            n1.transport.send(reply("n1", "n2", msg_id=42))
            await until(lambda: bool(n1.log.warnings("cannot reach n2")), what="a failed dial")
            n2 = Node("n2", ports)
            async with started(n2):
                await until(lambda: bool(n2.received(msg_id=42)), what="delivery after reconnect")
            # the failed dials were reported once, not once per retry
            assert len(n1.log.warnings("cannot reach n2")) == 1

    run(main())


def test_a_restarted_peer_is_reached_again() -> None:
    async def main() -> None:
        ports = dict(zip(["n1", "n2"], free_ports(2), strict=True))
        n1, n2 = Node("n1", ports), Node("n2", ports)
        async with started(n1):
            async with started(n2):
                await still_serves(n1, n2, msg_id=1)
            n2 = Node("n2", ports)
            async with started(n2):
                await still_serves(n1, n2, msg_id=2)

    run(main())


def test_a_dead_peer_blocks_neither_send_nor_other_peers_and_its_queue_is_bounded() -> None:
    async def main() -> None:
        ports = dict(zip(["n1", "n2", "n3"], free_ports(3), strict=True))  # n3 never starts
        n1, n2 = Node("n1", ports), Node("n2", ports)
        async with started(n1, n2):
            start = time.perf_counter()
            for msg_id in range(OUTBOUND_QUEUE + 50):
                n1.transport.send(append("n1", "n3", entries=4, msg_id=msg_id))
            assert time.perf_counter() - start < 2.0
            assert n1.transport.dropped("n3") == 50
            await still_serves(n1, n2, msg_id=7)

    run(main())


def test_the_queue_of_a_dead_peer_is_bounded_in_bytes_too() -> None:
    """Far fewer than OUTBOUND_QUEUE frames, but large ones: the oldest go once the queue
    holds OUTBOUND_QUEUE_BYTES, and they are counted in dropped()."""

    async def main() -> None:
        ports = dict(zip(["n1", "n2", "n3"], free_ports(3), strict=True))  # n3 never starts
        n1, n2 = Node("n1", ports), Node("n2", ports)
        big = append("n1", "n3", entries=4, size=2**20)  # a little over 4 MiB encoded
        size = len(encode(big))
        count = OUTBOUND_QUEUE_BYTES // size + 5
        async with started(n1, n2):
            for msg_id in range(count):
                n1.transport.send(attrs.evolve(big, msg_id=msg_id))
            assert n1.transport.dropped("n3") == count - OUTBOUND_QUEUE_BYTES // size
            queue = n1.transport._peers["n3"].queue
            assert n1.transport._peers["n3"].queued_bytes == sum(map(len, queue)) <= OUTBOUND_QUEUE_BYTES
            assert len(queue) == OUTBOUND_QUEUE_BYTES // size  # the newest frames stay
            await still_serves(n1, n2, msg_id=7)

    run(main())


def test_a_peer_that_stops_reading_does_not_block_the_others() -> None:
    async def main() -> None:
        ports = dict(zip(["n1", "n2", "n3"], free_ports(3), strict=True))
        accepted: list[asyncio.StreamWriter] = []

        async def stuck(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await accept_handshake(reader, writer, "n3")  # a valid n3 that then never reads again
            accepted.append(writer)

        server = await asyncio.start_server(stuck, "127.0.0.1", ports["n3"])
        n1, n2 = Node("n1", ports), Node("n2", ports)
        try:
            async with started(n1, n2):
                for msg_id in range(300):  # ~20 MB: far beyond the socket buffers
                    n1.transport.send(append("n1", "n3", entries=64, size=1000, msg_id=msg_id))
                await until(lambda: bool(accepted), what="n3 to accept")
                await still_serves(n1, n2, msg_id=9)
        finally:
            for writer in accepted:
                writer.close()
            server.close()
            await server.wait_closed()

    run(main())


# ------------------------------------------------------------------ bad input


def _hostile_cases() -> Iterator[tuple[str, bytes, str]]:
    """Strangers: (case, bytes a client without the secret sends, reason the listener must log)."""
    yield "http garbage", b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", "frame length 1195725856 exceeds the limit of 4096 bytes"
    yield "garbage hello", frame(b"\xc1\xc1\xc1"), "handshake is not msgpack"
    yield "not a hello", frame(msgpack.packb(["hello", 1])), "not a raftfsm handshake"
    yield "wrong cluster id", hello("n2", cluster="other"), "wrong cluster id 'other' (this node is in 'test-cluster')"
    yield "unknown node id", hello("mallory"), "unknown node id 'mallory'"
    yield "wrong protocol version", hello("n2", version=99), f"protocol version 99 (this node speaks {PROTOCOL_VERSION})"
    yield "version 1 hello", hello_v1("n2"), f"protocol version 1 (this node speaks {PROTOCOL_VERSION})"
    yield "version 2 hello", hello("n2", version=2), f"protocol version 2 (this node speaks {PROTOCOL_VERSION})"
    yield "malformed layout digest", hello("n2", schema="0" * 16), \
        "the wire layout digest must be 64 hex digits, got '0000000000000000'"
    yield "no authentication", hello("n2", mode="none"), "it authenticates with 'none', this node requires 'secret'"
    yield "short nonce", hello("n2", nonce=b"1234"), "the nonce must be 32 bytes"
    yield "oversized hello", (2**31).to_bytes(4, "big"), "frame length 2147483648 exceeds the limit of 4096 bytes"
    yield "guessed proof", hello("n2") + frame(bytes(32)), "bad proof: a different cluster secret, or not 'n2'"
    yield "frames without a proof", hello("n2") + frame(encode(reply("n2", "n1"))), "bad proof"
    yield "hello then nothing", hello("n2"), "it closed the connection before sending its proof"


HOSTILE = list(_hostile_cases())


def _insider_cases() -> Iterator[tuple[str, Callable[[auth.FrameSealer], bytes], str]]:
    """A peer that holds the secret and completed the handshake, then misbehaves:
    (case, what it sends given its frame sealer, reason the listener must log)."""
    bad_kind = msgpack.unpackb(encode(append("n2", "n1")))
    bad_kind[8][0][2] = 9
    bad_kind_body = msgpack.packb(bad_kind, use_bin_type=True)
    yield "oversized length", lambda s: auth.FRAME_HEADER.pack(2**31, 0) + bytes(auth.MAC_BYTES), \
        "frame length 2147483648 exceeds the limit of 1048576 bytes"
    yield "garbage frame", lambda s: s.seal(b"\xc1garbage"), "invalid frame: not a msgpack frame: FormatError"
    yield "wrong schema", lambda s: s.seal(bad_kind_body), \
        "invalid frame: AppendEntries.entries[0].kind: 9 is not a valid EntryKind"
    yield "forged sender", lambda s: s.seal(encode(reply("n3", "n1"))), \
        "RequestVoteReply claims sender 'n3' on n2's connection"
    yield "wrong receiver", lambda s: s.seal(encode(reply("n2", "n3"))), "RequestVoteReply is addressed to 'n3'"
    yield "truncated frame", lambda s: s.seal(bytes(100))[:-97], "connection closed after 3 of the 100 bytes of a frame"
    yield "unsealed frames", lambda s: 2 * frame(encode(append("n2", "n1"))), "bad MAC on frame 0"
    yield "tampered frame", lambda s: s.seal(encode(reply("n2", "n1")))[:-1] + b"\xff", "bad MAC on frame 0"
    yield "replayed frame", lambda s: 2 * s.seal(encode(reply("n2", "n1", msg_id=555))), \
        "replayed or reordered frame: sequence 0, expected 1"


INSIDER = list(_insider_cases())


async def _expect_one_warning(listener: Node, good: Node, reader: asyncio.StreamReader,
                              writer: asyncio.StreamWriter, data: bytes, reason: str, *, eof: bool) -> None:
    client = f"127.0.0.1:{writer.get_extra_info('sockname')[1]}"
    writer.write(data)
    if eof:
        writer.write_eof()  # the client gives up mid-frame
    await writer.drain()
    assert await asyncio.wait_for(closed_by_server(reader), 5)
    writer.close()
    await until(lambda: bool(listener.log.warnings(client)), what="the log line")
    lines = listener.log.warnings(client)
    assert len(lines) == 1, lines
    assert reason in lines[0], lines
    assert lines[0].startswith(f"{listener.node_id}: closed connection from {client}")
    await still_serves(good, listener, msg_id=99)
    assert len(listener.log.warnings(client)) == 1


@pytest.mark.parametrize(("data", "reason"), [c[1:] for c in HOSTILE], ids=[c[0] for c in HOSTILE])
def test_bad_input_is_logged_once_closed_and_the_listener_keeps_serving(data: bytes, reason: str) -> None:
    async def main() -> None:
        ports = dict(zip(["n1", "n2", "n3"], free_ports(3), strict=True))
        n1, n2 = Node("n1", ports), Node("n2", ports)
        async with started(n1, n2):
            reader, writer = await asyncio.open_connection("127.0.0.1", n1.port)
            await _expect_one_warning(n1, n2, reader, writer, data, reason, eof=True)
            assert [m.msg_id for m in n1.inbox if m.msg_id != 99] == []

    run(main())


@pytest.mark.parametrize(("case", "make", "reason"), INSIDER, ids=[c[0] for c in INSIDER])
def test_bad_frames_from_an_authenticated_peer_are_logged_once_and_closed(
    case: str, make: Callable[[auth.FrameSealer], bytes], reason: str
) -> None:
    async def main() -> None:
        ports = dict(zip(["n1", "n2", "n3"], free_ports(3), strict=True))
        n1, n3 = Node("n1", ports), Node("n3", ports)
        n1.transport.max_frame = 2**20
        async with started(n1, n3):
            reader, writer, sealer = await handshake(n1.port, "n2")
            await _expect_one_warning(n1, n3, reader, writer, make(sealer), reason, eof=True)
            # only the first copy of the replayed frame got through; nothing of the others
            assert n1.received(sender="n2") == ([reply("n2", "n1", msg_id=555)] if case == "replayed frame" else [])

    run(main())


def test_a_silent_client_does_not_hold_the_listener() -> None:
    async def main() -> None:
        ports = dict(zip(["n1", "n2"], free_ports(2), strict=True))
        n1, n2 = Node("n1", ports), Node("n2", ports)
        async with started(n1, n2):
            _, idle = await asyncio.open_connection("127.0.0.1", n1.port)  # says nothing
            await still_serves(n2, n1, msg_id=5)
            idle.close()

    run(main())


def test_a_failing_message_handler_does_not_cut_the_peer_off() -> None:
    async def main() -> None:
        ports = dict(zip(["n1", "n2"], free_ports(2), strict=True))
        n1, n2 = Node("n1", ports), Node("n2", ports)
        seen: list[int] = []

        def handler(message: WireMessage) -> None:
            seen.append(message.msg_id)
            if message.msg_id == 1:
                raise RuntimeError("boom")

        n1.transport._on_message = handler
        async with started(n1, n2):
            n2.transport.send(reply("n2", "n1", msg_id=1))
            n2.transport.send(reply("n2", "n1", msg_id=2))
            await until(lambda: seen == [1, 2], what="both messages")
            assert any("on_message failed" in r.getMessage() for r in n1.log.records)

    run(main())


def test_sending_is_checked_for_our_own_mistakes() -> None:
    async def main() -> None:
        ports = dict(zip(["n1", "n2"], free_ports(2), strict=True))
        n1 = Node("n1", ports)
        async with started(n1):
            with pytest.raises(ValueError, match="cannot send a message from 'n2'"):
                n1.transport.send(reply("n2", "n1"))
            n1.transport.max_frame = 1000
            with pytest.raises(Exception, match="over max_frame 1000"):
                n1.transport.send(append("n1", "n2", entries=64))
            n1.transport.send(reply("n1", "n9"))  # nobody to send to: dropped, said once
            n1.transport.send(reply("n1", "n9"))
            assert len(n1.log.warnings("no address for 'n9'")) == 1

    run(main())


def test_plain_tcp_refuses_non_loopback_addresses_unless_told_insecure() -> None:
    with pytest.raises(ValueError, match="without TLS"):
        TcpTransport("n1", CLUSTER, ("0.0.0.0", 0), {}, lambda m: None, secret=SECRET)
    TcpTransport("n1", CLUSTER, ("0.0.0.0", 0), {}, lambda m: None, secret=SECRET, insecure=True)
    TcpTransport("n1", CLUSTER, ("::1", 0), {}, lambda m: None, secret=SECRET)


# ------------------------------------------------------------------ mutual TLS


def _openssl_certs(out: Path, node_ids: list[str]) -> dict[str, TlsConfig]:
    """Stand-in for runtime.certs when `cryptography` is not installed (tests only)."""
    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True)

    out.mkdir(parents=True, exist_ok=True)
    ca, ca_key = out / "ca.pem", out / "ca.key"
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", str(ca_key), "-out", str(ca), "-days", "2", "-subj", "/CN=test CA",
            "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    configs = {}
    for node_id in node_ids:
        key, csr, pem, ext = (out / f"{node_id}{suffix}" for suffix in (".key", ".csr", ".pem", ".ext"))
        ext.write_text(f"subjectAltName=DNS:{node_id}\nextendedKeyUsage=serverAuth,clientAuth\n")
        openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                "-keyout", str(key), "-out", str(csr), "-subj", f"/CN={node_id}")
        openssl("x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key), "-CAcreateserial",
                "-out", str(pem), "-days", "2", "-extfile", str(ext))
        configs[node_id] = TlsConfig(str(ca), str(pem), str(key))
    return configs


def make_certs(out: Path, node_ids: list[str]) -> dict[str, TlsConfig]:
    if importlib.util.find_spec("cryptography") is None:
        if shutil.which("openssl") is None:
            pytest.skip("needs the cryptography package or the openssl command")
        return _openssl_certs(out, node_ids)
    from runtime.certs import make_dev_certs

    return make_dev_certs(out, node_ids)


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, TlsConfig]:
    return make_certs(tmp_path_factory.mktemp("certs"), ["n1", "n2", "n3"])


@pytest.fixture(scope="module")
def foreign_certs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, TlsConfig]:
    """Certificates for the same node ids from a CA the cluster does not trust."""
    return make_certs(tmp_path_factory.mktemp("foreign"), ["n2"])


def test_mutual_tls_round_trip(certs: dict[str, TlsConfig]) -> None:
    async def main() -> None:
        ports = dict(zip(["n1", "n2"], free_ports(2), strict=True))
        n1, n2 = Node("n1", ports, certs), Node("n2", ports, certs)
        async with started(n1, n2):
            n1.transport.send(append("n1", "n2", entries=64))
            n2.transport.send(reply("n2", "n1"))
            await until(lambda: bool(n1.inbox) and bool(n2.inbox), what="both deliveries over TLS")
            assert n2.inbox == [append("n1", "n2", entries=64)]
            assert n1.inbox == [reply("n2", "n1")]
            assert n1.log.warnings() == [] and n2.log.warnings() == []

    run(main())


def _client_context(ca: str, cert: TlsConfig | None) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.load_verify_locations(ca)
    if cert is not None:
        context.load_cert_chain(cert.cert_file, cert.key_file)
    return context


@pytest.mark.parametrize(
    ("client", "reason"),
    [
        ("no certificate", "TLS handshake failed"),
        ("certificate from another CA", "TLS handshake failed"),
        ("no TLS at all", "TLS handshake failed"),
        ("certificate of another node", "says it is 'n2' but its certificate names ['n3']"),
    ],
)
def test_tls_clients_without_a_valid_certificate_are_logged_once_and_closed(
    certs: dict[str, TlsConfig], foreign_certs: dict[str, TlsConfig], client: str, reason: str
) -> None:
    async def main() -> None:
        ports = dict(zip(["n1", "n2", "n3"], free_ports(3), strict=True))
        n1, n2 = Node("n1", ports, certs), Node("n2", ports, certs)
        ca = certs["n1"].ca_file
        async with started(n1, n2):
            context: ssl.SSLContext | None = {
                "no certificate": _client_context(ca, None),
                "certificate from another CA": _client_context(ca, foreign_certs["n2"]),
                "no TLS at all": None,
                "certificate of another node": _client_context(ca, certs["n3"]),
            }[client]
            reader, writer = await asyncio.open_connection("127.0.0.1", n1.port, ssl=context)
            address = f"127.0.0.1:{writer.get_extra_info('sockname')[1]}"
            try:
                writer.write(hello("n2", mode="tls"))  # claims n2 whatever its certificate says
                await writer.drain()
            except (ConnectionError, ssl.SSLError):
                pass
            assert await asyncio.wait_for(closed_by_server(reader), 5)
            writer.transport.abort()
            await until(lambda: bool(n1.log.warnings(address)), what="the log line")
            lines = n1.log.warnings(address)
            assert len(lines) == 1 and reason in lines[0], lines
            await still_serves(n2, n1, msg_id=3)

    run(main())


def test_a_tls_listener_whose_certificate_names_another_node_is_refused_by_the_dialer(
    certs: dict[str, TlsConfig]
) -> None:
    """n3's valid certificate on n2's address, saying "n2" in its hello: n1 does not send to it."""

    async def main() -> None:
        ports = dict(zip(["n1", "n2"], free_ports(2), strict=True))
        n1 = Node("n1", ports, certs)
        impostor_log, _ = captured_logger()
        impostor = TcpTransport("n2", CLUSTER, ("127.0.0.1", ports["n2"]), {"n1": ("127.0.0.1", ports["n1"])},
                                lambda m: None, tls=certs["n3"], logger=impostor_log)
        await impostor.start()
        try:
            async with started(n1):
                n1.transport.send(reply("n1", "n2", msg_id=4))
                await until(lambda: bool(n1.log.warnings("cannot reach n2")), what="n1's warning")
                line, = n1.log.warnings("cannot reach n2")
                assert "says it is 'n2' but its certificate names ['n3']" in line, line
        finally:
            await impostor.stop()

    run(main())

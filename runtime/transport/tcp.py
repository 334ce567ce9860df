"""Raft messages between processes: length-prefixed msgpack frames over asyncio TCP,
authenticated either by mutual TLS or by a shared cluster secret.

Each node dials one outbound connection per peer and only writes on it; it only reads
on the connections peers dial to it. One direction per connection means no request
matching and no races over who owns a socket: a lost connection is simply re-dialled.

Every connection opens with a hello frame each way (protocol version, wire-layout
digest, cluster id, node id, authentication mode, a fresh nonce). A listener only
accepts nodes it knows, from its own cluster, that authenticate as the node they claim
to be: under TLS, the verified certificate must name it; with the cluster secret, the
dialer then sends an HMAC proof bound to the cluster, both ids, both nonces, both layout
digests and its role, and the listener answers with its own (runtime/transport/auth.py).
After that, each frame carries a sequence number and a MAC under a key derived from the
same transcript, so nothing can be injected, altered, replayed, reordered or cut from
the middle. Only an authenticated connection replaces an older one from the same node.
Afterwards only messages whose ``sender`` is that node are delivered. Anything else —
garbage, a wrong proof or MAC, an oversized length, a frame the schema rejects — is
logged once and the connection closed; the node keeps serving everyone else.

Nodes built from different specs: when the two digests differ, each side sends its wire
layout (at most MAX_LAYOUT bytes, read only once the peer has authenticated, and checked
against the digest its hello announced) and both apply the rule of runtime/layout.py. A
breaking difference refuses the connection with one WARNING on each node naming it
(``peer n2's spec differs incompatibly: ...``); otherwise the connection uses the common
layout: messages the peer's spec lacks are not sent (counted by `unsendable`), trailing
fields it lacks are left out, those it adds are dropped (docs/spec-evolution.md).

``insecure_no_auth=True`` (tests only) skips authentication altogether and says so in a
WARNING when the transport starts: then anyone who can reach the port speaks for any node.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import ipaddress
import logging
import random
import re
import ssl
import struct
import time
from collections import deque
from typing import Any, Final

import attrs
import msgpack

from generated.raft_fsm import WireMessage
from runtime.codec import DEFAULT, Channel, Codec, FrameError, Incompatible
from runtime.layout import Layout, LayoutError
from runtime.transport import auth
from runtime.transport.base import OnMessage

__all__ = ["MAX_LAYOUT", "OUTBOUND_QUEUE", "OUTBOUND_QUEUE_BYTES", "PROTOCOL_VERSION", "TcpTransport", "TlsConfig"]

PROTOCOL_VERSION: Final = 3
"""Version of the framing and handshake (the message layout has its own digest).
2: authentication mode and nonce in the hello, secret proofs, MACed frames.
3: the hello's digest is the SHA-256 of the wire layout, both digests are in the proof
transcript, and peers whose digests differ exchange layouts and negotiate instead of
refusing each other. Nodes of version 2 and 3 refuse each other at the hello
("protocol version 2 (this node speaks 3)")."""
HELLO_MAGIC: Final = "raftfsm"
MAX_HELLO: Final = 4096
"""A hello is about 150 bytes; anything larger is not one, whatever max_frame says."""
MAX_LAYOUT: Final = 64 * 1024
"""A wire layout is a few KB (this spec's: about 1.5); it is read only from a peer that
has authenticated, and only when the digests differ."""
HANDSHAKE_TIMEOUT: Final = 5.0
"""A connection that does not finish TLS + hello + proofs in this time is closed, so idle
sockets cannot pile up on a listener."""
CONNECT_TIMEOUT: Final = 5.0
OUTBOUND_QUEUE: Final = 1024
"""Frames waiting per peer; past this the oldest go first — they are the stalest, and
Raft re-sends what still matters."""
OUTBOUND_QUEUE_BYTES: Final = 64 * 2**20
"""Bytes of frames waiting per peer; past this too the oldest go first (a peer that is
down must not make us hold 1,024 frames of up to max_frame each)."""
WRITE_BATCH_BYTES: Final = 1 << 20
"""At most about this much is handed to the socket before waiting for it to drain."""
BACKOFF_MIN: Final = 0.05
BACKOFF_MAX: Final = 2.0

_HEADER: Final = struct.Struct(">I")
_SEALED_HEADER: Final = auth.FRAME_HEADER.size + auth.MAC_BYTES

AuthMode = str
"""What a hello says about how the node authenticates: "tls", "secret" or "none"."""

_DIGEST: Final = re.compile(r"[0-9a-f]{64}")


@attrs.frozen
class TlsConfig:
    """Mutual TLS material: every node trusts one CA and presents a certificate whose
    common name (or a DNS subject-alternative name) is its node id."""

    ca_file: str
    cert_file: str
    key_file: str

    def server_context(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_verify_locations(cafile=self.ca_file)
        context.load_cert_chain(self.cert_file, self.key_file)
        return context

    def client_context(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        # Peers are addressed by IP or any host name; their identity is the node id,
        # which is checked against the verified certificate after the hello.
        context.check_hostname = False
        context.load_verify_locations(cafile=self.ca_file)
        context.load_cert_chain(self.cert_file, self.key_file)
        return context


class _Rejected(Exception):
    """The other end broke the protocol; the reason is logged once and the link closed."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.claimed: str | None = None
        """The node id the peer's hello claimed, if it got that far."""


class _Incompatible(_Rejected):
    """The peer authenticated, but its spec cannot talk with ours."""


class _Peer:
    """Outbound state for one peer; the queue outlives connections so that messages
    sent while the peer was down go out once it is back."""

    def __init__(self, node_id: str, address: tuple[str, int], channel: Channel) -> None:
        self.node_id = node_id
        self.address = address
        self.queue: deque[bytes] = deque()
        """Encoded message bodies; framing (and the MAC) is added per connection."""
        self.queued_bytes = 0
        self.wakeup = asyncio.Event()
        self.task: asyncio.Task[None] | None = None
        self.dropped = 0
        self.unsendable = 0
        """Messages not sent because the peer's spec lacks their type (or an enum value)."""
        self.back = asyncio.Event()
        """Set when the peer dialled us: it is up again, so stop backing off."""
        self.channel = channel
        """How messages are encoded for the peer: the layout it had at the last handshake
        (until then, ours); the queue holds bodies encoded this way."""


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _certificate_names(certificate: Any) -> set[str]:
    if not isinstance(certificate, dict):
        return set()
    names = {
        value
        for rdn in certificate.get("subject", ())
        for key, value in rdn
        if key == "commonName"
    }
    names.update(value for key, value in certificate.get("subjectAltName", ()) if key == "DNS")
    return names


def _where(writer: asyncio.StreamWriter) -> str:
    peer = writer.get_extra_info("peername")
    if isinstance(peer, tuple) and len(peer) >= 2:
        return f"{peer[0]}:{peer[1]}"
    return str(peer)


async def _close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    try:
        async with asyncio.timeout(1.0):
            await writer.wait_closed()
    except (OSError, TimeoutError, ssl.SSLError):
        writer.transport.abort()  # a TLS peer that never answers close_notify


class TcpTransport:
    """The asyncio TCP (or mutual TLS) transport of one node; see the module docstring."""

    def __init__(
        self,
        node_id: str,
        cluster_id: str,
        listen: tuple[str, int],
        peers: dict[str, tuple[str, int]],
        on_message: OnMessage,
        *,
        tls: TlsConfig | None = None,
        secret: bytes | None = None,
        insecure: bool = False,
        insecure_no_auth: bool = False,
        max_frame: int = 16 * 2**20,
        logger: logging.Logger | None = None,
        codec: Codec | None = None,
    ) -> None:
        """Exactly one of `tls` (mutual TLS) or `secret` (the cluster secret, at least 16
        bytes, shared by every node) authenticates peers; `insecure_no_auth=True` instead
        turns authentication off, for tests only. `insecure=True` allows a non-TLS
        listener on a non-loopback address (secret-authenticated, but not encrypted).
        `codec` is the wire codec of the generated module the node's messages come from
        (default: generated.raft_fsm's)."""
        given = [name for name, value in (("tls", tls is not None), ("secret", secret is not None),
                                          ("insecure_no_auth", insecure_no_auth)) if value]
        if not given:
            raise ValueError(
                "peers must authenticate: give secret=<cluster secret bytes> or tls=TlsConfig(...) "
                "(insecure_no_auth=True turns authentication off, for tests only)"
            )
        if len(given) > 1:
            raise ValueError(f"give one of tls=, secret= or insecure_no_auth=, not {' and '.join(given)}")
        if tls is None and not insecure and not _is_loopback(listen[0]):
            raise ValueError(
                f"refusing to listen on {listen[0]} without TLS: the cluster secret authenticates peers but "
                "does not encrypt; give tls=TlsConfig(...), or insecure=True to accept that"
            )
        self._secret = auth.check_secret(secret) if secret is not None else None
        self._auth: AuthMode = "tls" if tls is not None else "secret" if secret is not None else "none"
        self.node_id = node_id
        self.cluster_id = cluster_id
        self.max_frame = max_frame
        self._listen = listen
        self._on_message = on_message
        self._log = logger or logging.getLogger(f"raftfsm.transport.{node_id}")
        self._codec = codec or DEFAULT
        self._peers = {pid: _Peer(pid, address, self._codec.identity) for pid, address in peers.items()
                       if pid != node_id}
        self._incompatible: dict[str, str] = {}
        """Per peer, the incompatibility last logged as a WARNING (logged once, on whichever
        of the two connections sees it first)."""
        self._server_context = tls.server_context() if tls else None
        self._client_context = tls.client_context() if tls else None
        self._rng = random.Random()
        self._server: asyncio.Server | None = None
        self._inbound: set[asyncio.Task[Any]] = set()
        self._inbound_by_node: dict[str, asyncio.Task[Any]] = {}
        self._unknown_receivers: set[str] = set()
        self._stopped = False

    def _hello(self, nonce: bytes) -> bytes:
        body: bytes = msgpack.packb(
            [HELLO_MAGIC, PROTOCOL_VERSION, self._codec.digest, self.cluster_id, self.node_id, self._auth, nonce],
            use_bin_type=True,
        )
        return _HEADER.pack(len(body)) + body

    @property
    def address(self) -> tuple[str, int]:
        """Where the listener is bound (the real port when `listen` asked for port 0)."""
        if self._server is None or not self._server.sockets:
            return self._listen
        host, port = self._server.sockets[0].getsockname()[:2]
        return host, port

    def dropped(self, peer_id: str) -> int:
        """Frames for `peer_id` discarded because its queue was full (OUTBOUND_QUEUE frames
        or OUTBOUND_QUEUE_BYTES bytes) or because the peer came back with another layout."""
        return self._peers[peer_id].dropped

    def unsendable(self, peer_id: str) -> int:
        """Messages for `peer_id` not sent because its spec lacks their type or an enum
        value they carry (an older node mid-upgrade; see docs/spec-evolution.md)."""
        return self._peers[peer_id].unsendable

    async def start(self) -> None:
        if self._auth == "none":
            self._log.warning(
                "%s: Raft connections on %s:%s are NOT AUTHENTICATED (insecure_no_auth=True, for tests only): "
                "anyone who can reach the port can forge Raft messages and cut peers off",
                self.node_id, *self._listen,
            )
        elif self._server_context is None and not _is_loopback(self._listen[0]):
            self._log.warning(
                "%s: listening on %s:%s WITHOUT TLS (insecure=True): peers are authenticated by the cluster "
                "secret, but anyone on the path can read the replicated commands", self.node_id, *self._listen,
            )
        self._server = await asyncio.start_server(self._serve, self._listen[0], self._listen[1])
        # Dial every peer now, even with nothing to send: our hello tells a peer that was
        # backing off from us that we are back, so a restarted follower hears from the
        # leader before its election timeout instead of campaigning.
        loop = asyncio.get_running_loop()
        for peer in self._peers.values():
            if peer.task is None:
                peer.task = loop.create_task(self._link(peer), name=f"raftfsm {self.node_id}->{peer.node_id}")

    def send(self, message: WireMessage) -> None:
        """Queue `message`; raises only for our own bugs (a foreign sender, a message that
        cannot be encoded or exceeds max_frame), never because of the peer."""
        if message.sender != self.node_id:
            raise ValueError(f"{self.node_id} cannot send a message from {message.sender!r}")
        peer = self._peers.get(message.receiver)
        if peer is None:
            if message.receiver not in self._unknown_receivers:
                self._unknown_receivers.add(message.receiver)
                self._log.warning("%s: no address for %r; dropping messages to it",
                                  self.node_id, message.receiver)
            return
        if self._stopped:
            return
        body = peer.channel.encode(message)
        if body is None:
            peer.unsendable += 1
            if self._log.isEnabledFor(logging.DEBUG):
                self._log.debug("%s: not sending %s to %s, whose spec is older: %s", self.node_id,
                                type(message).__name__, peer.node_id, peer.channel.lacks(message))
            return
        if len(body) > self.max_frame:
            raise FrameError(
                f"{type(message).__name__} encodes to {len(body)} bytes, over max_frame {self.max_frame}"
            )
        queue = peer.queue
        queue.append(body)
        peer.queued_bytes += len(body)
        while queue and (len(queue) > OUTBOUND_QUEUE or peer.queued_bytes > OUTBOUND_QUEUE_BYTES):
            peer.queued_bytes -= len(queue.popleft())
            peer.dropped += 1
        peer.wakeup.set()
        if peer.task is None or peer.task.done():
            peer.task = asyncio.get_running_loop().create_task(
                self._link(peer), name=f"raftfsm {self.node_id}->{peer.node_id}"
            )

    async def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        if self._server is not None:
            self._server.close()
        tasks = [peer.task for peer in self._peers.values() if peer.task is not None]
        tasks.extend(self._inbound)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    # ------------------------------------------------------------------ framing

    async def _read_frame(self, reader: asyncio.StreamReader, limit: int) -> bytes | None:
        """The next plain frame body, or None at a clean end of stream."""
        try:
            header = await reader.readexactly(_HEADER.size)
        except asyncio.IncompleteReadError as exc:
            if not exc.partial:
                return None
            raise _Rejected("connection closed inside a frame header") from None
        (length,) = _HEADER.unpack(header)
        if length > limit:
            raise _Rejected(f"frame length {length} exceeds the limit of {limit} bytes")
        try:
            return await reader.readexactly(length)
        except asyncio.IncompleteReadError as exc:
            raise _Rejected(
                f"connection closed after {len(exc.partial)} of the {length} bytes of a frame"
            ) from None

    async def _read_sealed(self, reader: asyncio.StreamReader, opener: auth.FrameOpener) -> bytes | None:
        """The next authenticated frame body (MAC and sequence number checked), or None at
        a clean end of stream."""
        try:
            header = await reader.readexactly(_SEALED_HEADER)
        except asyncio.IncompleteReadError as exc:
            if not exc.partial:
                return None
            raise _Rejected("connection closed inside a frame header") from None
        length, _ = auth.FRAME_HEADER.unpack_from(header)
        if length > self.max_frame:
            raise _Rejected(f"frame length {length} exceeds the limit of {self.max_frame} bytes")
        try:
            body = await reader.readexactly(length)
        except asyncio.IncompleteReadError as exc:
            raise _Rejected(
                f"connection closed after {len(exc.partial)} of the {length} bytes of a frame"
            ) from None
        try:
            opener.check(header, body)
        except auth.BadFrame as exc:
            raise _Rejected(exc.reason) from None
        return body

    def _parse_hello(self, body: bytes) -> tuple[str, bytes, str]:
        """The node id, nonce and layout digest in a hello; everything else in it must
        match this node."""
        try:
            hello = msgpack.unpackb(body, raw=False, strict_map_key=True, use_list=False)
        except (ValueError, msgpack.UnpackException) as exc:
            raise _Rejected(f"handshake is not msgpack ({type(exc).__name__}: {exc})") from None
        if type(hello) is not tuple or len(hello) < 2 or hello[0] != HELLO_MAGIC:
            raise _Rejected(f"not a raftfsm handshake: {hello!r:.60}")
        try:
            return self._check_hello(hello)
        except _Rejected as exc:
            if len(hello) >= 5 and type(hello[4]) is str:  # the id is at 4 in every version so far
                exc.claimed = hello[4]
            raise

    def _check_hello(self, hello: tuple[Any, ...]) -> tuple[str, bytes, str]:
        version = hello[1]
        if type(version) is not int or version != PROTOCOL_VERSION:
            raise _Rejected(f"protocol version {version!r:.20} (this node speaks {PROTOCOL_VERSION})")
        if len(hello) != 7:
            raise _Rejected(f"not a raftfsm handshake: {hello!r:.60}")
        _, _, schema, cluster_id, node_id, mode, nonce = hello
        if type(schema) is not str or not _DIGEST.fullmatch(schema):
            raise _Rejected(f"the wire layout digest must be 64 hex digits, got {schema!r:.40}")
        if cluster_id != self.cluster_id:
            raise _Rejected(f"wrong cluster id {cluster_id!r:.60} (this node is in {self.cluster_id!r})")
        if type(node_id) is not str:
            raise _Rejected(f"node id must be a string, got {node_id!r:.40}")
        if mode != self._auth:
            raise _Rejected(f"it authenticates with {mode!r:.20}, this node requires {self._auth!r}")
        expected = auth.NONCE_BYTES if self._auth == "secret" else 0
        if type(nonce) is not bytes or len(nonce) != expected:
            raise _Rejected(f"the nonce must be {expected} bytes, got {nonce!r:.40}")
        return node_id, nonce, schema

    def _check_certificate(self, writer: asyncio.StreamWriter, node_id: str) -> None:
        if self._server_context is None:
            return
        names = _certificate_names(writer.get_extra_info("peercert"))
        if node_id not in names:
            raise _Rejected(f"says it is {node_id!r} but its certificate names {sorted(names)}")

    # ------------------------------------------------------------------ inbound

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        if self._stopped:
            writer.transport.abort()
            return
        self._inbound.add(task)
        where = _where(writer)
        claimed: str | None = None  # the id in its hello, before it is proven
        node_id: str | None = None  # the id it authenticated as
        try:
            if self._server_context is not None:
                try:
                    await writer.start_tls(self._server_context, ssl_handshake_timeout=HANDSHAKE_TIMEOUT)
                except (ssl.SSLError, OSError, TimeoutError) as exc:
                    raise _Rejected(f"TLS handshake failed: {exc}") from None
            opener: auth.FrameOpener | None = None
            try:
                async with asyncio.timeout(HANDSHAKE_TIMEOUT):
                    body = await self._read_frame(reader, MAX_HELLO)
                    if body is None:
                        return
                    claimed, nonce, schema = self._parse_hello(body)
                    if claimed not in self._peers:
                        raise _Rejected(f"unknown node id {claimed!r:.60}")
                    self._check_certificate(writer, claimed)
                    own_nonce = auth.new_nonce() if self._secret is not None else b""
                    writer.write(self._hello(own_nonce))
                    await writer.drain()
                    if self._secret is not None:
                        opener = await self._verify_dialer(reader, writer, claimed, nonce, own_nonce, schema)
                    # authenticated: only now may it make us read (and compile) a layout
                    channel = await self._agree(reader, writer, claimed, schema, dialer=False)
            except TimeoutError:
                raise _Rejected(f"handshake not completed within {HANDSHAKE_TIMEOUT:g} s") from None
            # Authenticated (certificate, secret proof, or — insecure_no_auth — nothing to check).
            # Only now may this connection replace an older one from the same node.
            node_id = claimed
            previous = self._inbound_by_node.get(node_id)
            if previous is not None:
                previous.cancel()  # the peer re-dialled; its old connection is dead to it
            self._inbound_by_node[node_id] = task
            self._peers[node_id].back.set()
            await self._receive(reader, node_id, opener, channel)
        except _Incompatible as exc:
            self._log.log(self._incompatibility_level(claimed or "", exc.reason),
                          "%s: refused the connection from %s (%s): %s", self.node_id, claimed, where, exc.reason)
        except _Rejected as exc:
            claimed = claimed or exc.claimed
            who = f" ({node_id})" if node_id else f" (says it is {claimed!r:.60})" if claimed else ""
            self._log.warning("%s: closed connection from %s%s: %s", self.node_id, where, who, exc.reason)
        except (OSError, EOFError) as exc:
            self._log.debug("%s: connection from %s lost: %r", self.node_id, where, exc)
        except asyncio.CancelledError:
            # stop() or a newer connection from the same node. Ending normally matters:
            # Python 3.11's stream callback logs an error for a cancelled handler task.
            pass
        finally:
            self._inbound.discard(task)
            if node_id is not None and self._inbound_by_node.get(node_id) is task:
                del self._inbound_by_node[node_id]
            await _close(writer)

    async def _verify_dialer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, claimed: str,
                             nonce: bytes, own_nonce: bytes, schema: str) -> auth.FrameOpener:
        """Secret mode, listener side: the dialer proves first (so a stranger who connects
        learns nothing computed from the secret), then we prove ourselves."""
        assert self._secret is not None
        transcript = auth.transcript(PROTOCOL_VERSION, self.cluster_id, claimed, self.node_id, nonce, own_nonce,
                                     dialer_schema=schema, listener_schema=self._codec.digest)
        body = await self._read_frame(reader, MAX_HELLO)
        if body is None:
            raise _Rejected("it closed the connection before sending its proof (its log says why)")
        if not hmac.compare_digest(body, auth.proof(self._secret, auth.DIALER, transcript)):
            raise _Rejected(f"bad proof: a different cluster secret, or not {claimed!r:.60}")
        answer = auth.proof(self._secret, auth.LISTENER, transcript)
        writer.write(_HEADER.pack(len(answer)) + answer)
        await writer.drain()
        return auth.FrameOpener(auth.frame_key(self._secret, transcript))

    async def _receive(self, reader: asyncio.StreamReader, node_id: str, opener: auth.FrameOpener | None,
                       channel: Channel) -> None:
        decode = channel.decode
        while True:
            if opener is not None:
                body = await self._read_sealed(reader, opener)
            else:
                body = await self._read_frame(reader, self.max_frame)
            if body is None:
                return
            try:
                message = decode(body)
            except FrameError as exc:
                raise _Rejected(f"invalid frame: {exc}") from None
            if message.sender != node_id:
                raise _Rejected(
                    f"{type(message).__name__} claims sender {message.sender!r} on {node_id}'s connection"
                )
            if message.receiver != self.node_id:
                raise _Rejected(f"{type(message).__name__} is addressed to {message.receiver!r}")
            try:
                self._on_message(message)
            except Exception:  # the handler's bug must not cut the peer off
                self._log.exception("%s: on_message failed for %s from %s",
                                    self.node_id, type(message).__name__, node_id)

    # ------------------------------------------------------------------ outbound

    async def _link(self, peer: _Peer) -> None:
        """Keep one connection to `peer` up while there is anything to send."""
        backoff = BACKOFF_MIN
        warned = False
        while not self._stopped:
            try:
                reader, writer, sealer, channel = await self._dial(peer)
            except _Incompatible as exc:
                self._log.log(self._incompatibility_level(peer.node_id, exc.reason),
                              "%s: refusing to talk to %s at %s:%s: %s (retrying, in case it is replaced)",
                              self.node_id, peer.node_id, *peer.address, exc.reason)
                warned = True
                await self._pause(peer, self._rng.uniform(BACKOFF_MAX / 2, BACKOFF_MAX))
                continue
            except (_Rejected, OSError, TimeoutError, EOFError) as exc:
                rejected = isinstance(exc, _Rejected)
                reason = exc.reason if isinstance(exc, _Rejected) else repr(exc)
                # warn once per outage, and only once something is waiting to go there
                # (links are dialled eagerly at start, before the peers may be up) or the
                # peer answered but the handshake failed (a misconfiguration or an impostor)
                level = logging.WARNING if (peer.queue or rejected) and not warned else logging.DEBUG
                warned = warned or level == logging.WARNING
                self._log.log(level, "%s: cannot reach %s at %s:%s: %s (retrying)",
                              self.node_id, peer.node_id, *peer.address, reason)
                if await self._pause(peer, self._rng.uniform(backoff / 2, backoff)):
                    backoff = BACKOFF_MIN
                else:
                    backoff = min(backoff * 2, BACKOFF_MAX)
                continue
            if warned:
                self._log.info("%s: reached %s again", self.node_id, peer.node_id)
            self._log.debug("%s: connected to %s at %s:%s (%s)", self.node_id, peer.node_id, *peer.address, self._auth)
            warned = False
            if channel.peer_digest != peer.channel.peer_digest:
                self._use_channel(peer, channel)
            opened = time.monotonic()
            try:
                await self._pump(peer, reader, writer, sealer)
            except (_Rejected, OSError) as exc:
                self._log.debug("%s: link to %s lost: %r", self.node_id, peer.node_id, exc)
            finally:
                await _close(writer)
            # A peer that accepts and then drops us at once must not make us spin.
            backoff = BACKOFF_MIN if time.monotonic() - opened > BACKOFF_MAX else min(backoff * 2, BACKOFF_MAX)
            if await self._pause(peer, self._rng.uniform(backoff / 2, backoff)):
                backoff = BACKOFF_MIN

    async def _pause(self, peer: _Peer, seconds: float) -> bool:
        """Back off for `seconds`, or less if the peer dials us meanwhile (a restarted
        node must hear from the leader before its election timeout, not after a 2 s
        backoff). Returns True if the peer showed up."""
        peer.back.clear()
        try:
            async with asyncio.timeout(seconds):
                await peer.back.wait()
        except TimeoutError:
            return False
        return True

    async def _dial(
        self, peer: _Peer
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, auth.FrameSealer | None, Channel]:
        host, port = peer.address
        # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation that
        # races with a failed connect, and stop() would wait for ever.
        async with asyncio.timeout(CONNECT_TIMEOUT):
            reader, writer = await asyncio.open_connection(
                host, port, ssl=self._client_context,
                ssl_handshake_timeout=HANDSHAKE_TIMEOUT if self._client_context else None,
            )
        sealer: auth.FrameSealer | None = None
        try:
            try:
                async with asyncio.timeout(HANDSHAKE_TIMEOUT):
                    own_nonce = auth.new_nonce() if self._secret is not None else b""
                    writer.write(self._hello(own_nonce))
                    await writer.drain()
                    body = await self._read_frame(reader, MAX_HELLO)
                    if body is None:
                        raise _Rejected("it closed the connection during the handshake (its log says why)")
                    node_id, nonce, schema = self._parse_hello(body)
                    if node_id != peer.node_id:
                        raise _Rejected(f"expected node {peer.node_id!r} there, found {node_id!r:.60}")
                    self._check_certificate(writer, node_id)
                    if self._secret is not None:
                        sealer = await self._prove_to_listener(reader, writer, peer.node_id, own_nonce, nonce,
                                                               schema)
                    channel = await self._agree(reader, writer, peer.node_id, schema, dialer=True)
            except TimeoutError:
                raise _Rejected(f"handshake not completed within {HANDSHAKE_TIMEOUT:g} s") from None
        except BaseException:
            writer.transport.abort()
            raise
        return reader, writer, sealer, channel

    async def _prove_to_listener(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, listener: str,
                                 own_nonce: bytes, nonce: bytes, schema: str) -> auth.FrameSealer:
        """Secret mode, dialer side: send our proof, check the listener's."""
        assert self._secret is not None
        transcript = auth.transcript(PROTOCOL_VERSION, self.cluster_id, self.node_id, listener, own_nonce, nonce,
                                     dialer_schema=self._codec.digest, listener_schema=schema)
        mine = auth.proof(self._secret, auth.DIALER, transcript)
        writer.write(_HEADER.pack(len(mine)) + mine)
        await writer.drain()
        body = await self._read_frame(reader, MAX_HELLO)
        if body is None:
            raise _Rejected("it closed the connection after our proof: a different cluster secret? "
                            "(its log says why)")
        if not hmac.compare_digest(body, auth.proof(self._secret, auth.LISTENER, transcript)):
            raise _Rejected(f"bad proof from the listener: a different cluster secret, or not {listener!r}")
        return auth.FrameSealer(auth.frame_key(self._secret, transcript))

    # ------------------------------------------------------------------ layouts

    async def _agree(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, peer_id: str, schema: str,
                     *, dialer: bool) -> Channel:
        """The channel to an authenticated peer whose hello announced layout digest
        `schema`. The same digest as ours (the common case) needs nothing more. Otherwise
        the listener sends its layout, and the dialer, once it has read that, its own (so
        neither ever waits to write to a side that is itself writing); each checks the
        other's against the digest its hello announced, which the proofs (or TLS)
        authenticated, and both apply the same rule, so both refuse or neither does."""
        if schema == self._codec.digest:
            self._incompatible.pop(peer_id, None)
            return self._codec.identity
        mine = self._codec.layout_bytes
        if not dialer:
            writer.write(_HEADER.pack(len(mine)) + mine)
            await writer.drain()
        body = await self._read_frame(reader, MAX_LAYOUT)
        if body is None:
            raise _Rejected("it closed the connection before sending its wire layout (its log says why)")
        if dialer:
            writer.write(_HEADER.pack(len(mine)) + mine)
            await writer.drain()
        if hashlib.sha256(body).hexdigest() != schema:
            raise _Rejected("its wire layout does not match the digest in its hello")
        try:
            channel = self._codec.channel(schema, Layout.unpack(body))
        except LayoutError as exc:
            raise _Rejected(f"its wire layout is malformed: {exc}") from None
        except Incompatible as exc:
            raise _Incompatible(f"peer {peer_id}'s spec differs incompatibly: {exc.difference}") from None
        self._incompatible.pop(peer_id, None)
        return channel

    def _incompatibility_level(self, peer_id: str, reason: str) -> int:
        """WARNING the first time a peer is refused for this reason (on whichever
        connection sees it first), DEBUG on every retry after that."""
        if self._incompatible.get(peer_id) == reason:
            return logging.DEBUG
        self._incompatible[peer_id] = reason
        return logging.WARNING

    def _use_channel(self, peer: _Peer, channel: Channel) -> None:
        """The peer came back with another layout: frames queued in the old one may not
        fit it, so they go (Raft resends what still matters; re-encoding up to
        OUTBOUND_QUEUE_BYTES here would stall the event loop)."""
        if peer.queue:
            peer.dropped += len(peer.queue)
            self._log.debug("%s: dropping %d frame(s) queued for %s in its previous layout", self.node_id,
                            len(peer.queue), peer.node_id)
            peer.queue.clear()
            peer.queued_bytes = 0
        peer.channel = channel
        self._log.info("%s: %s has %s", self.node_id, peer.node_id, channel.describe())

    async def _pump(self, peer: _Peer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                    sealer: auth.FrameSealer | None) -> None:
        """Write whatever is queued, many frames per drain, until the link breaks."""
        watcher = asyncio.get_running_loop().create_task(self._watch(peer, reader))
        pack = _HEADER.pack
        try:
            while not watcher.done():
                peer.wakeup.clear()
                if peer.queue:
                    # a bounded batch per drain, so that the queue's drop-oldest limit also
                    # bounds what a slow peer makes us buffer
                    queue = peer.queue
                    budget = WRITE_BATCH_BYTES
                    frames: list[bytes] = []
                    while queue and budget > 0:
                        body = queue.popleft()
                        peer.queued_bytes -= len(body)
                        frame = sealer.seal(body) if sealer is not None else pack(len(body)) + body
                        frames.append(frame)
                        budget -= len(frame)
                    writer.writelines(frames)
                    await writer.drain()
                else:
                    await peer.wakeup.wait()
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher

    async def _watch(self, peer: _Peer, reader: asyncio.StreamReader) -> None:
        """Notice at once when the peer closes our send-only link."""
        try:
            data = await reader.read(1)
        except (OSError, EOFError):
            data = b""
        if data:
            self._log.warning("%s: %s wrote on a send-only link; reconnecting", self.node_id, peer.node_id)
        peer.wakeup.set()

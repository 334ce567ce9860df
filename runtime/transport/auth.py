"""Peer authentication with a shared cluster secret: the handshake proofs and the per-frame
MACs of the TCP transport (see runtime/transport/tcp.py for where they are used, and
docs/security.md for the protocol and what it protects against).

Everything here is HMAC-SHA256 from the standard library. The secret itself never
travels: a node proves it knows the secret by a MAC over a transcript that binds the
cluster id, both node ids, both sides' fresh nonces and its role (dialer or listener),
and the frames that follow carry a MAC under a key derived from the same transcript,
over a per-connection sequence number, the length and the body.
"""

from __future__ import annotations

import hmac
import os
import secrets
import stat
import struct
from pathlib import Path
from typing import Final

import msgpack

from runtime.codec import SCHEMA_DIGEST
from runtime.errors import SecretError as SecretError  # moved to runtime.errors; re-exported

__all__ = [
    "MAC_BYTES",
    "MIN_SECRET_BYTES",
    "NONCE_BYTES",
    "PROOF_BYTES",
    "BadFrame",
    "FrameOpener",
    "FrameSealer",
    "SecretError",
    "check_secret",
    "frame_key",
    "load_secret",
    "new_nonce",
    "proof",
    "transcript",
    "write_secret",
]

NONCE_BYTES: Final = 32
PROOF_BYTES: Final = 32
"""Handshake proofs are full HMAC-SHA256 values."""
MAC_BYTES: Final = 16
"""Frame MACs are HMAC-SHA256 truncated to 128 bits."""
MIN_SECRET_BYTES: Final = 16
MAX_SECRET_FILE: Final = 4096
SECRET_HEX_BYTES: Final = 32
"""`write_secret` draws this many random bytes (written as 64 hex digits)."""

DIALER: Final = b"raftfsm peer auth v2: dialer proof\x00"
LISTENER: Final = b"raftfsm peer auth v2: listener proof\x00"
FRAMES: Final = b"raftfsm peer auth v2: frame key\x00"

FRAME_HEADER: Final = struct.Struct(">IQ")
"""An authenticated frame: body length, sequence number, then MAC_BYTES of MAC, then the
body. The MAC covers the first 12 bytes and the body."""


def check_secret(secret: bytes) -> bytes:
    if not isinstance(secret, bytes):
        raise SecretError(f"the cluster secret must be bytes, not {type(secret).__name__}")
    if len(secret) < MIN_SECRET_BYTES:
        raise SecretError(f"the cluster secret has {len(secret)} bytes; at least {MIN_SECRET_BYTES} are needed "
                          "(raftfsm secret --out FILE writes a random one)")
    return secret


def load_secret(path: str | os.PathLike[str]) -> bytes:
    """The secret in `path`: the file's bytes without surrounding whitespace. Refuses a file
    that group or others may read or write (like ssh with a private key)."""
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):  # before open(): a FIFO would block it
            raise SecretError(f"secret file {os.fspath(path)} is not a regular file")
        with open(path, "rb") as file:
            mode = os.fstat(file.fileno()).st_mode
            if mode & 0o077:
                raise SecretError(
                    f"secret file {os.fspath(path)} is accessible by group/others (mode {stat.S_IMODE(mode):04o}); "
                    f"run: chmod 600 {os.fspath(path)}"
                )
            data = file.read(MAX_SECRET_FILE + 1)
    except OSError as exc:
        raise SecretError(f"cannot read secret file {os.fspath(path)}: {exc.strerror or exc}") from None
    if len(data) > MAX_SECRET_FILE:
        raise SecretError(f"secret file {os.fspath(path)} is over {MAX_SECRET_FILE} bytes: not a secret file?")
    try:
        return check_secret(data.strip())
    except SecretError as exc:
        raise SecretError(f"secret file {os.fspath(path)}: {exc}") from None


def write_secret(path: str | os.PathLike[str]) -> Path:
    """Create `path` (mode 0600, never overwriting) holding a fresh random secret."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(secrets.token_hex(SECRET_HEX_BYTES) + "\n")
    return target


def new_nonce() -> bytes:
    return secrets.token_bytes(NONCE_BYTES)


def transcript(version: int, cluster_id: str, dialer: str, listener: str, dialer_nonce: bytes,
               listener_nonce: bytes, *, dialer_schema: str = SCHEMA_DIGEST,
               listener_schema: str = SCHEMA_DIGEST) -> bytes:
    """What both proofs and the frame key are bound to: the protocol version, the
    wire-layout digest each side announced in its hello (so that the layouts exchanged
    after the proofs, which must hash to them, are authenticated too), the cluster, who
    dials whom, and both fresh nonces (msgpack: unambiguous, no concatenation games
    between adjacent fields)."""
    packed: bytes = msgpack.packb(
        [version, dialer_schema, listener_schema, cluster_id, dialer, listener, dialer_nonce, listener_nonce],
        use_bin_type=True,
    )
    return packed


def proof(secret: bytes, role: bytes, transcript: bytes) -> bytes:
    """`role` is DIALER or LISTENER: a proof made by one side is never valid for the other."""
    return hmac.digest(secret, role + transcript, "sha256")


def frame_key(secret: bytes, transcript: bytes) -> bytes:
    """The MAC key of the frames on one connection (which carries frames one way only:
    from the dialer to the listener named in the transcript)."""
    return hmac.digest(secret, FRAMES + transcript, "sha256")


class FrameSealer:
    """The sending end of one connection: frames are numbered from 0."""

    def __init__(self, key: bytes) -> None:
        self._base = hmac.new(key, digestmod="sha256")
        self._sequence = 0

    def seal(self, body: bytes) -> bytes:
        header = FRAME_HEADER.pack(len(body), self._sequence)
        self._sequence += 1
        mac = self._base.copy()
        mac.update(header)
        mac.update(body)
        return header + mac.digest()[:MAC_BYTES] + body


class BadFrame(Exception):
    """A frame failed authentication; the reason says how."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class FrameOpener:
    """The receiving end: a frame is accepted only with a valid MAC under this
    connection's key *and* the next sequence number."""

    def __init__(self, key: bytes) -> None:
        self._base = hmac.new(key, digestmod="sha256")
        self.sequence = 0

    def check(self, header: bytes, body: bytes) -> None:
        """`header` is FRAME_HEADER + MAC as read; raises BadFrame."""
        mac = self._base.copy()
        mac.update(header[: FRAME_HEADER.size])
        mac.update(body)
        if not hmac.compare_digest(mac.digest()[:MAC_BYTES], header[FRAME_HEADER.size:]):
            raise BadFrame(f"bad MAC on frame {self.sequence} (tampered, injected, or from another connection)")
        _, sequence = FRAME_HEADER.unpack_from(header)
        if sequence != self.sequence:
            raise BadFrame(f"replayed or reordered frame: sequence {sequence}, expected {self.sequence}")
        self.sequence += 1

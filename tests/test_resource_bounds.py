"""Two time bounds of docs/security.md that no other test exercised: the Raft listener's
handshake timeout (a stranger that connects and stalls is closed, with one line) and the
HTTP body timeout (a body that stops arriving gets 408, not applied). Both timeouts are
shortened here (the defaults are 5 s and 10 s) by patching the module constants the code
reads at run time.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any, ClassVar

import pytest

from runtime.http import KVHttpApi
from runtime.transport import tcp
from tests.test_tcp_transport import Node, free_ports, hello, run, started, still_serves, until

SHORT = 0.5


@pytest.fixture
def short_handshake(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(tcp, "HANDSHAKE_TIMEOUT", SHORT)
    yield


@pytest.mark.parametrize("sends", [b"", hello("n2")[:7], hello("n2")],
                         ids=["nothing", "half a hello", "a hello but no proof"])
def test_a_stranger_that_stalls_the_handshake_is_closed_at_the_timeout(short_handshake: None, sends: bytes) -> None:
    async def main() -> None:
        ports = dict(zip(["n1", "n2"], free_ports(2), strict=True))
        n1, n2 = Node("n1", ports), Node("n2", ports)
        async with started(n1, n2):
            reader, writer = await asyncio.open_connection("127.0.0.1", n1.port)
            client = f"127.0.0.1:{writer.get_extra_info('sockname')[1]}"
            opened = time.monotonic()
            writer.write(sends)  # and then nothing more, without closing
            await writer.drain()
            async with asyncio.timeout(SHORT + 5):
                while await reader.read(4096):  # the listener's hello, if it got ours; then EOF
                    pass
            took = time.monotonic() - opened
            writer.close()
            await until(lambda: bool(n1.log.warnings(client)), what="the log line")
            line, = n1.log.warnings(client)
            assert f"handshake not completed within {SHORT:g} s" in line, line
            assert SHORT - 0.1 <= took <= SHORT + 3, took
            await still_serves(n2, n1, msg_id=7)

    run(main())


class IdleServer:
    """What KVHttpApi needs of a RaftServer when no command reaches it."""

    node_id = "n1"
    peers: ClassVar[dict[str, tuple[str, int]]] = {"n1": ("127.0.0.1", 1)}

    async def apply(self, command: object, timeout: float = 5.0) -> Any:
        raise AssertionError(f"{command!r} reached the server")


def test_a_body_that_stops_arriving_gets_408_not_applied(monkeypatch: pytest.MonkeyPatch) -> None:
    import runtime.http

    monkeypatch.setattr(runtime.http, "BODY_TIMEOUT", SHORT)

    async def main() -> tuple[bytes, float]:
        api = KVHttpApi(IdleServer())  # type: ignore[arg-type]
        await api.start("127.0.0.1", 0)
        try:
            assert api.address is not None
            reader, writer = await asyncio.open_connection("127.0.0.1", api.address[1])
            started = time.monotonic()
            writer.write(b"PUT /kv/k HTTP/1.1\r\nHost: t\r\nContent-Type: text/plain\r\nContent-Length: 100\r\n\r\n"
                         b"only this")
            async with asyncio.timeout(SHORT + 5):
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
                answer = head + await reader.readexactly(length)
            writer.close()
            return answer, time.monotonic() - started
        finally:
            await api.stop()

    answer, took = asyncio.run(main())
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert b"X-Raft-Outcome: not-applied" in answer and b"did not arrive within 0.5s" in answer, answer
    assert SHORT - 0.1 <= took <= SHORT + 3, took

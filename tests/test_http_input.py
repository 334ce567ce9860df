"""Hostile input to the HTTP API of real `raftfsm node` processes: every malformed request
gets a 4xx with a one-line JSON reason and `X-Raft-Outcome: not-applied`, from the leader
and from a follower alike, and no node logs a traceback. A bug in a handler becomes a 500
with a one-line JSON error (tested on an in-process API whose server fails on purpose).
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import time
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest

from generated.raft_fsm import Role
from runtime.cluster import LocalCluster, http_json
from runtime.http import MAX_BODY, KVHttpApi
from runtime.kv import KVStateMachine

JSON = {"Content-Type": "application/json"}
TEXT = {"Content-Type": "text/plain"}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    with LocalCluster(tmp_path_factory.mktemp("input"), 3, fsync=False) as cluster:
        cluster.wait_until_serving(timeout=15)
        cluster.wait_for_leader(timeout=15, agreed=True)
        yield cluster
        logs = {node_id: cluster.log_path(node_id).read_text(errors="replace") for node_id in cluster.ids}
    for node_id, text in logs.items():
        assert "Traceback" not in text, f"{node_id} logged a traceback:\n{text}"


def both(cluster: LocalCluster) -> list[str]:
    """The leader and one follower (which validates before forwarding)."""
    leader = cluster.wait_for_leader(timeout=10, agreed=True)
    return [leader, next(n for n in cluster.ids if n != leader)]


def call(cluster: LocalCluster, node_id: str, method: str, target: str, body: bytes | None,
         headers: dict[str, str]) -> tuple[int, dict[str, Any], dict[str, str]]:
    deadline = time.monotonic() + 10
    while True:
        result = http_json(method, f"{cluster.http_url(node_id)}{target}", body, timeout=6, headers=headers)
        if result[0] != 503 or time.monotonic() > deadline:  # 503: mid-election, nothing applied
            return result
        time.sleep(0.05)


def deep(depth: int) -> bytes:
    return b'{"value": ' + b"[" * depth + b"]" * depth + b"}"


BAD = {
    # name: (method, target, body, headers, status, words in the reason)
    "lone surrogate in value": ("PUT", "/kv/s", b'{"value": "a\\ud800b"}', JSON, 400, "not valid Unicode"),
    "lone low surrogate in value": ("PUT", "/kv/s", b'{"value": "\\udfff"}', JSON, 400, "not valid Unicode"),
    "lone surrogate in cas value": ("POST", "/kv/s/cas", b'{"expected": null, "value": "\\ud800"}', JSON, 400,
                                    "not valid Unicode"),
    "lone surrogate in cas expected": ("POST", "/kv/s/cas", b'{"expected": "\\ud800", "value": "v"}', JSON, 400,
                                       '"expected" is not valid Unicode'),
    "deeply nested JSON": ("PUT", "/kv/d", deep(100_000), JSON, 400, "nested too deeply"),
    "deeply nested cas": ("POST", "/kv/d/cas", b'{"expected": ' + b"[" * 50_000, JSON, 400, "not valid JSON"),
    "JSON array body": ("PUT", "/kv/a", b'["value", "x"]', JSON, 400, "JSON object"),
    "JSON string body": ("POST", "/kv/a/cas", b'"x"', JSON, 400, "JSON object"),
    "JSON null body": ("PUT", "/kv/a", b"null", JSON, 400, "JSON object"),
    "huge integer": ("PUT", "/kv/n", b'{"value": ' + b"9" * 100_000 + b"}", JSON, 400, "not valid JSON"),
    "huge float": ("PUT", "/kv/n", b'{"value": 1e999999}', JSON, 400, "string"),
    "number as value": ("PUT", "/kv/n", b'{"value": 3}', JSON, 400, "string"),
    "invalid UTF-8 in JSON": ("PUT", "/kv/u", b'{"value": "\xff"}', JSON, 400, "not valid utf-8"),
    "invalid UTF-8 in text": ("PUT", "/kv/u", b"ab\xc3\x28", TEXT, 400, "not valid utf-8"),
    "truncated UTF-8 in text": ("PUT", "/kv/u", b"ab\xe2\x82", TEXT, 400, "not valid utf-8"),
    "invalid UTF-8 in a key": ("GET", "/kv/%ff", None, {}, 400, "not UTF-8"),
    "encoded surrogate in a key": ("DELETE", "/kv/%ed%a0%80", None, {}, 400, "not UTF-8"),
    "overlong encoding in a key": ("PUT", "/kv/%c0%af", b"v", TEXT, 400, "not UTF-8"),
    "unknown charset": ("PUT", "/kv/c", b"v", {"Content-Type": "text/plain; charset=no-such"}, 415, "charset"),
    "a codec that is not a text encoding": ("PUT", "/kv/c", b"v", {"Content-Type": "text/plain; charset=rot13"},
                                            415, "charset"),
    "a quadratic codec": ("PUT", "/kv/c", b"v" * 1000, {"Content-Type": "text/plain; charset=punycode"}, 415,
                          "charset"),
    "a codec that makes surrogates": ("PUT", "/kv/c", b"\\ud800", {"Content-Type": "text/plain; "
                                                                   "charset=unicode_escape"}, 415, "charset"),
    "cas without value": ("POST", "/kv/c/cas", b'{"expected": null}', JSON, 400, '"value"'),
    "cas without expected": ("POST", "/kv/c/cas", b'{"value": "v"}', JSON, 400, '"expected"'),
    "body over 1 MiB": ("PUT", "/kv/big", b"x" * (MAX_BODY + 1), TEXT, 413, "1048576"),
    "unknown path": ("GET", "/nothing/here", None, {}, 404, "Not Found"),
    "wrong method": ("PATCH", "/kv/k", b"v", TEXT, 405, "Not Allowed"),
}


@pytest.mark.parametrize("case", BAD)
def test_bad_input_gets_a_4xx_with_a_reason_from_leader_and_follower(cluster: LocalCluster, case: str) -> None:
    method, target, body, headers, status, words = BAD[case]
    for node_id in both(cluster):
        code, answer, got = call(cluster, node_id, method, target, body, headers)
        assert code == status, (node_id, answer)
        assert words in answer.get("error", ""), (node_id, answer)
        assert "\n" not in answer["error"]
        assert got.get("X-Raft-Outcome") == "not-applied", (node_id, got)
    if method != "GET" and status < 500:  # nothing was written under that key
        key = target.split("/")[2]
        if key.isascii() and "%" not in key:
            assert call(cluster, both(cluster)[0], "GET", f"/kv/{key}", None, {})[0] == 404


def test_good_input_still_works(cluster: LocalCluster) -> None:
    for node_id in both(cluster):
        code, answer, headers = call(cluster, node_id, "PUT", "/kv/fine", '{"value": "ünï ☃ \\ud83d\\ude00"}'.encode(),
                                     JSON)
        assert (code, answer) == (200, {"key": "fine", "value": "ünï ☃ 😀"})
        assert headers.get("X-Raft-Outcome") == "applied"
        code, answer, _ = call(cluster, node_id, "PUT", "/kv/latin", "caf\xe9".encode("latin-1"),
                               {"Content-Type": "text/plain; charset=ISO-8859-1"})
        assert (code, answer) == (200, {"key": "latin", "value": "café"})


def raw_exchange(address: str, data: bytes) -> bytes:
    host, port = address.split(":")
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(data)  # no half-close: aiohttp drops a connection at EOF, answer and all
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


@pytest.mark.parametrize("request_bytes", [
    b"GET /kv/\xff\xfe HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /kv/a HTTP/1.1\r\nHost: x\r\nX-Bad: \x00\r\n\r\n",
    b"NOT HTTP AT ALL\r\n\r\n",
    b"GET /kv/" + b"a" * 20_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
    b"PUT /kv/a HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
    b"PUT /kv/a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
], ids=["raw non-UTF-8 path", "NUL in a header", "not HTTP", "path too long", "negative length", "bad chunk"])
def test_requests_that_are_not_http_get_400_and_no_traceback(cluster: LocalCluster, request_bytes: bytes) -> None:
    for node_id in both(cluster):
        answer = raw_exchange(cluster.http_addresses[node_id], request_bytes)
        assert answer.split(b" ", 2)[1] in (b"400", b"414", b"431"), answer[:200]
        assert b"Traceback" not in answer


# -- a bug in a handler ------------------------------------------------------------------------------------------
class BrokenServer:
    def __init__(self) -> None:
        self.node_id = "n1"
        self.peers = {"n1": ("127.0.0.1", 1)}
        self.role = Role.leader
        self.core = SimpleNamespace(term=1)
        self.state_machine = KVStateMachine()

    def status(self) -> dict[str, object]:
        raise KeyError("a bug\nspanning lines")

    async def apply(self, command: object, timeout: float = 5.0, session: object = None) -> object:
        raise RuntimeError("another bug")


def test_an_unexpected_exception_is_a_one_line_500(caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> list[tuple[int, dict[str, Any], dict[str, str]]]:
        api = KVHttpApi(BrokenServer())  # type: ignore[arg-type]
        await api.start("127.0.0.1", 0)
        try:
            assert api.address is not None
            base = f"http://127.0.0.1:{api.address[1]}"
            return [await asyncio.to_thread(http_json, method, base + path, body, headers=TEXT)
                    for method, path, body in (("GET", "/status", None), ("PUT", "/kv/k", b"v"))]
        finally:
            await api.stop()

    with caplog.at_level(logging.INFO):
        results = asyncio.run(main())
    for code, answer, headers in results:
        assert code == 500 and headers["X-Raft-Outcome"] == "unknown"
        assert answer == {"error": answer["error"], "node": "n1"} and "internal error" in answer["error"]
        assert "\n" not in json.dumps(answer)
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 2 and all(r.exc_info is None and "\n" not in r.getMessage() for r in errors), errors
    assert "KeyError" in errors[0].getMessage() and "RuntimeError: another bug" in errors[1].getMessage()

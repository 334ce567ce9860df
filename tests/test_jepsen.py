"""Jepsen-style tests of the real thing (runtime/jepsen): three `raftfsm node` processes,
concurrent HTTP clients doing get/put/cas/delete through random nodes, a nemesis that
kills (-9), pauses (SIGSTOP) and — in network namespaces, as root — partitions nodes, and
the linearizability checker on the recorded history.

`make test` runs one short run; `pytest --long` (`make jepsen`) runs longer ones per fault
and with all faults under several seeds. Seeds are printed; JEPSEN_SEED replays one.
Without root (or namespace support) the runs fall back to 127.0.0.1 without partitions
and say so. Every run's history, client details and report stay in its tmp directory.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from runtime.jepsen import harness
from runtime.jepsen.harness import Config, Report, run
from runtime.jepsen.nemesis import FAULTS
from runtime.jepsen.netns import NamespaceNetwork, NetworkError, cleanup_stale, unavailable_reason
from runtime.jepsen.workload import KeySpace, request
from runtime.kv import CompareAndSet, Delete, Get, KVResult, Put
from runtime.linearizability import History, Outcome, Verdict

ROOT = Path(__file__).resolve().parent.parent
SEED = int(os.environ.get("JEPSEN_SEED", "20261129"))
LONG_SEEDS = [SEED, SEED + 1, SEED + 2]
LONG_TIME = float(os.environ.get("JEPSEN_TIME", "90"))


class NotLinearizable(AssertionError):
    """The checker found a violation (other failures of a run are plain AssertionErrors)."""


def check_report(report: Report) -> None:
    """Fail on a violation (NotLinearizable), an exhausted checker or any other problem."""
    print(report.format())
    seed, where = report.config.seed, f"see {report.directory / 'report.txt'} and {report.history_path}"
    assert report.result.verdict is not Verdict.UNKNOWN, f"seed {seed}: the checker ran out of budget; {where}"
    assert not report.problems, f"seed {seed}: {'; '.join(report.problems)}; {where}"
    if report.result.verdict is Verdict.VIOLATION:
        raise NotLinearizable(f"seed {seed}: not linearizable; {where}\n{report.format()}")
    assert report.ok


# -- the runs --------------------------------------------------------------------------------------


SHORT = Config(
    seed=SEED, duration=25.0, clients=8,
    # kills twice per round, aimed at the leader more often than not: the faults that find
    # the most; 3-4 rounds in 25 s
    faults=("kill", "pause", "kill", "partition"), leader_bias=0.8,
    quiet=(0.3, 1.0), pause_time=(0.5, 2.0), partition_time=(1.0, 3.0),
)


def test_short_run_with_kills_pauses_and_partitions_is_linearizable(tmp_path: Path) -> None:
    began = time.monotonic()
    report = run(SHORT, tmp_path / "run")
    print(f"short run: {time.monotonic() - began:.1f} s in all")
    assert len(report.operations) > 1000, f"seed {SEED}: only {len(report.operations)} operations"
    check_report(report)


def _long_cases() -> Iterator[object]:
    for faults in (("kill",), ("pause",), ("partition",)):
        yield pytest.param(faults, SEED, 60.0, id=f"{'+'.join(faults)}-{SEED}")
    for seed in LONG_SEEDS:
        yield pytest.param(FAULTS, seed, LONG_TIME, id=f"all-{seed}")


@pytest.mark.long
@pytest.mark.parametrize(("faults", "seed", "duration"), list(_long_cases()))
def test_long_run_is_linearizable(tmp_path: Path, long_run: bool, faults: tuple[str, ...], seed: int,
                                  duration: float) -> None:
    if not long_run:
        pytest.skip("a long run: pytest --long (make jepsen)")
    if faults == ("partition",) and unavailable_reason() is not None:
        pytest.skip(f"partitions need network namespaces: {unavailable_reason()}")
    report = run(Config(seed=seed, duration=duration, faults=faults, clients=8, ops_per_key=200), tmp_path / "run")
    check_report(report)


# -- the clients: HTTP answers to outcomes ----------------------------------------------------------


class _Scripted(BaseHTTPRequestHandler):
    """Answers by path: /kv/<status>-<what>; `hang` never answers, `drop` closes."""

    def _answer(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        key = self.path.split("/")[2]
        status, _, what = key.partition("-")
        if what == "drop":
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        body: object = {"error": "scripted"}
        if what == "value":
            body = {"key": key, "value": "v"}
        elif what == "cas":
            body = {"key": key, "ok": False, "value": "w"}
        elif what == "wrongkey":
            body = {"key": "other", "value": "v"}
        raw = b"not json" if what == "garbage" else json.dumps(body).encode()
        self.send_response(int(status))
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    do_GET = do_PUT = do_DELETE = do_POST = _answer

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def scripted_server() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Scripted)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_http_answers_become_the_outcomes_the_checker_expects(scripted_server: str) -> None:
    history = History()
    cases = [
        (Get("200-value"), Outcome.OK, KVResult(True, "v")),
        (Put("200-value", "v"), Outcome.OK, KVResult(True, "v")),
        (Delete("200-value"), Outcome.OK, KVResult(True, "v")),        # the removed value
        (CompareAndSet("200-cas", "x", "y"), Outcome.OK, KVResult(False, "w")),
        (Get("404-missing"), Outcome.OK, KVResult(False, None)),
        (Delete("404-missing"), Outcome.OK, KVResult(False, None)),
        (Put("503-busy", "v"), Outcome.FAIL, None),                      # docs/kv.md: nothing applied
        (Delete("400-bad"), Outcome.FAIL, None),
        (Put("504-slow", "v"), Outcome.UNKNOWN, None),
        (Delete("502-broken", ), Outcome.UNKNOWN, None),
        (Put("500-oops", "v"), Outcome.UNKNOWN, None),
        (Get("200-garbage"), Outcome.UNKNOWN, None),                     # a 200 without a JSON body
        (Put("200-wrongkey", "v"), Outcome.UNKNOWN, None),
        (Put("200-drop", "v"), Outcome.UNKNOWN, None),                   # sent, then the connection closed
    ]
    for command, outcome, result in cases:
        operation, detail = request(history, "c1", "n1", scripted_server, command, timeout=5.0)
        assert (operation.outcome, operation.result) == (outcome, result), (command, detail)
    # nothing listens on a port we just closed: the request was never sent
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = f"127.0.0.1:{probe.getsockname()[1]}"
    operation, detail = request(history, "c1", "n1", closed, Put("k", "v"), timeout=2.0)
    assert operation.outcome is Outcome.FAIL and "nothing sent" in detail.note


def test_keys_are_retired_after_their_budget_of_operations() -> None:
    import random

    keys = KeySpace(active=2, ops_per_key=3)
    rng = random.Random(SEED)
    taken = [keys.take(rng) for _ in range(30)]
    counts = {key: taken.count(key) for key in set(taken)}
    assert max(counts.values()) <= 3
    assert sorted(keys.keys()) == sorted(counts)


def test_without_namespaces_the_run_falls_back_to_loopback_and_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(harness, "unavailable_reason", lambda: "not running as root")
    said: list[str] = []
    assert harness._open_network(Config(seed=SEED), said.append) == (None, "not running as root")
    with pytest.raises(NetworkError, match="not running as root"):
        harness._open_network(Config(seed=SEED, network="netns"), said.append)
    assert harness._open_network(Config(seed=SEED, network="loopback"), said.append) == (None, "asked for loopback")


# -- the network namespaces ------------------------------------------------------------------------

NEEDS_NETNS = pytest.mark.skipif(unavailable_reason() is not None,
                                 reason=f"network namespaces: {unavailable_reason()}")

_SERVE = """
import socket, sys
server = socket.create_server((sys.argv[1], 9000))
print("ready", flush=True)
while True:
    connection, _ = server.accept()
    connection.sendall(b"hi")
    connection.close()
"""

_PROBE = """
import socket, sys
try:
    with socket.create_connection((sys.argv[1], 9000), timeout=1.0) as connection:
        print(connection.recv(2).decode())
except OSError as exc:
    print(type(exc).__name__)
"""


def _probe(network: NamespaceNetwork, source: str | None, target: str) -> str:
    prefix = [] if source is None else ["ip", "netns", "exec", network.namespaces[source]]
    done = subprocess.run([*prefix, sys.executable, "-c", _PROBE, network.addresses[target]],
                          capture_output=True, text=True, timeout=10)
    return done.stdout.strip()


@NEEDS_NETNS
def test_namespaces_partition_silently_heal_and_are_removed() -> None:
    cleanup_stale()
    with NamespaceNetwork(3) as network:
        servers = [subprocess.Popen(["ip", "netns", "exec", network.namespaces[nid], sys.executable, "-c", _SERVE,
                                     network.addresses[nid]], stdout=subprocess.PIPE, text=True)
                   for nid in network.ids]
        try:
            for server in servers:
                assert server.stdout is not None and server.stdout.readline().strip() == "ready"
            assert _probe(network, "n1", "n2") == "hi"
            assert _probe(network, None, "n1") == "hi", "the root namespace reaches every node"
            network.partition([["n1"], ["n2", "n3"]])
            # dropped, not refused: the connection attempt times out, as on a real network
            assert _probe(network, "n1", "n2") == "TimeoutError"
            assert _probe(network, "n3", "n1") == "TimeoutError"
            assert _probe(network, "n2", "n3") == "hi"
            assert _probe(network, None, "n1") == "hi", "clients reach the minority side"
            network.heal()
            assert _probe(network, "n1", "n2") == "hi"
            assert _probe(network, "n3", "n1") == "hi"
        finally:
            for server in servers:
                server.kill()
                server.wait()
    assert network.leftovers() == []


_CRASHING_CREATOR = """
import os, sys
sys.path.insert(0, sys.argv[1])
from runtime.jepsen.netns import NamespaceNetwork
network = NamespaceNetwork(2).create()
print(network.tag, flush=True)
os.kill(os.getpid(), 9)
"""


@NEEDS_NETNS
def test_what_a_killed_run_left_behind_is_cleaned_up() -> None:
    done = subprocess.run([sys.executable, "-c", _CRASHING_CREATOR, str(ROOT)], capture_output=True, text=True,
                          timeout=30)
    tag = done.stdout.strip()
    assert done.returncode == -9 and tag, done.stderr
    removed = cleanup_stale()
    assert any(tag in name for name in removed), removed
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, timeout=10).stdout
    links = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True, timeout=10).stdout
    assert tag not in listed and tag not in links

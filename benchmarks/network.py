"""raftfsm against PySyncObj on one machine: 3 node processes on loopback, 100-byte
commands submitted by a load generator inside the leader process, with a fixed number
of requests in flight. Then failover: kill -9 of the leader until a new leader commits.

    python benchmarks/network.py [--duration S] [--inflight 64 1000] [--failovers K]

PySyncObj is measured only when it is installed (`pip install pysyncobj==0.3.17`); it
runs with its defaults (no fsync, its 100 ms batch timer). raftfsm runs with fsync on
(SQLite synchronous=FULL) and off; its peers authenticate with a random cluster secret
(every frame MACed), as `raftfsm cluster` runs them.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.common import table, write_json  # noqa: E402

COMMAND = b"x" * 100
IDS = ("n1", "n2", "n3")


def percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))] if ordered else float("nan")


def summarize(latencies: list[float], elapsed: float) -> dict[str, float]:
    return {
        "ops_per_s": len(latencies) / elapsed,
        "p50_ms": percentile(latencies, 0.50) * 1000,
        "p99_ms": percentile(latencies, 0.99) * 1000,
    }


# -- node processes -------------------------------------------------------------------------
class CounterMachine:
    """The benchmark's state machine: commands are opaque bytes, applying counts them."""

    def __init__(self) -> None:
        self.count = 0

    def encode(self, command: bytes) -> bytes:
        return command

    def decode(self, data: bytes) -> bytes:
        return data

    def apply(self, command: bytes) -> int:
        self.count += 1
        return self.count

    def snapshot(self) -> bytes:
        return str(self.count).encode()

    def restore(self, data: bytes) -> None:
        self.count = int(data or b"0")


def serve_raftfsm(args: argparse.Namespace) -> None:
    from runtime.server import RaftServer
    from runtime.storage.sqlite import SqliteStorage
    from runtime.transport.auth import load_secret

    ports = [int(p) for p in args.ports.split(",")]
    peers = {node_id: ("127.0.0.1", port) for node_id, port in zip(IDS, ports, strict=True)}
    storage = SqliteStorage(Path(args.data) / args.id, node_id=args.id, cluster_id="bench", fsync=args.fsync)

    async def main() -> None:
        server: RaftServer[bytes, int] = RaftServer(args.id, peers, CounterMachine(), storage, cluster_id="bench",
                                                    secret=load_secret(Path(args.data) / "secret"))
        await server.start()
        out = Path(args.out)
        first_term: int | None = None
        while True:
            await asyncio.sleep(0.002)
            if not server.is_leader:
                continue
            if first_term is None and not (out / "killed").exists():
                first_term = server.core.term
                await asyncio.sleep(0.5)  # let followers settle
                result = await load(server, args.inflight, args.duration)
                (out / "result.json").write_text(json.dumps({**result, "pid": os.getpid(), "id": args.id}))
            elif (out / "killed").exists():
                try:
                    await server.apply(COMMAND, timeout=2)
                except Exception:
                    continue
                (out / f"failover-{args.id}").write_text(repr(time.time()))
                return

    async def load(server: Any, inflight: int, duration: float) -> dict[str, float]:
        latencies: list[float] = []
        deadline = time.perf_counter() + duration

        async def worker() -> None:
            while time.perf_counter() < deadline:
                started = time.perf_counter()
                await server.apply(COMMAND, timeout=30)
                latencies.append(time.perf_counter() - started)

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(inflight)))
        return summarize(latencies, time.perf_counter() - started)

    asyncio.run(main())
    while True:
        time.sleep(1)


def serve_pysyncobj(args: argparse.Namespace) -> None:
    from pysyncobj import SyncObj, replicated  # type: ignore[import-not-found, unused-ignore]

    ports = [int(p) for p in args.ports.split(",")]
    addresses = [f"127.0.0.1:{p}" for p in ports]
    me = addresses[IDS.index(args.id)]

    class Counter(SyncObj):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__(me, [a for a in addresses if a != me])
            self.count = 0

        @replicated  # type: ignore[misc]
        def add(self, command: bytes) -> int:
            self.count += 1
            return self.count

    node = Counter()
    out = Path(args.out)
    first_done = False
    while True:
        time.sleep(0.002)
        if not node._isLeader():
            continue
        if not first_done and not (out / "killed").exists():
            first_done = True
            time.sleep(0.5)
            result = pysyncobj_load(node, args.inflight, args.duration)
            (out / "result.json").write_text(json.dumps({**result, "pid": os.getpid(), "id": args.id}))
        elif (out / "killed").exists() and pysyncobj_probe(node):
            (out / f"failover-{args.id}").write_text(repr(time.time()))
            while True:
                time.sleep(1)


def pysyncobj_probe(node: Any) -> bool:
    """One write through PySyncObj; True if it committed within 2 s."""
    done = threading.Event()
    ok: list[bool] = []

    def callback(result: object, error: object) -> None:
        ok.append(error == 0)
        done.set()

    node.add(COMMAND, callback=callback)
    done.wait(2)
    return bool(ok and ok[0])


def pysyncobj_load(node: Any, inflight: int, duration: float) -> dict[str, float]:
    latencies: list[float] = []
    slots = threading.Semaphore(inflight)
    deadline = time.perf_counter() + duration
    lock = threading.Lock()

    def submit() -> None:
        started = time.perf_counter()

        def callback(result: object, error: object) -> None:
            with lock:
                latencies.append(time.perf_counter() - started)
            slots.release()

        node.add(COMMAND, callback=callback)

    begun = time.perf_counter()
    while time.perf_counter() < deadline:
        slots.acquire()
        submit()
    for _ in range(inflight):  # wait for the tail
        slots.acquire(timeout=30)
    return summarize(latencies, time.perf_counter() - begun)


# -- the parent -------------------------------------------------------------------------------
def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def wait_for(path: Path, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.stat().st_size:
            return True
        time.sleep(0.005)
    return False


def run_cluster(system: str, inflight: int, duration: float, fsync: bool, failover: bool) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="raftfsm-bench-") as tmp:
        out = Path(tmp)
        ports = ",".join(map(str, free_ports(3)))
        if system == "raftfsm":
            from runtime.transport.auth import write_secret

            write_secret(out / "secret")  # peers authenticate with it; every frame is MACed
        procs = {
            node_id: subprocess.Popen(
                [sys.executable, __file__, "--serve", system, "--id", node_id, "--ports", ports, "--data", tmp,
                 "--out", tmp, "--inflight", str(inflight), "--duration", str(duration)]
                + (["--fsync"] if fsync else []),
                stdout=subprocess.DEVNULL, stderr=(out / f"{node_id}.log").open("w"),
            )
            for node_id in IDS
        }
        try:
            if not wait_for(out / "result.json", duration + 30):
                logs = {n: (out / f"{n}.log").read_text()[-500:] for n in IDS}
                return {"error": f"no result; node logs end with: {logs}"}
            result: dict[str, Any] = json.loads((out / "result.json").read_text())
            if failover:
                (out / "killed").touch()
                killed_at = time.time()
                os.kill(result["pid"], signal.SIGKILL)
                survivors = [n for n in IDS if n != result["id"]]
                deadline = time.monotonic() + 30
                while time.monotonic() < deadline:
                    done = [out / f"failover-{n}" for n in survivors if (out / f"failover-{n}").exists()]
                    if done and done[0].stat().st_size:
                        result["failover_s"] = float(done[0].read_text()) - killed_at
                        break
                    time.sleep(0.005)
            return result
        finally:
            for proc in procs.values():
                proc.kill()
                proc.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--inflight", type=int, nargs="*", default=[64, 1000])
    parser.add_argument("--failovers", type=int, default=5)
    parser.add_argument("--serve", choices=["raftfsm", "pysyncobj"], help=argparse.SUPPRESS)
    parser.add_argument("--id", help=argparse.SUPPRESS)
    parser.add_argument("--ports", help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--fsync", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        args.inflight = args.inflight[0]
    if args.serve == "raftfsm":
        serve_raftfsm(args)
        return
    if args.serve == "pysyncobj":
        serve_pysyncobj(args)
        return
    try:
        import pysyncobj  # type: ignore[import-not-found, unused-ignore]  # noqa: F401
        systems = [("raftfsm", True), ("raftfsm", False), ("pysyncobj", False)]
    except ImportError:
        print("PySyncObj is not installed: measuring raftfsm only (pip install pysyncobj==0.3.17)")
        systems = [("raftfsm", True), ("raftfsm", False)]
    rows: list[list[Any]] = []
    results: list[dict[str, Any]] = []
    for system, fsync in systems:
        label = f"{system} (fsync {'on' if fsync else 'off'})"
        for inflight in args.inflight:
            result = run_cluster(system, inflight, args.duration, fsync, failover=False)
            results.append({"system": label, "inflight": inflight, **result})
            rows.append([label, inflight, result.get("ops_per_s", 0.0), result.get("p50_ms", 0.0),
                         result.get("p99_ms", 0.0)])
            print(f"  {label}, {inflight} in flight: {result}", file=sys.stderr)
    print(table(["system", "in flight", "committed ops/s", "p50 ms", "p99 ms"], rows))
    failovers: dict[str, list[float]] = {}
    for system, fsync in systems[::2] if len(systems) > 2 else systems[:1]:
        label = f"{system} (fsync {'on' if fsync else 'off'})"
        times = []
        for _ in range(args.failovers):
            result = run_cluster(system, 8, 1.0, fsync, failover=True)
            if "failover_s" in result:
                times.append(result["failover_s"])
        failovers[label] = times
    print()
    print(table(
        ["system", "kills", "failover median s", "failover worst s"],
        [[label, len(t), percentile(t, 0.5), max(t) if t else float("nan")] for label, t in failovers.items()],
    ))
    print(f"wrote {write_json('network', {'throughput': results, 'failover_s': failovers})}")


if __name__ == "__main__":
    main()

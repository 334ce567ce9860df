"""Committed entries per second for in-process 3- and 5-node clusters with no I/O:
the pure RaftCore, proposals batched, messages delivered in memory at once.

    python benchmarks/core.py [--entries N] [--batch B]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import table, write_json
from generated.raft_fsm import Role, WireMessage
from runtime.consensus import Config
from runtime.core import RaftCore


def run(nodes: int, entries: int, batch: int) -> dict[str, float]:
    ids = [f"n{i}" for i in range(1, nodes + 1)]
    config = Config(election_ticks=10, heartbeat_ticks=2, max_entries_per_message=batch, max_inflight=8)
    cores = {i: RaftCore(i, ids, config) for i in ids}
    queue: list[WireMessage] = []
    applied = dict.fromkeys(ids, 0)
    messages = 0

    def drain() -> None:
        nonlocal messages
        busy = True
        while busy:
            busy = False
            for node_id, core in cores.items():
                while core.has_ready():
                    busy = True
                    ready = core.ready()
                    queue.extend(ready.messages)
                    applied[node_id] += len(ready.committed_entries)
                    core.advance(ready)
            while queue:
                busy = True
                pending = queue[:]
                queue.clear()
                messages += len(pending)
                for message in pending:
                    cores[message.receiver].step(message)

    cores[ids[0]].campaign()
    drain()
    leader = cores[ids[0]]
    assert leader.role is Role.leader
    command = b"x" * 100
    commands = [command] * batch
    start_messages = messages
    start_applied = applied[leader.id]
    started = time.perf_counter()
    proposed = 0
    while proposed < entries:
        leader.propose_batch(commands)
        proposed += batch
        drain()
    elapsed = time.perf_counter() - started
    committed = applied[leader.id] - start_applied
    return {
        "nodes": nodes, "batch": batch, "entries": committed, "seconds": elapsed,
        "entries_per_s": committed / elapsed, "messages_per_entry": (messages - start_messages) / committed,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--entries", type=int, default=200_000)
    parser.add_argument("--batch", type=int, nargs="*", default=[1, 64, 512])
    args = parser.parse_args()
    results = [run(nodes, args.entries if batch > 1 else args.entries // 10, batch)
               for nodes in (3, 5) for batch in args.batch]
    print(table(
        ["nodes", "batch", "committed entries/s", "messages/entry", "entries"],
        [[r["nodes"], r["batch"], r["entries_per_s"], r["messages_per_entry"], r["entries"]] for r in results],
    ))
    print(f"wrote {write_json('core', {'results': results})}")


if __name__ == "__main__":
    main()

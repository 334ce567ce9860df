"""The lock service embedded in an asyncio program: three `RaftServer`s in this process, on
127.0.0.1, each with its own SQLite directory; a client acquires, is refused, reads and
releases. Run it from the repository root:

    python examples/embed.py

In a real deployment each server runs in its own process on its own machine, with the
same `peers` map; the program is the same.
"""

from __future__ import annotations

import asyncio
import os
import socket
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # `examples` from a checkout

from examples.lock import Acquire, Granted, Holder, LockCommand, LockMachine, LockResult, Release
from runtime import CommandRejected, NotLeader, RaftServer, SqliteStorage


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for sock in sockets:
        sock.bind(("127.0.0.1", 0))
    ports = [sock.getsockname()[1] for sock in sockets]
    for sock in sockets:
        sock.close()
    return ports


async def main(data: Path) -> None:
    ids = ["n1", "n2", "n3"]
    peers = {node_id: ("127.0.0.1", port) for node_id, port in zip(ids, free_ports(3), strict=True)}
    secret = os.urandom(32)  # the cluster secret: every node must have the same one
    servers: dict[str, RaftServer[LockCommand, LockResult]] = {
        node_id: RaftServer(node_id, peers, LockMachine(), SqliteStorage(data / node_id, node_id=node_id,
                                                                         cluster_id="locks"),
                            cluster_id="locks", secret=secret)
        for node_id in ids
    }
    for server in servers.values():
        await server.start()
    try:
        leader_id = await servers["n1"].wait_for_leader(timeout=10)
        leader = servers[leader_id]
        print(f"leader: {leader_id}")

        # a client session makes each command apply exactly once, however often it is retried
        client = await leader.open_session()
        now = int(time.time() * 1000)
        granted = await leader.apply(Acquire("db", "alice", ttl_ms=30_000, now_ms=now), session=(client, 1))
        assert isinstance(granted, Granted)
        print(f"alice holds 'db' with fencing token {granted.token}")

        try:
            await leader.apply(Acquire("db", "bob", ttl_ms=30_000, now_ms=now))
        except CommandRejected as refused:
            print(f"bob is refused: {refused}")

        follower = servers[next(node_id for node_id in ids if node_id != leader_id)]
        holder = await follower.read(Holder("db"))  # linearizable, served by a follower
        print(f"{follower.node_id} reads: {holder}")

        try:
            await follower.apply(Release("db", "alice", granted.token))
        except NotLeader as not_leader:  # writes go to the leader (the HTTP API forwards them)
            print(f"{follower.node_id}: {not_leader}")
        released = await leader.apply(Release("db", "alice", granted.token), session=(client, 2))
        print(f"released: {released}")
        print(f"{leader_id} reads: {await leader.read(Holder('db'))}")
    finally:
        for server in servers.values():
            await server.stop()


if __name__ == "__main__":
    with tempfile.TemporaryDirectory(prefix="raftfsm-embed-") as directory:
        asyncio.run(main(Path(directory)))

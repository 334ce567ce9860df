"""`RaftServer`: the asyncio driver of one node.

It owns a `RaftCore`, a `Storage`, a `Transport` and the user's `StateMachine`, and runs
the Ready loop of docs/architecture.md: persist (in a worker thread, so the event loop keeps
receiving while the disk syncs — what arrives meanwhile forms the next batch: group
commit), then send, then apply, then advance. One object, no global state, no threads
the caller has to know about; embed it in any asyncio application.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Generic

from generated.raft_fsm import EntryKind, Role, WireMessage
from runtime.consensus import Config
from runtime.core import RaftCore, UnknownPeer
from runtime.errors import NodeHalted, NoLeader, NotLeader, Overloaded, RaftError
from runtime.ready import Ready
from runtime.statemachine import CommandT, ResultT, StateMachine
from runtime.storage.base import Storage, StorageError
from runtime.transport.base import Transport
from runtime.transport.tcp import TcpTransport, TlsConfig


class ProposalDropped(RaftError):
    """The command was accepted by a leader that lost its office before committing it;
    another entry took its place. It was not applied; the client may retry."""


class ApplyTimeout(RaftError, TimeoutError):
    """The command was not committed in time. It may still be applied later."""


class OutcomeUnknown(ApplyTimeout):
    """The command was proposed, but this node can no longer tell whether it was applied
    (it halted or stopped, or caught up through a snapshot). Retrying may apply it twice."""


MAX_COMMAND_BYTES = 8 << 20
"""Larger commands are refused before they are proposed: every AppendEntries carrying one
must fit the transport's frame limit (16 MiB), or replication of the log would stop."""


DEFAULT_MAX_PENDING = 1024
"""Commands a leader holds at most between `apply()` accepting them and answering them;
beyond it `apply()` raises Overloaded before proposing."""
DEFAULT_MAX_PENDING_BYTES = 64 << 20
"""The same bound in encoded bytes (a single command is always admitted when none is pending)."""


DEFAULT_CONFIG = Config(election_ticks=15, heartbeat_ticks=3)
"""With the default 10 ms tick: heartbeats every 30 ms, elections after 150-300 ms."""


class RaftServer(Generic[CommandT, ResultT]):
    """One Raft node on the network. `peers` maps every voter id (this node included) to
    its Raft address; `client_addresses` optionally maps ids to the address clients should
    use (shown in NotLeader and status)."""

    def __init__(
        self,
        node_id: str,
        peers: Mapping[str, tuple[str, int]],
        state_machine: StateMachine[CommandT, ResultT],
        storage: Storage,
        *,
        cluster_id: str,
        config: Config | None = None,
        tick_interval: float = 0.01,
        tls: TlsConfig | None = None,
        insecure: bool = False,
        transport: Transport | None = None,
        snapshot_every: int = 10_000,
        client_addresses: Mapping[str, str] | None = None,
        logger: logging.Logger | None = None,
        max_pending: int = DEFAULT_MAX_PENDING,
        max_pending_bytes: int = DEFAULT_MAX_PENDING_BYTES,
    ) -> None:
        if node_id not in peers:
            raise ValueError(f"node {node_id!r} is not in the peer list {sorted(peers)}")
        self.node_id = node_id
        self.cluster_id = cluster_id
        self.peers = dict(peers)
        self.state_machine = state_machine
        self.storage = storage
        self.tick_interval = tick_interval
        self.snapshot_every = snapshot_every
        self.client_addresses = dict(client_addresses or {})
        self.max_pending = max_pending
        self.max_pending_bytes = max_pending_bytes
        self._pending = 0
        self._pending_bytes = 0
        self.log = logger or logging.getLogger(f"raftfsm.server.{node_id}")
        base = config or DEFAULT_CONFIG
        state = storage.initial_state()
        self.core = RaftCore(node_id, sorted(peers), base, state)
        if state.snapshot is not None:
            state_machine.restore(state.snapshot.data)
        self.transport: Transport = transport or TcpTransport(
            node_id, cluster_id, peers[node_id], self.peers, self._receive, tls=tls, insecure=insecure,
        )
        self._inbox: list[WireMessage] = []
        self._proposals: list[tuple[bytes, asyncio.Future[Any]]] = []
        self._waiters: dict[int, tuple[int, asyncio.Future[Any]]] = {}
        self._deadlines: list[tuple[float, int, asyncio.Future[Any], float]] = []
        self._sequence = 0
        self._ticks_due = 0
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._tick_handle: asyncio.TimerHandle | None = None
        self._disk = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"raftfsm-disk-{node_id}")
        self._unknown_senders: set[str] = set()
        self._leader_changed = asyncio.Event()

    # -- lifecycle ---------------------------------------------------------------------
    async def start(self) -> None:
        await self.transport.start()
        loop = asyncio.get_running_loop()
        self._tick_handle = loop.call_later(self.tick_interval, self._tick)
        self._task = loop.create_task(self._run(), name=f"raftfsm {self.node_id}")
        self.log.info("node %s started (term %d, log %d entries)", self.node_id, self.core.term,
                      self.core.log.last_index)

    async def stop(self) -> None:
        """Stop ticking, fail pending commands, close the transport and the storage."""
        if self._tick_handle is not None:
            self._tick_handle.cancel()
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        await self.transport.stop()
        self._fail_all(NodeHalted(f"node {self.node_id} stopped"))
        self._disk.shutdown(wait=True)
        self.storage.close()

    async def __aenter__(self) -> RaftServer[CommandT, ResultT]:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- client API ----------------------------------------------------------------------
    @property
    def role(self) -> Role:
        return self.core.role

    @property
    def is_leader(self) -> bool:
        return self.core.role is Role.leader

    @property
    def leader_id(self) -> str | None:
        return self.core.leader_id

    def address_of(self, node_id: str | None) -> str | None:
        if node_id is None:
            return None
        if node_id in self.client_addresses:
            return self.client_addresses[node_id]
        host, port = self.peers[node_id]
        return f"{host}:{port}"

    def _not_leader(self) -> RaftError:
        if self.core.role is Role.error:
            return NodeHalted(f"node {self.node_id} halted: {self.core.record.halt_reason}")
        return NotLeader(self.node_id, self.core.leader_id, self.address_of(self.core.leader_id))

    async def apply(self, command: CommandT, timeout: float = 5.0) -> ResultT:
        """Replicate `command`, wait until it is committed and applied here, and return the
        state machine's result. Raises NotLeader (with the leader's address) on a follower,
        NodeHalted on a failed node, ProposalDropped, ApplyTimeout or its subclass OutcomeUnknown,
        ValueError for a command over MAX_COMMAND_BYTES, and Overloaded when `max_pending`
        commands (or `max_pending_bytes`) await their answer. NotLeader, ValueError (and any
        error of `encode`) and Overloaded are raised before anything is proposed."""
        if self.core.role is not Role.leader:
            raise self._not_leader()
        data = self.state_machine.encode(command)
        if len(data) > MAX_COMMAND_BYTES:
            raise ValueError(f"command of {len(data)} bytes exceeds the limit of {MAX_COMMAND_BYTES} bytes")
        self._admit(len(data))
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._hold(future, len(data))
        self._proposals.append((data, future))
        # one heap swept by the tick timer instead of a timer handle per request
        self._sequence += 1
        heapq.heappush(self._deadlines, (loop.time() + timeout, self._sequence, future, timeout))
        self._wakeup.set()
        result: ResultT = await future
        return result

    def _admit(self, size: int) -> None:
        """Admission control: refuse a command beyond the pending bounds, before proposing it."""
        if self._pending >= self.max_pending or (
                self._pending and self._pending_bytes + size > self.max_pending_bytes):
            raise Overloaded(f"node {self.node_id} has {self._pending} commands ({self._pending_bytes} bytes) "
                             f"awaiting their answer, its limit ({self.max_pending} commands, "
                             f"{self.max_pending_bytes} bytes); this one was not proposed")

    def _hold(self, future: asyncio.Future[Any], size: int) -> None:
        """Count `future`'s command as pending until it is answered (result, error or cancel)."""
        self._pending += 1
        self._pending_bytes += size

        def answered(_: asyncio.Future[Any]) -> None:
            self._pending -= 1
            self._pending_bytes -= size

        future.add_done_callback(answered)

    async def wait_for_leader(self, timeout: float = 5.0) -> str:
        """Wait until this node knows a leader; return its id. Raises `NoLeader` (a
        `TimeoutError` too) if none is known within `timeout` seconds."""
        try:
            async with asyncio.timeout(timeout):
                while self.core.leader_id is None:
                    self._leader_changed.clear()
                    await self._leader_changed.wait()
        except TimeoutError:
            core = self.core
            raise NoLeader(
                f"node {self.node_id} knows no leader after {timeout:g} s "
                f"(role {core.role.name}, term {core.term}, voters {', '.join(core.voters)})"
            ) from None
        return self.core.leader_id

    def status(self) -> dict[str, object]:
        status = self.core.status()
        status["cluster"] = self.cluster_id
        status["address"] = self.address_of(self.node_id)
        status["leader_address"] = self.address_of(self.core.leader_id)
        return status

    # -- the loop ---------------------------------------------------------------------------
    def _receive(self, message: WireMessage) -> None:
        self._inbox.append(message)
        self._wakeup.set()

    def _tick(self) -> None:
        self._ticks_due += 1
        self._wakeup.set()
        loop = asyncio.get_running_loop()
        self._tick_handle = loop.call_later(self.tick_interval, self._tick)
        deadlines = self._deadlines
        now = loop.time()
        while deadlines and deadlines[0][0] <= now:
            _, _, future, timeout = heapq.heappop(deadlines)
            if not future.done():
                future.set_exception(ApplyTimeout(
                    f"command not committed within {timeout}s on {self.node_id} "
                    f"(role {self.core.role.name}, leader {self.core.leader_id})"
                ))

    async def _run(self) -> None:
        wakeup = self._wakeup
        while True:
            await wakeup.wait()
            wakeup.clear()
            try:
                await self._step()
            except Exception as exc:  # a bug must not leave clients hanging
                self.log.exception("node %s: internal error, halting", self.node_id)
                self._halt(f"internal error: {exc!r}")

    async def _step(self) -> None:
        core = self.core
        if self._inbox:
            inbox, self._inbox = self._inbox, []
            for message in inbox:
                try:
                    core.step(message)
                except UnknownPeer as exc:
                    if message.sender not in self._unknown_senders:
                        self._unknown_senders.add(message.sender)
                        self.log.warning("node %s: %s", self.node_id, exc)
        if self._ticks_due:
            # one tick however many timer firings piled up while we waited for the disk:
            # a stall of this node is not silence from its peers (no needless election)
            self._ticks_due = 0
            core.tick()
        if self._proposals:
            batch, self._proposals = self._proposals, []
            try:
                first, _, term = core.propose_batch([data for data, _ in batch])
            except (NotLeader, RaftError):
                error = self._not_leader()
                for _, future in batch:
                    if not future.done():
                        future.set_exception(error)
            else:
                for offset, (_, future) in enumerate(batch):
                    self._waiters[first + offset] = (term, future)
        while core.has_ready():
            ready = core.ready()
            if ready.entries or ready.hard_state is not None or ready.snapshot is not None:
                try:
                    await asyncio.get_running_loop().run_in_executor(
                        self._disk, self.storage.persist, ready.entries, ready.hard_state, ready.snapshot
                    )
                except StorageError as exc:
                    self._halt(str(exc))
                    continue
            for message in ready.messages:
                self.transport.send(message)
            self._apply(ready)
            core.advance(ready)
            if ready.soft_state is not None:
                self._leader_changed.set()
                self.log.info("node %s: %s in term %d, leader %s", self.node_id,
                              ready.soft_state.role.name, core.term, ready.soft_state.leader_id)
            await self._maybe_compact()

    def _apply(self, ready: Ready) -> None:
        machine = self.state_machine
        if ready.snapshot is not None:
            machine.restore(ready.snapshot.data)
            for index in [i for i in self._waiters if i <= ready.snapshot.index]:
                _, future = self._waiters.pop(index)
                if not future.done():
                    future.set_exception(OutcomeUnknown(
                        f"entry {index} was covered by a snapshot from the leader before this node "
                        "applied it; whether it was committed is unknown"
                    ))
        waiters = self._waiters
        for entry in ready.committed_entries:
            result: object = None
            if entry.kind is EntryKind.data:
                result = machine.apply(machine.decode(entry.data))
            waiter = waiters.pop(entry.index, None)
            if waiter is None:
                continue
            term, future = waiter
            if future.done():
                continue
            if term == entry.term:
                future.set_result(result)
            else:
                future.set_exception(ProposalDropped(
                    f"entry {entry.index} of term {term} was replaced by a new leader; not applied"
                ))

    async def _maybe_compact(self) -> None:
        core = self.core
        if not self.snapshot_every or core.last_applied - core.log.offset < self.snapshot_every:
            return
        snapshot = core.compact(core.last_applied, self.state_machine.snapshot())
        try:
            await asyncio.get_running_loop().run_in_executor(self._disk, self.storage.compact, snapshot)
        except StorageError as exc:
            self._halt(str(exc))

    def _halt(self, reason: str) -> None:
        """Principle 4: storage failed, so stop acknowledging anything."""
        if self.core.role is not Role.error:
            self.log.error("node %s: entering the error role: %s", self.node_id, reason)
            self.core.fail(reason)
        self._fail_all(NodeHalted(f"node {self.node_id} halted: {reason}"))

    def _fail_all(self, error: Exception) -> None:
        """Commands not yet proposed fail with `error`; proposed ones may have been
        committed elsewhere, so their outcome is unknown."""
        for _, future in self._proposals:
            if not future.done():
                future.set_exception(error)
        self._proposals.clear()
        unknown = OutcomeUnknown(f"{error}; the command was proposed and may have been committed")
        for _, future in self._waiters.values():
            if not future.done():
                future.set_exception(unknown)
        self._waiters.clear()

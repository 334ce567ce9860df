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
import itertools
import logging
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Generic

from generated.raft_fsm import Role, WireMessage
from runtime.applier import Applier
from runtime.consensus import Config
from runtime.core import Dropped, RaftCore
from runtime.errors import (
    ApplyTimeout,
    NodeHalted,
    NoLeader,
    NotLeader,
    OutcomeUnknown,
    Overloaded,
    ProposalDropped,
    RaftError,
    ReadRefused,
    StateMachineFailed,
    StorageError,
)
from runtime.ready import Ready
from runtime.sessions import encode_command, encode_register
from runtime.statemachine import CommandT, ResultT, StateMachine
from runtime.storage.base import Storage
from runtime.transport.base import Transport
from runtime.transport.tcp import TcpTransport, TlsConfig

__all__ = [
    "DEFAULT_CONFIG",
    "DEFAULT_MAX_PENDING",
    "DEFAULT_MAX_PENDING_BYTES",
    "MAX_COMMAND_BYTES",
    # the errors moved to runtime.errors; importable from here as before
    "ApplyTimeout",
    "OutcomeUnknown",
    "ProposalDropped",
    "RaftServer",
    "ReadRefused",
    "StateMachineFailed",
]


MAX_COMMAND_BYTES = 8 << 20
"""Larger commands are refused before they are proposed: every AppendEntries carrying one
must fit the transport's frame limit (16 MiB), or replication of the log would stop."""


def _now_ms() -> int:
    """The leader's clock as written into entries (session activity and expiry)."""
    return time.time_ns() // 1_000_000


DEFAULT_MAX_PENDING = 1024
"""Commands a leader holds at most between `apply()` accepting them and answering them;
beyond it `apply()` raises Overloaded before proposing."""
DEFAULT_MAX_PENDING_BYTES = 64 << 20
"""The same bound in encoded bytes (a single command is always admitted when none is pending)."""


DEFAULT_CONFIG = Config(election_ticks=15, heartbeat_ticks=3)
"""With the default 10 ms tick: heartbeats every 30 ms, elections after 150-300 ms."""


class _DropLog:
    """One log line per sender and DROP_LOG_INTERVAL for messages the core dropped (a
    WARNING for invalid ones), so a peer flooding bad messages cannot flood the log."""

    def __init__(self, log: logging.Logger, node_id: str) -> None:
        self.log = log
        self.node_id = node_id
        self.last: dict[tuple[str, bool], tuple[float, int]] = {}

    def report(self, sender: str, dropped: Dropped) -> None:
        now = time.monotonic()
        key = (sender, dropped.invalid)
        last, suppressed = self.last.get(key, (-DROP_LOG_INTERVAL, 0))
        if now - last < DROP_LOG_INTERVAL:
            self.last[key] = (last, suppressed + 1)
            return
        self.last[key] = (now, 0)
        more = f" ({suppressed} more dropped since the last report)" if suppressed else ""
        level = logging.WARNING if dropped.invalid else logging.INFO
        self.log.log(level, "node %s: dropped %s%s", self.node_id, dropped.reason, more)


DROP_LOG_INTERVAL = 5.0
"""Seconds between two log lines about dropped messages from one sender."""


class RaftServer(Generic[CommandT, ResultT]):
    """One Raft node on the network. `peers` maps every voter id (this node included) to
    its Raft address; `client_addresses` optionally maps ids to the address clients should
    use (shown in NotLeader and status). Without a `transport`, peers authenticate with
    `secret` (the cluster secret) or `tls` (see TcpTransport)."""

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
        secret: bytes | None = None,
        insecure: bool = False,
        insecure_no_auth: bool = False,
        transport: Transport | None = None,
        snapshot_every: int = 10_000,
        snapshot_every_bytes: int = 64 << 20,
        trailing_log: int = 5_000,
        trailing_bytes: int = 16 << 20,
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
        self.snapshot_every_bytes = snapshot_every_bytes
        self.trailing_log = trailing_log
        self.trailing_bytes = trailing_bytes
        self._applied_bytes = 0
        """Command bytes applied since the last snapshot (the byte trigger of compaction)."""
        self.client_addresses = dict(client_addresses or {})
        self.max_pending = max_pending
        self.max_pending_bytes = max_pending_bytes
        self._pending = 0
        self._pending_bytes = 0
        self.log = logger or logging.getLogger(f"raftfsm.server.{node_id}")
        base = config or DEFAULT_CONFIG
        state = storage.initial_state()
        self.core = RaftCore(node_id, sorted(peers), base, state)
        self.applier: Applier[CommandT, ResultT] = Applier(state_machine)
        if state.snapshot is not None:
            self.applier.restore(state.snapshot.data)
        self.transport: Transport = transport or TcpTransport(
            node_id, cluster_id, peers[node_id], self.peers, self._receive, tls=tls, secret=secret,
            insecure=insecure, insecure_no_auth=insecure_no_auth,
        )
        self._inbox: list[WireMessage] = []
        self._proposals: list[tuple[bytes, asyncio.Future[Any], bool]] = []
        """(payload, future, is a session registration) not proposed yet"""
        self._waiters: dict[int, tuple[int, asyncio.Future[Any], bool]] = {}
        """log index -> (term, future, is a registration) of proposed entries not applied yet"""
        self._read_requests: list[tuple[int, asyncio.Future[Any], CommandT]] = []
        self._reads: dict[int, tuple[asyncio.Future[Any], CommandT]] = {}
        """request id -> read waiting for its ReadState"""
        self._ready_reads: list[tuple[int, int, asyncio.Future[Any], CommandT]] = []
        """(index, request id, future, query): reads waiting until `index` is applied (a heap)"""
        self._read_ids = itertools.count(1)
        self._deadlines: list[tuple[float, int, asyncio.Future[Any], float]] = []
        self._sequence = 0
        self._ticks_due = 0
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._tick_handle: asyncio.TimerHandle | None = None
        self._disk = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"raftfsm-disk-{node_id}")
        self._drops = _DropLog(self.log, node_id)
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

    async def apply(
        self, command: CommandT, timeout: float = 5.0, *, session: tuple[int, int] | tuple[int, int, int] | None = None,
    ) -> ResultT:
        """Replicate `command`, wait until it is committed and applied here, and return the
        state machine's result.

        `session=(client_id, sequence)` (or `(client_id, sequence, ack)` for a client with
        several commands in flight; `ack` is the lowest sequence number it still awaits)
        makes the command apply exactly once: retrying the same pair — on this node or
        another, after any error — returns the original result and never applies it
        twice (thesis §6.3). `client_id` comes from `open_session()`. Without a session a
        command whose outcome is unknown may be applied again if retried.

        Raises NotLeader (with the leader's address) on a follower, NodeHalted on a failed
        node, CommandRejected if the state machine refused it (nothing changed),
        SessionExpired / StaleCommand for a bad session, ProposalDropped (not applied),
        ApplyTimeout or its subclass OutcomeUnknown (may be applied), and ValueError for a
        command over MAX_COMMAND_BYTES.

        Raises Overloaded before proposing when `max_pending` commands (or
        `max_pending_bytes`) await their answer."""
        if self.core.role is not Role.leader:
            raise self._not_leader()
        data = self.state_machine.encode(command)
        if len(data) > MAX_COMMAND_BYTES:
            raise ValueError(f"command of {len(data)} bytes exceeds the limit of {MAX_COMMAND_BYTES} bytes")
        if session is None:
            payload = encode_command(data, _now_ms())
        else:
            client, sequence = session[0], session[1]
            ack = session[2] if len(session) == 3 else sequence
            if client < 1 or sequence < 1 or not 1 <= ack <= sequence:
                raise ValueError(f"session {session!r}: need client >= 1, sequence >= 1, 1 <= ack <= sequence")
            payload = encode_command(data, _now_ms(), client, sequence, ack)
        self._admit(len(payload))
        result: ResultT = await self._propose(payload, timeout)
        return result

    async def open_session(self, timeout: float = 5.0) -> int:
        """Register a client session through the log; return its client id (for `apply`'s
        `session=`). It expires after an hour without commands (by the leader's clock)."""
        if self.core.role is not Role.leader:
            raise self._not_leader()
        client: int = await self._propose(encode_register(_now_ms()), timeout, registration=True)
        return client

    async def _propose(self, payload: bytes, timeout: float, registration: bool = False) -> Any:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._hold(future, len(payload))
        self._proposals.append((payload, future, registration))
        self._deadline(loop, future, timeout)
        self._wakeup.set()
        return await future

    def _deadline(self, loop: asyncio.AbstractEventLoop, future: asyncio.Future[Any], timeout: float) -> None:
        # one heap swept by the tick timer instead of a timer handle per request
        self._sequence += 1
        heapq.heappush(self._deadlines, (loop.time() + timeout, self._sequence, future, timeout))

    async def read(self, query: CommandT, timeout: float = 5.0) -> ResultT:
        """A linearizable read without a log write (ReadIndex, thesis §6.4): the result of
        `state_machine.query(query)` on a state that includes every write acknowledged
        before this call. Works on followers too (they ask the leader for a read index).
        Raises NotLeader when no leader is known, ReadRefused if leadership changed
        meanwhile (retry), NodeHalted, or ApplyTimeout."""
        if self.core.role is Role.error:
            raise self._not_leader()
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._read_requests.append((next(self._read_ids), future, query))
        self._deadline(loop, future, timeout)
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
            except StateMachineFailed as exc:  # logged with its traceback where it happened
                self._halt(str(exc))
            except Exception as exc:  # a bug must not leave clients hanging
                self.log.exception("node %s: internal error, halting", self.node_id)
                self._halt(f"internal error: {exc!r}")

    async def _step(self) -> None:
        core = self.core
        if self._inbox:
            inbox, self._inbox = self._inbox, []
            for message in inbox:
                dropped = core.step(message)
                if dropped is not None:
                    self._drops.report(message.sender, dropped)
        if self._ticks_due:
            # one tick however many timer firings piled up while we waited for the disk:
            # a stall of this node is not silence from its peers (no needless election)
            self._ticks_due = 0
            core.tick()
        if self._proposals:
            batch, self._proposals = self._proposals, []
            try:
                first, _, term = core.propose_batch([data for data, _, _ in batch])
            except (NotLeader, RaftError):
                error = self._not_leader()
                for _, future, _ in batch:
                    if not future.done():
                        future.set_exception(error)
            else:
                for offset, (_, future, registration) in enumerate(batch):
                    self._waiters[first + offset] = (term, future, registration)
        if self._read_requests:
            requests, self._read_requests = self._read_requests, []
            for request_id, future, query in requests:
                if future.done():
                    continue
                try:
                    core.read(request_id)
                except (NotLeader, RaftError):
                    future.set_exception(self._not_leader())
                else:
                    self._reads[request_id] = (future, query)
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
            if ready.read_states or self._ready_reads:
                self._serve_reads(ready)
            if ready.soft_state is not None:
                self._leader_changed.set()
                self.log.info("node %s: %s in term %d, leader %s", self.node_id,
                              ready.soft_state.role.name, core.term, ready.soft_state.leader_id)
            await self._maybe_compact()

    def _apply(self, ready: Ready) -> None:
        applier = self.applier
        if ready.snapshot is not None:
            applier.restore(ready.snapshot.data)
            for index in [i for i in self._waiters if i <= ready.snapshot.index]:
                _, future, _ = self._waiters.pop(index)
                if not future.done():
                    future.set_exception(OutcomeUnknown(
                        f"entry {index} was covered by a snapshot from the leader before this node "
                        "applied it; whether it was committed is unknown"
                    ))
        waiters = self._waiters
        for entry in ready.committed_entries:
            self._applied_bytes += len(entry.data)
            try:
                applied = applier.apply(entry)
            except Exception as exc:
                # not a CommandRejected: a bug in the state machine, and every node will
                # meet it on this same entry; stop here rather than diverge
                self.log.exception("node %s: the state machine failed on entry %d", self.node_id, entry.index)
                raise StateMachineFailed(
                    f"the state machine raised {exc!r} applying entry {entry.index}"
                ) from exc
            waiter = waiters.pop(entry.index, None)
            if waiter is None:
                continue
            term, future, registration = waiter
            if future.done():
                continue
            if term != entry.term:
                future.set_exception(ProposalDropped(
                    f"entry {entry.index} of term {term} was replaced by a new leader; not applied"
                ))
            elif registration:
                future.set_result(entry.index)
            elif applied is not None:
                try:
                    future.set_result(applier.result(applied))
                except RaftError as exc:
                    future.set_exception(exc)

    def _serve_reads(self, ready: Ready) -> None:
        """Answer reads whose index is applied; the others wait in a heap by index."""
        heap = self._ready_reads
        for state in ready.read_states:
            waiting = self._reads.pop(state.request_id, None)
            if waiting is None:
                continue
            future, query = waiting
            if future.done():
                continue
            if state.index is None:
                future.set_exception(ReadRefused(
                    f"node {self.node_id}: leadership changed while the read was confirmed; retry"
                ))
            else:
                heapq.heappush(heap, (state.index, state.request_id, future, query))
        applied = self.core.last_applied
        machine = self.state_machine
        while heap and heap[0][0] <= applied:
            _, _, future, query = heapq.heappop(heap)
            if future.done():
                continue
            try:
                future.set_result(machine.query(query))
            except Exception as exc:  # the query's own error, for this client only
                future.set_exception(exc)

    async def _maybe_compact(self) -> None:
        core = self.core
        snapshot = core._consensus.snapshot
        since = core.last_applied - (snapshot.index if snapshot is not None else 0)
        if since <= 0 or not (
            (self.snapshot_every and since >= self.snapshot_every)
            or (self.snapshot_every_bytes and self._applied_bytes >= self.snapshot_every_bytes)
        ):
            return
        snapshot = core.compact(core.last_applied, self.applier.snapshot(), trailing=self.trailing_log,
                                trailing_bytes=self.trailing_bytes)
        self._applied_bytes = 0
        try:
            await asyncio.get_running_loop().run_in_executor(
                self._disk, self.storage.compact, snapshot, core.log.first_index
            )
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
        for _, future, _ in self._proposals:
            if not future.done():
                future.set_exception(error)
        self._proposals.clear()
        unknown = OutcomeUnknown(f"{error}; the command was proposed and may have been committed")
        for _, future, _ in self._waiters.values():
            if not future.done():
                future.set_exception(unknown)
        self._waiters.clear()
        for _, future, _ in self._read_requests:
            if not future.done():
                future.set_exception(error)
        self._read_requests.clear()
        for future, _ in self._reads.values():
            if not future.done():
                future.set_exception(error)
        self._reads.clear()
        for _, _, future, _ in self._ready_reads:
            if not future.done():
                future.set_exception(error)
        self._ready_reads.clear()

"""A deterministic simulator: N `RaftCore`s on a virtual network and virtual disks.

Everything is driven by one seeded RNG and a virtual tick counter, so a seed replays
exactly. Faults: partitions, crashes (a node keeps only what its driver persisted),
restarts, and message drop / duplication / reordering / delay. Safety checkers run after
every step and raise `InvariantViolation` with a readable account.

Users can run their own state machine under it: pass `state_machine=` a factory of
objects implementing `runtime.statemachine.StateMachine` (the contract `RaftServer` uses);
each node runs it behind the same `Applier` (client sessions, refusals) as a server.
`Simulation` is generic in the machine's type: `Simulation(state_machine=LockMachine)` is a
`Simulation[LockMachine]`, whose `nodes[id].machine` is a `LockMachine`, whose `propose`
takes that machine's commands (encoded with its `encode`) and returns a `Proposed` handle
whose `result`, typed as the machine's result, is filled in when the node it was proposed
on applies it.
"""

from __future__ import annotations

import contextlib
import heapq
import logging
import random
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, Generic

import attrs
import msgpack
from attrs import define, field, frozen
from typing_extensions import TypeVar  # defaults (PEP 696) before Python 3.13

from generated.raft_fsm import AppendEntries, Entry, EntryKind, Role, WireMessage
from runtime.applier import Applied, Applier
from runtime.consensus import Config, Consensus
from runtime.core import RaftCore
from runtime.errors import InvariantViolation, MembershipChangeRefused, NotLeader, RaftError
from runtime.forgery import from_stranger, impossible
from runtime.membership import Configuration, ConfigurationError, Member
from runtime.ready import Ready
from runtime.sessions import Command, Register, decode_entry, encode_command, encode_register
from runtime.statemachine import CommandT, ResultT, StateMachine
from runtime.storage.base import Storage, StorageError
from runtime.storage.memory import MemoryStorage

log = logging.getLogger("raftfsm.sim")


STORM_WINDOW = 100
"""Ticks over which the message-rate checker counts."""


class ListStateMachine:
    """The default state machine: remembers every command (bytes) in order; the result
    of a command is how many commands it has seen."""

    def __init__(self) -> None:
        self.commands: list[bytes] = []

    def encode(self, command: bytes) -> bytes:
        return command

    def decode(self, data: bytes) -> bytes:
        return data

    def apply(self, command: bytes) -> int:
        self.commands.append(command)
        return len(self.commands)

    def query(self, command: bytes) -> int:
        return len(self.commands)

    def encode_result(self, result: int) -> bytes:
        return str(result).encode()

    def decode_result(self, data: bytes) -> int:
        return int(data)

    def snapshot(self) -> bytes:
        # length-prefixed, so a snapshot spliced from two others does not decode as one
        return msgpack.packb(self.commands, use_bin_type=True)  # type: ignore[no-any-return]

    def restore(self, data: bytes) -> None:
        commands = msgpack.unpackb(data, raw=False)
        if not isinstance(commands, list) or not all(isinstance(c, bytes) for c in commands):
            raise ValueError("not a ListStateMachine snapshot")
        self.commands = commands


@define
class Faults:
    """Per-message probabilities, and the largest extra delay in ticks."""

    drop: float = 0.0
    duplicate: float = 0.0
    reorder: float = 0.0
    delay: int = 0


MachineT = TypeVar("MachineT", bound=StateMachine[Any, Any], default=ListStateMachine, covariant=True)
"""The state machine type of a Simulation (ListStateMachine unless `state_machine=` says)."""
NodeMachineT = TypeVar("NodeMachineT", bound=StateMachine[Any, Any], default=StateMachine[Any, Any],
                       covariant=True)
ValueT = TypeVar("ValueT", default=Any)


@define
class Proposed(Generic[ValueT]):
    """A command proposed in the simulation. `done` once the node it was proposed on
    applied it (or learned it never will: `error`); unpacks as (index, term). `result` is
    what the state machine returned (a session's client id for `open_session`)."""

    index: int
    term: int
    node: str
    done: bool = False
    result: ValueT | None = None
    error: Exception | None = None

    def __iter__(self) -> Iterator[int]:
        yield self.index
        yield self.term


@define
class SimNode(Generic[NodeMachineT]):
    id: str
    core: RaftCore
    disk: Storage
    machine: NodeMachineT
    applier: Applier[Any, Any]
    alive: bool = True
    applied: dict[int, tuple[int, bytes]] = field(factory=dict)
    """index -> (term, command) applied in this incarnation."""
    last_commit: int = 0
    last_applied: int = 0


class Simulation(Generic[MachineT]):
    """See the module docstring. Typical use::

        sim = Simulation(nodes=5, seed=7)
        sim.run(200)
        index, term = sim.propose(b"x")
        sim.run(100)
        sim.check()
    """

    def __init__(
        self,
        nodes: int = 3,
        seed: int = 0,
        config: Config | None = None,
        state_machine: Callable[[], MachineT] = ListStateMachine,  # type: ignore[assignment]
        handlers: type[Consensus] | dict[str, type[Consensus]] = Consensus,
        latency: int = 1,
        snapshot_every: int = 0,
        trailing_log: int = 0,
    ) -> None:
        self.seed = seed
        self.rng = random.Random(seed)
        self.config = config or Config(election_ticks=10, heartbeat_ticks=2)
        self.ids = tuple(f"n{i}" for i in range(1, nodes + 1))
        self.state_machine = state_machine
        self.handlers = handlers
        self.latency = latency
        self.snapshot_every = snapshot_every
        self.trailing_log = trailing_log
        self.now = 0
        self.faults = Faults()
        self.groups: list[frozenset[str]] | None = None
        self._network: list[tuple[int, int, WireMessage]] = []
        self._sequence = 0
        self.messages_sent = 0
        self._window_start = 0
        self._forged: set[int] = set()
        """ids of injected messages still in flight (they bypass partitions: a forger is
        anywhere on the network)."""
        self.forged_dropped = 0
        self.trace: deque[str] = deque(maxlen=40)
        # checker state
        self.leaders: dict[int, str] = {}
        self.committed: dict[int, tuple[int, bytes]] = {}
        self.commands: dict[int, bytes] = {}
        """index -> command of every committed data entry (what state machines must hold)."""
        self.proposals: dict[int, tuple[int, bytes]] = {}
        self._handles: dict[tuple[str, int], Proposed[Any]] = {}
        self.acknowledged: dict[int, bytes] = {}
        self.nodes: dict[str, SimNode[MachineT]] = {}
        bootstrap = Configuration.voters_only(self.ids)
        for number, node_id in enumerate(self.ids):
            disk = MemoryStorage()
            disk.bootstrap(bootstrap)
            self.nodes[node_id] = self._boot(node_id, disk, number)

    # -- construction -------------------------------------------------------------------
    def _handlers_for(self, node_id: str) -> type[Consensus]:
        if isinstance(self.handlers, dict):
            return self.handlers.get(node_id, Consensus)
        return self.handlers

    def _boot(self, node_id: str, disk: Storage, salt: int) -> SimNode[MachineT]:
        state = disk.initial_state()
        config = attrs.evolve(self.config, seed=self.rng.randrange(2**32) ^ salt)
        core = RaftCore(node_id, self.ids, config, state, handlers=self._handlers_for(node_id))
        machine = self.state_machine()
        applier: Applier[Any, Any] = Applier(machine)
        if state.snapshot is not None:
            applier.restore(state.snapshot.data)
        node = SimNode(node_id, core, disk, machine, applier)
        node.last_commit = core.commit_index
        node.last_applied = core.last_applied
        return node

    # -- faults ---------------------------------------------------------------------------
    def set_faults(self, drop: float = 0.0, duplicate: float = 0.0, reorder: float = 0.0, delay: int = 0) -> None:
        self.faults = Faults(drop, duplicate, reorder, delay)

    def partition(self, *groups: Iterable[str]) -> None:
        """Only nodes within one group can talk; nodes in no group are isolated."""
        self.groups = [frozenset(g) for g in groups]
        self.trace.append(f"t={self.now} partition {[sorted(g) for g in self.groups]}")

    def isolate(self, node_id: str) -> None:
        self.partition([node_id], [n for n in self.ids if n != node_id])

    def heal(self) -> None:
        self.groups = None
        self.faults = Faults()
        self.trace.append(f"t={self.now} heal")

    def crash(self, node_id: str) -> None:
        """Stop the node; everything it did not persist is lost."""
        node = self.nodes[node_id]
        node.alive = False
        self.trace.append(f"t={self.now} crash {node_id}")

    def restart(self, node_id: str) -> None:
        node = self.nodes[node_id]
        if node.alive:
            return
        self.nodes[node_id] = self._boot(node_id, node.disk, self.rng.randrange(1000))
        self.trace.append(f"t={self.now} restart {node_id}")

    def _connected(self, a: str, b: str) -> bool:
        if self.groups is None:
            return True
        return any(a in g and b in g for g in self.groups)

    # -- clients --------------------------------------------------------------------------
    def leader(self) -> str | None:
        """The live leader with the highest term, if any."""
        best: SimNode | None = None
        for node in self.nodes.values():
            if node.alive and node.core.role is Role.leader and (best is None or node.core.term > best.core.term):
                best = node
        return best.id if best else None

    @property
    def clock_ms(self) -> int:
        """The virtual wall clock leaders write into entries (10 ms a tick)."""
        return self.now * 10

    def propose(self: Simulation[StateMachine[CommandT, ResultT]], command: CommandT, node_id: str | None = None,
                session: tuple[int, int] | None = None) -> Proposed[ResultT]:
        """Propose `command` (encoded by the machine's `encode`) on `node_id` (default: the
        leader); with `session=(client, sequence)` it applies exactly once however often it
        is proposed. Raises NotLeader if there is no leader."""
        client, sequence = session or (0, 0)
        target = node_id or self.leader()
        if target is None:
            raise NotLeader("simulation", None)
        data = self.nodes[target].machine.encode(command)
        return self._propose(encode_command(data, self.clock_ms, client, sequence), target, data)

    def open_session(self, node_id: str | None = None) -> Proposed[int]:
        """Register a client session; once `done`, `result` is its client id."""
        payload = encode_register(self.clock_ms)
        return self._propose(payload, node_id, payload)

    def _propose(self, payload: bytes, node_id: str | None, command: bytes) -> Proposed[Any]:
        target = node_id or self.leader()
        if target is None:
            raise NotLeader("simulation", None)
        node = self.nodes[target]
        index, term = node.core.propose(payload)
        self.proposals[index] = (term, command)
        handle: Proposed[Any] = Proposed(index, term, target)
        self._handles[(target, index)] = handle
        self._drain(node)
        return handle

    # -- membership -------------------------------------------------------------------------
    def add_node(self, node_id: str | None = None) -> str:
        """Start a new, empty node that knows the leader's configuration (as `raftfsm node
        --join` learns it); it takes part once a change adds it (`add_learner`)."""
        leader = self.leader()
        if leader is None:
            raise NotLeader("simulation", None)
        new_id = node_id or f"n{len(self.ids) + 1}"
        disk = MemoryStorage()
        disk.bootstrap(self.nodes[leader].core.configuration.with_learner(Member(new_id)))
        self.ids = (*self.ids, new_id)
        self.nodes[new_id] = self._boot(new_id, disk, len(self.ids))
        self.trace.append(f"t={self.now} new node {new_id}")
        return new_id

    def change_membership(self, configuration: Configuration, node_id: str | None = None) -> int:
        """Ask the leader (or `node_id`) for a configuration change; return its entry's
        index. Raises NotLeader or MembershipChangeRefused."""
        target = node_id or self.leader()
        if target is None:
            raise NotLeader("simulation", None)
        node = self.nodes[target]
        index = node.core.change_membership(configuration)
        self.trace.append(f"t={self.now} {target} proposes {configuration.describe()} at {index}")
        self._drain(node)
        return index

    def transfer_leadership(self, target: str | None = None, node_id: str | None = None) -> str:
        leader = node_id or self.leader()
        if leader is None:
            raise NotLeader("simulation", None)
        node = self.nodes[leader]
        chosen = node.core.transfer_leadership(target)
        self.trace.append(f"t={self.now} {leader} hands over to {chosen}")
        self._drain(node)
        return chosen

    def members(self) -> tuple[str, ...]:
        """The nodes of the latest configuration known to the leader (all nodes if none)."""
        leader = self.leader()
        if leader is None:
            return self.ids
        return self.nodes[leader].core.configuration.ids

    # -- running --------------------------------------------------------------------------
    def run(self, ticks: int) -> None:
        for _ in range(ticks):
            self.step_tick()

    def _check_message_rate(self) -> None:
        """No storm: over STORM_WINDOW ticks, at most a window of requests and their
        replies per pair of nodes per tick, plus timer traffic (a resend loop or a
        truncate-and-resend bug shows here long before a safety checker fires)."""
        nodes = len(self.ids)
        per_tick = nodes * (nodes - 1) * (2 * self.config.max_inflight + 4)
        limit = int(STORM_WINDOW * per_tick * (1 + self.faults.duplicate))
        sent = self.messages_sent - self._window_start
        self._window_start = self.messages_sent
        if sent > limit:
            self.violation("message storm", f"{sent} messages in {STORM_WINDOW} ticks (at most {limit} expected)")

    def step_tick(self) -> None:
        self.now += 1
        if self.now % STORM_WINDOW == 0:
            self._check_message_rate()
        network = self._network
        while network and network[0][0] <= self.now:
            _, _, message = heapq.heappop(network)
            node = self.nodes[message.receiver]
            forged = id(message) in self._forged
            if forged:
                self._forged.discard(id(message))
            if node.alive and (forged or self._connected(message.sender, message.receiver)):
                core = node.core
                before = (core.term, core.leader_id, core.log.last_index, core.log.last_term)
                try:
                    dropped = core.step(message)
                except AssertionError as exc:
                    self.violation("internal consistency", f"{node.id} asserted while handling {message}: {exc}")
                if type(message) is AppendEntries and message.term < before[0] \
                        and (core.leader_id, core.log.last_index, core.log.last_term) != before[1:]:
                    self.violation("§5.1 stale term", f"{node.id} (term {before[0]}) followed an AppendEntries of "
                                   f"the term-{message.term} leader {message.sender}")
                if forged:
                    stranger = message.sender not in node.core.record.peers
                    if dropped is None or not (dropped.invalid or stranger or node.core.role is Role.error):
                        self.violation("validation", f"{node.id} accepted a forged or impossible message: {message}")
                    self.forged_dropped += 1
                elif dropped is not None and dropped.invalid:
                    self.violation("validation", f"{node.id} dropped a message of a correct node: {dropped.reason}")
                self._drain(node)
        for node in self.nodes.values():
            if node.alive:
                node.core.tick()
                self._drain(node)

    def _send(self, message: WireMessage) -> None:
        faults = self.faults
        rng = self.rng
        self.messages_sent += 1
        if faults.drop and rng.random() < faults.drop:
            return
        copies = 2 if faults.duplicate and rng.random() < faults.duplicate else 1
        for _ in range(copies):
            delay = self.latency
            if faults.delay:
                delay += rng.randrange(faults.delay + 1)
            if faults.reorder and rng.random() < faults.reorder:
                delay += rng.randrange(1, 4)
            self._sequence += 1
            heapq.heappush(self._network, (self.now + delay, self._sequence, message))

    def inject(self, message: WireMessage, delay: int = 1) -> None:
        """Deliver a message no correct node sent (a forger's, or a corrupted one) after
        `delay` ticks. The checkers keep running: it must be dropped or be harmless."""
        self._sequence += 1
        self._forged.add(id(message))
        heapq.heappush(self._network, (self.now + delay, self._sequence, message))
        self.trace.append(f"t={self.now} inject {type(message).__name__} to {message.receiver}")

    def _drain(self, node: SimNode) -> None:
        """Process Readies the way a real driver does: persist, send, apply, advance."""
        core = node.core
        while node.alive and core.has_ready():
            ready = core.ready()
            try:
                node.disk.persist(ready.entries, ready.hard_state, ready.snapshot)
            except StorageError as exc:
                # principle 4: a node that cannot persist stops; nothing of this Ready leaves
                log.error("node %s: storage failed, entering the error role: %s", node.id, exc)
                self.trace.append(f"t={self.now} {node.id} storage failed: {exc}")
                core.fail(str(exc))
                continue
            for message in ready.messages:
                self._send(message)
            self._apply(node, ready)
            core.advance(ready)
            self._check_node(node, ready)
            last = core._consensus.snapshot
            if self.snapshot_every and core.last_applied - (last.index if last else 0) >= self.snapshot_every:
                snapshot = core.compact(core.last_applied, node.applier.snapshot(), trailing=self.trailing_log)
                node.disk.compact(snapshot, core.log.first_index)

    def _apply(self, node: SimNode, ready: Ready) -> None:
        if ready.snapshot is not None:
            try:
                node.applier.restore(ready.snapshot.data)
            except Exception as exc:
                self.violation("snapshot integrity", f"{node.id} cannot restore the snapshot it installed: {exc!r}")
            self._check_machine(node, ready.snapshot.index)
        committed = self.committed
        acknowledged = self.acknowledged
        for entry in ready.committed_entries:
            index = entry.index
            applied = node.applier.apply(entry)
            command = _command_of(entry)
            if applied is not None and applied.fresh:
                self.commands[index] = command
            handle = self._handles.pop((node.id, index), None)
            if handle is not None:
                self._settle(handle, node, entry, applied)
            value = (entry.term, command)
            node.applied[index] = value
            seen = committed.get(index)
            if seen is None:
                committed[index] = value
            elif seen != value:
                self.violation(
                    "State Machine Safety",
                    f"{node.id} applied {value} at index {index}, another node applied {seen}",
                )
            if node.core.role is Role.leader and self.proposals.get(index) == value:
                acknowledged[index] = command
            elif index in acknowledged and acknowledged[index] != command:
                self.violation(
                    "acknowledged proposal lost",
                    f"{node.id} applied {command!r} at index {index}, acknowledged was {acknowledged[index]!r}",
                )

    @staticmethod
    def _settle(handle: Proposed, node: SimNode, entry: Entry, applied: Applied[Any] | None) -> None:
        handle.done = True
        if entry.term != handle.term:
            handle.error = NotLeader(node.id, None)  # replaced by another leader's entry: not applied
        elif applied is not None:
            if isinstance(decode_entry(entry.data), Register):
                handle.result = entry.index
                return
            try:
                handle.result = node.applier.result(applied)
            except RaftError as exc:
                handle.error = exc

    # -- checkers ----------------------------------------------------------------------------
    def violation(self, rule: str, detail: str) -> None:
        account = "\n".join(f"    {line}" for line in self.trace)
        raise InvariantViolation(
            f"{rule} violated at tick {self.now} (seed {self.seed}): {detail}\n"
            f"  recent events:\n{account}\n"
            f"  replay: raftfsm sim --nodes {len(self.ids)} --seed {self.seed}"
        )

    def _check_node(self, node: SimNode, ready: Ready) -> None:
        core = node.core
        if ready.soft_state is not None:
            self.trace.append(
                f"t={self.now} {node.id} {ready.soft_state.role.name} term={core.term} "
                f"leader={ready.soft_state.leader_id}"
            )
            if ready.soft_state.role is Role.leader:
                term = core.term
                other = self.leaders.setdefault(term, node.id)
                if other != node.id:
                    self.violation("Election Safety", f"{other} and {node.id} are both leaders of term {term}")
                self._check_leader_completeness(node)
        if core.role is Role.leader:
            if core.commit_index > node.last_commit:
                self._check_commit_quorum(node)
            for entry in ready.entries:
                if entry.kind is EntryKind.configuration and entry.term == core.term:
                    self._check_configuration_change(node, entry.index)
        if core.commit_index < node.last_commit:
            self.violation("commit index monotonic", f"{node.id} commit went {node.last_commit} -> {core.commit_index}")
        if core.last_applied < node.last_applied:
            self.violation("applied index monotonic", f"{node.id} applied {node.last_applied} -> {core.last_applied}")
        if core.last_applied > core.commit_index:
            self.violation("applied <= committed", f"{node.id} applied {core.last_applied} > {core.commit_index}")
        node.last_commit = core.commit_index
        node.last_applied = core.last_applied

    def _check_commit_quorum(self, node: SimNode) -> None:
        """§5.3 with membership: a leader commits an index only once a majority of the
        voters of its configuration holds that entry durably (the ground truth of every
        node's persisted log, not the leader's bookkeeping)."""
        core = node.core
        index, term = core.commit_index, core.log.term_at(core.commit_index)
        configuration = core.configuration
        holders = [
            voter for voter in configuration.voters
            if voter in self.nodes and self._holds(self.nodes[voter], index, term)
        ]
        if len(holders) < len(configuration.voters) // 2 + 1:
            self.violation(
                "commit by quorum",
                f"leader {node.id} committed index {index} (term {term}) held by only {holders} of the voters "
                f"{list(configuration.voters)}",
            )

    @staticmethod
    def _holds(node: SimNode, index: int, term: int | None) -> bool:
        log = node.core.log
        if index <= log.offset:
            return True  # compacted into a snapshot: it held the entry
        return index <= log.stable and log.term_at(index) == term

    def _check_configuration_change(self, node: SimNode, index: int) -> None:
        """Thesis §4.1, single-server changes: a leader appends a configuration entry only
        after committing an entry of its own term and every earlier configuration entry."""
        core = node.core
        consensus = core._consensus
        earlier = [i for i, _ in consensus.config_log if i < index]
        if earlier and earlier[-1] > core.commit_index:
            self.violation("one configuration change at a time",
                           f"leader {node.id} appended a configuration at {index} while the one at {earlier[-1]} "
                           f"was uncommitted (commit {core.commit_index})")
        if core.log.term_at(min(core.commit_index, index - 1)) != core.term:
            self.violation("configuration change before an own-term commit",
                           f"leader {node.id} (term {core.term}) appended a configuration at {index} before "
                           f"committing an entry of its term (commit {core.commit_index})")

    def _check_leader_completeness(self, node: SimNode) -> None:
        """§5.4: a leader's log holds every entry committed in earlier terms."""
        log = node.core.log
        for index, (term, data) in self.committed.items():
            if index <= log.offset:
                continue
            local = log.term_at(index)
            if local is None or local != term or _command_of(log.entry(index)) != data:
                self.violation(
                    "Leader Completeness",
                    f"new leader {node.id} (term {node.core.term}) lacks committed entry {index} (term {term})",
                )

    def _check_machine(self, node: SimNode, applied: int) -> None:
        """State Machine Safety for what entries cannot show: a state restored from a
        snapshot must hold exactly the committed commands up to its index."""
        machine = node.machine
        if not isinstance(machine, ListStateMachine):
            return
        expected = [self.commands[i] for i in sorted(self.commands) if i <= applied]
        if machine.commands != expected:
            self.violation(
                "State Machine Safety",
                f"{node.id}'s state machine holds {len(machine.commands)} commands at applied index {applied}, "
                f"the committed log has {len(expected)} up to there",
            )

    def check_log_matching(self) -> None:
        """§5.3 Log Matching: if two logs hold an entry with the same index and term, the
        logs are identical up to it."""
        nodes = [n for n in self.nodes.values()]
        for position, first in enumerate(nodes):
            for second in nodes[position + 1 :]:
                a, b = first.core.log, second.core.log
                low = max(a.offset, b.offset) + 1
                high = min(a.last_index, b.last_index)
                # highest index where both have the same term
                index = high
                while index >= low and a.term_at(index) != b.term_at(index):
                    index -= 1
                for i in range(index, low - 1, -1):
                    ea, eb = a.entry(i), b.entry(i)
                    if ea is not eb and (ea.term, ea.kind, ea.data) != (eb.term, eb.kind, eb.data):
                        self.violation(
                            "Log Matching",
                            f"{first.id} and {second.id} agree at index {index} but differ at {i}",
                        )

    def check(self) -> None:
        """Run the whole-cluster checkers now (the per-step ones run continuously)."""
        self.check_log_matching()
        for node in self.nodes.values():
            if node.alive:
                self._check_machine(node, node.core.last_applied)

    def _round_trips(self, index: int) -> int:
        """Round trips to bring the slowest node to `index`: its missing entries a window
        of messages at a time (a message holds up to max_entries_per_message entries and
        max_bytes_per_message bytes, at least one entry), plus a snapshot it may need, a
        window of chunks at a time."""
        config = self.config
        per_message = max(1, min(config.max_entries_per_message, config.max_bytes_per_message // 48))
        lag = max(0, index - min(self.nodes[n].core.last_applied for n in self.members()))
        round_trips = lag // (per_message * config.max_inflight) + 1
        snapshot = self.nodes[self.leader() or self.ids[0]].core._consensus.snapshot
        if snapshot is not None:
            round_trips += len(snapshot.data) // (max(1, config.max_bytes_per_message) * config.max_inflight) + 1
        return round_trips

    def check_liveness(self, within: int | None = None) -> None:
        """After faults heal: a leader within a bound, every entry of its log committed
        (the no-op takes care of earlier terms), then a new proposal applied everywhere,
        and every acknowledged proposal applied by every live node at its index."""
        bound = within or self.config.election_ticks * 20
        self.heal()
        for node_id in self.ids:
            self.restart(node_id)
        # Each phase may also take the time to ship what the slowest node lacks at the
        # configured batch, byte and window sizes: one round trip per window of messages.
        started = self.now
        allowed = bound
        while True:
            leader_id = self.leader()
            if leader_id is not None:
                core = self.nodes[leader_id].core
                if core.commit_index == core.log.last_index:
                    break
            if leader_id is not None:
                allowed = max(allowed, bound + self._round_trips(core.log.last_index) * (2 * self.latency + 1))
            if self.now >= started + allowed:
                state = "no leader"
                if leader_id is not None:
                    state = f"leader {leader_id} at commit {core.commit_index} of {core.log.last_index}"
                self.violation("liveness", f"{self.now - started} ticks after the faults healed: {state}")
            self.step_tick()
        while True:  # a leader handing over refuses proposals until the transfer ends
            try:
                index, _ = self.propose(b"liveness-probe")
                break
            except NotLeader:
                if self.now >= started + allowed + self.config.election_ticks * 4:
                    self.violation("liveness", "no leader accepts a proposal after the faults healed")
                self.step_tick()
        round_trips = self._round_trips(index)
        allowed = bound + round_trips * (2 * self.latency + 1)
        deadline = self.now + allowed
        members = [self.nodes[n] for n in self.members()]
        while not all(n.core.last_applied >= index for n in members):
            if self.now >= deadline:
                self.violation("liveness", f"proposal at {index} not applied everywhere within {allowed} ticks "
                               f"({bound} + {round_trips} round trips to ship what the slowest node lacks)")
            self.step_tick()
        for index, data in self.acknowledged.items():
            for node in members:
                restored = node.core._consensus.snapshot
                if restored is not None and index <= restored.index and index not in node.applied:
                    continue  # covered by a snapshot this incarnation restored
                got = node.applied.get(index)
                if got is None or got[1] != data:
                    self.violation(
                        "acknowledged proposal lost",
                        f"{node.id} has {got} at index {index}, acknowledged was {data!r}",
                    )
        self.check()


def _command_of(entry: Entry) -> bytes:
    """What the checkers compare: a client command's own bytes, else the entry's data."""
    if entry.kind is EntryKind.data:
        payload = decode_entry(entry.data)
        if isinstance(payload, Command):
            return payload.data
    return entry.data


class Nemesis:
    """Mixes every fault at random (seeded by the simulation) while clients propose."""

    def __init__(self, sim: Simulation, faults: Sequence[str] = ("all",), rate: float = 0.02) -> None:
        self.sim = sim
        self.rate = rate
        kinds = {"partition", "crash", "reboot", "drop", "duplicate", "reorder", "delay", "forge", "membership"}
        self.kinds = kinds if "all" in faults else set(faults) & kinds
        self.counter = 0

    def run(self, ticks: int, propose_every: int = 3) -> None:
        sim = self.sim
        rng = sim.rng
        end = sim.now + ticks
        while sim.now < end:
            ids = list(sim.ids)  # membership changes add nodes
            if rng.random() < self.rate:
                self._strike(rng, ids)
            if sim.now % propose_every == 0:
                # clients may reach a stale leader that has not noticed it was deposed
                leaders = [n for n in ids if sim.nodes[n].alive and sim.nodes[n].core.role is Role.leader]
                leader = rng.choice(leaders) if leaders else None
                if leader is not None:
                    self.counter += 1
                    with contextlib.suppress(NotLeader):
                        sim.propose(f"c{self.counter}".encode(), leader)
            sim.step_tick()
            if sim.now % 200 == 0:
                sim.check()

    def _change_membership(self, rng: random.Random) -> None:
        """Add a learner, promote one, remove a member, or hand leadership over; a refusal
        (one change at a time, not caught up, nothing of this term committed) is fine."""
        sim = self.sim
        leader = sim.leader()
        if leader is None:
            return
        core = sim.nodes[leader].core
        configuration = core.configuration
        action = rng.choice(("add", "promote", "remove", "transfer"))
        with contextlib.suppress(NotLeader, MembershipChangeRefused, ConfigurationError):
            if action == "add" and len(configuration.ids) < 8:
                new_id = sim.add_node()
                sim.change_membership(configuration.with_learner(Member(new_id)), leader)
            elif action == "promote" and configuration.learners:
                sim.change_membership(configuration.promoted(rng.choice(configuration.learners)), leader)
            elif action == "remove" and (len(configuration.voters) > 3 or configuration.learners):
                victims = [m for m in configuration.ids if len(configuration.voters) > 3 or m in configuration.learners]
                sim.change_membership(configuration.without(rng.choice(victims)), leader)
            elif action == "transfer" and len(configuration.voters) > 1:
                sim.transfer_leadership(rng.choice([v for v in configuration.voters if v != leader]), leader)

    def _strike(self, rng: random.Random, ids: list[str]) -> None:
        sim = self.sim
        choice = rng.choice(sorted(self.kinds | {"heal"}))
        if choice == "partition":
            shuffled = ids[:]
            rng.shuffle(shuffled)
            cut = rng.randrange(1, len(ids))
            sim.partition(shuffled[:cut], shuffled[cut:])
        elif choice == "crash":
            alive = [n for n in ids if sim.nodes[n].alive]
            dead = [n for n in ids if not sim.nodes[n].alive]
            if dead and rng.random() < 0.6:
                sim.restart(rng.choice(dead))
            elif len(alive) > len(ids) // 2 + 0:
                sim.crash(rng.choice(alive))
        elif choice == "reboot":
            # kill -9 and an immediate restart by a supervisor
            victim = rng.choice(ids)
            sim.crash(victim)
            sim.restart(victim)
        elif choice == "membership":
            self._change_membership(rng)
        elif choice == "forge":
            # a burst of messages no correct node sends: a stranger's, or real messages in
            # flight made impossible; every one must be dropped
            in_flight = [message for _, _, message in sim._network]
            for _ in range(rng.randrange(1, 6)):
                original = rng.choice(in_flight) if in_flight and rng.random() < 0.7 else None
                forged = impossible(rng, original) if original is not None else None
                if forged is None:
                    forged = from_stranger(rng, rng.choice(ids), rng.randrange(1 << 30))
                sim.inject(forged, delay=1 + rng.randrange(3))
        elif choice == "heal":
            sim.heal()
            for node_id in ids:
                if rng.random() < 0.5:
                    sim.restart(node_id)
        else:
            f = sim.faults
            sim.set_faults(
                drop=rng.choice((0.0, 0.05, 0.2)) if choice == "drop" else f.drop,
                duplicate=rng.choice((0.0, 0.1, 0.3)) if choice == "duplicate" else f.duplicate,
                reorder=rng.choice((0.0, 0.2, 0.5)) if choice == "reorder" else f.reorder,
                delay=rng.choice((0, 2, 5)) if choice == "delay" else f.delay,
            )
            sim.trace.append(f"t={sim.now} faults {sim.faults}")


@frozen
class Setup:
    """What one seed runs with: the node Config and the driver's compaction settings."""

    config: Config
    snapshot_every: int
    trailing_log: int

    def describe(self) -> str:
        c = self.config
        return (f"batch {c.max_entries_per_message}, window {c.max_inflight}, chunk {c.max_bytes_per_message} B, "
                f"compaction every {self.snapshot_every or 'never'}, trailing log {self.trailing_log}, "
                f"pre_vote {c.pre_vote}, check_quorum {c.check_quorum}")


def random_setup(seed: int) -> Setup:
    """A configuration drawn from the seed, so that a sweep exercises every code path:
    one-entry and large batches, windows of 1 to 16, chunks of 8 bytes to 1 MiB,
    compaction never to every 7 entries, with and without a trailing log."""
    rng = random.Random(f"setup-{seed}")
    config = Config(
        election_ticks=10, heartbeat_ticks=rng.choice((1, 2, 3)),
        max_entries_per_message=rng.choice((1, 4, 64, 512)),
        max_bytes_per_message=rng.choice((8, 64, 1024, 1 << 20)),
        max_inflight=rng.choice((1, 2, 4, 16)),
        pre_vote=rng.random() < 0.8, check_quorum=rng.random() < 0.8,
    )
    return Setup(config, rng.choice((0, 7, 25, 100)), rng.choice((0, 0, 3, 20)))


def run_seed(
    seed: int, nodes: int = 5, ticks: int = 2000, faults: Sequence[str] = ("all",),
    handlers: type[Consensus] | dict[str, type[Consensus]] = Consensus, snapshot_every: int | None = 0,
    config: Config | None = None, rate: float = 0.02, trailing_log: int = 0,
) -> Simulation:
    """One nemesis run followed by the liveness check; raises InvariantViolation. With
    `config=None` and `snapshot_every=None` the seed draws its whole setup (`random_setup`)."""
    if config is None and snapshot_every is None:
        setup = random_setup(seed)
        config, snapshot_every, trailing_log = setup.config, setup.snapshot_every, setup.trailing_log
    sim = Simulation(nodes=nodes, seed=seed, handlers=handlers, snapshot_every=snapshot_every or 0, config=config,
                     trailing_log=trailing_log)
    Nemesis(sim, faults, rate).run(ticks)
    sim.check_liveness()
    return sim


__all__ = [
    "Faults",
    "InvariantViolation",
    "ListStateMachine",
    "Nemesis",
    "Proposed",
    "Setup",
    "SimNode",
    "Simulation",
    "random_setup",
    "run_seed",
]

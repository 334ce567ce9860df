"""§7 log compaction: chunked InstallSnapshot transfer, and the simulator with frequent
compaction, small chunks and every fault."""

from __future__ import annotations

import hashlib
from pathlib import Path

import attrs
import pytest

from generated.raft_fsm import Entry, EntryKind, InstallSnapshot, InstallSnapshotReply, WireMessage
from runtime.applier import Applier
from runtime.consensus import Config, Consensus
from runtime.core import RaftCore
from runtime.membership import Configuration
from runtime.ready import HardState, Snapshot
from runtime.sim import InvariantViolation, ListStateMachine, Simulation, run_seed
from runtime.storage.sqlite import SqliteStorage

VOTERS = ("n1", "n2", "n3")


SNAPSHOTS = {100: b"AAAABBBBCCCC", 200: b"XXXXYYYYZZZZ"}

CONF3 = Configuration.voters_only(('n1', 'n2', 'n3')).encode()


def chunk(msg_id: int, index: int, offset: int, data: bytes, done: bool, term: int = 1,
          transfer: int = 1, whole: bytes | None = None) -> InstallSnapshot:
    """A chunk of the snapshot at `index` (SNAPSHOTS[index] unless `whole` is given)."""
    whole = SNAPSHOTS[index] if whole is None else whole
    return InstallSnapshot(msg_id, "n1", "n2", term, "n1", index, term, CONF3, transfer, len(whole),
                           hashlib.sha256(whole).digest(), offset, data, done)


def replies(core: RaftCore) -> list[WireMessage]:
    ready = core.ready()
    core.advance(ready)
    return list(ready.messages)


def test_s7_chunks_of_two_snapshots_are_never_spliced_together() -> None:
    follower = RaftCore("n2", VOTERS, Config(seed=1))
    follower.step(chunk(1, 100, 0, b"AAAA", False))  # S1 starts; the rest of S1 is lost
    follower.step(chunk(2, 200, 4, b"YYYY", False))  # S2's first chunk was lost too
    follower.step(chunk(3, 200, 8, b"ZZZZ", True))
    ready = follower.ready()
    assert ready.snapshot is None
    about_s2 = [m for m in ready.messages if isinstance(m, InstallSnapshotReply) and m.last_included_index == 200]
    assert about_s2 and all(not m.done and m.next_offset == 0 for m in about_s2)  # "nothing held yet"


def test_s7_a_gap_or_duplicate_reports_the_offset_reached_and_a_lost_chunk_costs_one_resend() -> None:
    follower = RaftCore("n2", VOTERS, Config(seed=1))
    follower.step(chunk(1, 100, 0, b"AAAA", False))
    follower.step(chunk(2, 100, 8, b"CCCC", True))  # the chunk at 4 is missing: held, not dropped
    follower.step(chunk(3, 100, 0, b"AAAA", False))  # a late duplicate of the first chunk
    answers = [m for m in replies(follower) if isinstance(m, InstallSnapshotReply)]
    assert [(m.next_offset, m.done) for m in answers] == [(4, False), (4, False), (4, False)]
    follower.step(chunk(4, 100, 4, b"BBBB", False))  # the one resend completes the snapshot
    follower.step(chunk(5, 100, 8, b"CCCC", True))  # a duplicate: already installed
    ready = follower.ready()
    assert ready.snapshot is not None and ready.snapshot.data == b"AAAABBBBCCCC"
    assert ready.snapshot.index == 100 and follower.commit_index == 100
    assert [m.done for m in ready.messages if isinstance(m, InstallSnapshotReply)] == [True, True]


def test_s7_snapshots_of_two_leaders_are_never_spliced_and_a_bad_checksum_is_never_installed() -> None:
    """The follower's buffer used to be keyed on (index, term) only: b'AAAA' from a term-1
    leader and b'BBBB' from a term-2 leader were installed as one snapshot."""
    follower = RaftCore("n2", VOTERS, Config(seed=1))
    first = b"AAAAaaaa"
    second = b"BBBBbbbb"
    follower.step(chunk(1, 100, 0, b"AAAA", False, term=1, whole=first))
    follower.step(attrs.evolve(chunk(2, 100, 4, b"bbbb", True, term=2, whole=second), last_included_term=1))
    assert follower.ready().snapshot is None
    # a chunk whose bytes do not match the checksum the leader sent is never installed
    follower.step(attrs.evolve(chunk(3, 100, 0, b"BBBBbbbX", True, term=2, transfer=2, whole=second),
                               last_included_term=1))
    ready = follower.ready()
    assert ready.snapshot is None
    assert [m.next_offset for m in ready.messages if isinstance(m, InstallSnapshotReply)][-1] == 0


def leader_with_snapshot(size: int, config: Config) -> tuple[RaftCore, RaftCore]:
    """n1 leads, n2 follows; n1 compacts its log so n3 (silent) needs the snapshot."""
    leader = RaftCore("n1", VOTERS, config)
    follower = RaftCore("n2", VOTERS, config)
    leader.campaign()
    for _ in range(20):
        for core, other in ((leader, follower), (follower, leader)):
            for message in replies(core):
                if message.receiver == other.id:
                    other.step(message)
    for i in range(5):
        leader.propose(b"c%d" % i)
    for _ in range(20):
        for core, other in ((leader, follower), (follower, leader)):
            for message in replies(core):
                if message.receiver == other.id:
                    other.step(message)
    assert leader.last_applied >= 6
    leader.compact(leader.last_applied, b"s" * size)
    return leader, follower


def test_s7_a_large_snapshot_goes_out_in_a_window_and_is_resent_only_after_an_election_timeout() -> None:
    config = Config(election_ticks=10, heartbeat_ticks=1, max_bytes_per_message=10, max_inflight=4, seed=3)
    leader, _ = leader_with_snapshot(1000, config)
    sent_per_tick = []
    for _ in range(25):
        leader.tick()
        sent_per_tick.append(sum(1 for m in replies(leader) if isinstance(m, InstallSnapshot) and m.receiver == "n3"))
    # one window of 4 chunks at first, nothing while waiting, one window again after ~T ticks
    assert sent_per_tick[0] == 4
    assert sum(sent_per_tick) <= 4 * 3
    assert 0 < sum(sent_per_tick[1:]) <= 8


@pytest.mark.parametrize("seed", range(12))
def test_s7_simulation_with_frequent_compaction_small_chunks_and_all_faults(seed: int) -> None:
    config = Config(election_ticks=10, heartbeat_ticks=2, max_bytes_per_message=64)
    run_seed(seed, nodes=3 + 2 * (seed % 2), ticks=1500, snapshot_every=25, config=config)


class InstallEmptyState(Consensus):
    """Planted bug: a follower installs an empty state instead of the leader's snapshot."""

    def accept_snapshot(self, message: InstallSnapshot, /) -> None:
        super().accept_snapshot(message)
        if self.received_snapshot is not None:
            empty = Applier(ListStateMachine()).snapshot()
            self.received_snapshot = attrs.evolve(self.received_snapshot, data=empty)
            self.snapshot = self.received_snapshot


def test_s7_a_wrong_installed_state_is_caught_by_the_state_machine_checker() -> None:
    config = Config(election_ticks=10, heartbeat_ticks=2)
    for seed in range(30):
        try:
            run_seed(seed, nodes=3, ticks=800, handlers=InstallEmptyState, snapshot_every=5, config=config, rate=0.05)
        except InvariantViolation as exc:
            assert "State Machine Safety" in str(exc)
            return
    pytest.fail("a follower installing an empty state went undetected in 30 seeds")


class Wire:
    """Cores wired by hand: `hold` lets a test delay or drop chosen messages."""

    def __init__(self, *cores: RaftCore) -> None:
        self.cores = {c.id: c for c in cores}
        self.held: list[WireMessage] = []
        self.sent: list[WireMessage] = []

    def round(self, hold: object = None) -> None:
        for core in list(self.cores.values()):
            core.tick()
            for message in replies(core):
                self.sent.append(message)
                if hold is not None and hold(message):  # type: ignore[operator]
                    self.held.append(message)
                elif message.receiver in self.cores:
                    self.cores[message.receiver].step(message)


def test_s7_a_delayed_reply_from_before_a_restart_does_not_stall_the_transfer() -> None:
    """A reply sent before the follower restarted used to push the leader's acknowledged
    offset past what the follower held; every later reply was then ignored and the transfer
    never finished (follower commit 2, leader 41 after 2,000 ticks)."""
    config = Config(election_ticks=10, heartbeat_ticks=1, max_bytes_per_message=10, max_inflight=4, seed=3)
    leader, n2 = leader_with_snapshot(400, config)
    n3 = RaftCore("n3", VOTERS, config)
    wire = Wire(leader, n2, n3)
    delayed: list[WireMessage] = []

    def hold_one_progress_reply(message: WireMessage) -> bool:
        if not delayed and isinstance(message, InstallSnapshotReply) and message.next_offset >= 30:
            delayed.append(message)
            return True
        return False

    for _ in range(3):
        wire.round(hold_one_progress_reply)
    assert delayed, "no reply to delay"
    wire.cores["n3"] = n3 = RaftCore("n3", VOTERS, config)  # restarted: its partial snapshot is gone
    for _ in range(5):
        wire.round()
    leader.step(delayed[0])  # the reply from before the restart arrives now
    for _ in range(300):
        wire.round()
        if n3.commit_index >= leader.log.offset:
            break
    assert n3.commit_index >= leader.log.offset, (n3.commit_index, leader.commit_index, leader.status())


def test_s7_one_lost_chunk_costs_one_resend_not_a_window() -> None:
    """With chunk 0 lost, every later chunk of the window used to be answered "start over"
    and each answer resent the whole window: 296 messages for a 53-chunk snapshot."""
    config = Config(election_ticks=10, heartbeat_ticks=1, max_bytes_per_message=10, max_inflight=16, seed=3)
    leader, n2 = leader_with_snapshot(530, config)
    n3 = RaftCore("n3", VOTERS, config)
    wire = Wire(leader, n2, n3)
    dropped: list[WireMessage] = []

    def drop_first_chunk(message: WireMessage) -> bool:
        if not dropped and isinstance(message, InstallSnapshot) and message.offset == 0:
            dropped.append(message)
            return True
        return False

    for _ in range(200):
        wire.round(drop_first_chunk)
        if n3.commit_index >= leader.log.offset:
            break
    assert n3.commit_index >= leader.log.offset
    chunks = [m for m in wire.sent if isinstance(m, InstallSnapshot) and m.receiver == "n3"]
    assert len(chunks) <= 53 + 2, f"{len(chunks)} chunks sent for a 53-chunk snapshot"


@pytest.mark.parametrize("seed", [1071, 1072])
def test_s7_tiny_chunks_small_window_frequent_compaction_stay_live(seed: int) -> None:
    """The configuration of the reported stalls: 5 nodes, 8-byte chunks, a window of 2,
    compaction every 7 entries."""
    config = Config(election_ticks=10, heartbeat_ticks=2, max_bytes_per_message=8, max_inflight=2)
    run_seed(seed, nodes=5, ticks=2000, snapshot_every=7, config=config)


def test_compaction_keeps_a_trailing_log_so_a_follower_a_little_behind_needs_no_snapshot() -> None:
    """Compaction used to cut the log at the applied index: a follower one entry behind
    needed a whole snapshot (10 compactions with jitter caused 7 full transfers)."""
    sim = Simulation(nodes=3, seed=5, snapshot_every=10, trailing_log=20)
    sim.run(100)
    leader = sim.leader()
    assert leader is not None
    lagger = next(n for n in sim.ids if n != leader)
    sim.partition([lagger], [n for n in sim.ids if n != lagger])
    for number in range(12):  # behind by less than the trailing log, across a compaction
        sim.propose(b"x%d" % number)
        sim.run(2)
    sim.run(20)
    assert sim.nodes[leader].core._consensus.snapshot is not None
    snapshot_index = sim.nodes[leader].core._consensus.snapshot.index
    assert sim.nodes[leader].core.log.offset < sim.nodes[lagger].core.last_applied < snapshot_index
    chunks: list[WireMessage] = []
    original = sim._send

    def spy(message: WireMessage) -> None:
        if isinstance(message, InstallSnapshot):
            chunks.append(message)
        original(message)

    sim._send = spy  # type: ignore[method-assign]
    sim.heal()
    sim.run(60)
    assert sim.nodes[lagger].core.last_applied >= snapshot_index
    assert chunks == [], "a follower a few entries behind was sent a snapshot"
    sim.check()


def test_a_trailing_log_survives_a_restart_on_sqlite(tmp_path: Path) -> None:
    storage = SqliteStorage(tmp_path, node_id="n1", cluster_id="c")
    entries = [Entry(1, i, EntryKind.data, b"e%d" % i) for i in range(1, 31)]
    storage.persist(entries, HardState(1, "n1", 30), None)
    storage.compact(Snapshot(25, 1, Configuration.voters_only(VOTERS), b"state@25"), 21)  # keep 21..30
    storage.close()
    reopened = SqliteStorage(tmp_path, node_id="n1", cluster_id="c")
    state = reopened.initial_state()
    assert [e.index for e in state.entries] == list(range(21, 31))
    core = RaftCore("n1", VOTERS, Config(seed=1), state)
    assert (core.log.offset, core.log.last_index, core.last_applied, core.commit_index) == (21, 30, 25, 30)
    assert core.log.term_at(22) == 1
    reopened.persist([Entry(2, 31, EntryKind.data, b"more")], None, None)
    reopened.close()

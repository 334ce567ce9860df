"""Cluster scenarios on the deterministic simulator, after the classic Raft lab tests
(2A election, 2B agreement, 2C persistence/Figure 8). Section numbers refer to the
extended Raft paper. Every scenario uses fixed seeds and names the seed in its messages.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Iterable

import pytest

from generated.raft_fsm import Role
from runtime.errors import NotLeader
from runtime.sim import Simulation

LIVENESS = 400  # ticks; with election_ticks=10 an election takes at most a few dozen


# -- helpers ---------------------------------------------------------------------------------
class LeaderLog:
    """An independent Election Safety watcher: term -> the set of nodes seen leading it."""

    def __init__(self) -> None:
        self.by_term: dict[int, set[str]] = {}

    def observe(self, sim: Simulation) -> None:
        for node in sim.nodes.values():
            if node.alive and node.core.role is Role.leader:
                leaders = self.by_term.setdefault(node.core.term, set())
                leaders.add(node.id)
                assert len(leaders) == 1, f"seed {sim.seed}: two leaders in term {node.core.term}: {leaders}"


def run(sim: Simulation, ticks: int, watch: LeaderLog | None = None) -> None:
    for _ in range(ticks):
        sim.step_tick()
        if watch is not None:
            watch.observe(sim)


def agreed_leader(sim: Simulation, among: Iterable[str]) -> str | None:
    """The leader every live node of `among` follows in the same term, if there is one."""
    live = [sim.nodes[n] for n in among if sim.nodes[n].alive]
    leaders = [n for n in live if n.core.role is Role.leader]
    if len(leaders) != 1:
        return None
    leader = leaders[0]
    if all(n.core.term == leader.core.term and n.core.leader_id == leader.id for n in live):
        return leader.id
    return None


def wait_leader(
    sim: Simulation, among: Iterable[str] | None = None, within: int = LIVENESS, watch: LeaderLog | None = None
) -> str:
    among = tuple(among or sim.ids)
    for _ in range(within):
        leader = agreed_leader(sim, among)
        if leader is not None:
            return leader
        sim.step_tick()
        if watch is not None:
            watch.observe(sim)
    raise AssertionError(f"seed {sim.seed}: no agreed leader among {among} within {within} ticks (t={sim.now})")


def wait_applied(sim: Simulation, index: int, nodes: Iterable[str], within: int = LIVENESS) -> None:
    nodes = tuple(nodes)
    for _ in range(within):
        if all(sim.nodes[n].core.last_applied >= index for n in nodes):
            return
        sim.step_tick()
    state = {n: sim.nodes[n].core.last_applied for n in nodes}
    raise AssertionError(f"seed {sim.seed}: index {index} not applied on {nodes} within {within} ticks: {state}")


def propose_on_leader(sim: Simulation, command: bytes, within: int = LIVENESS) -> tuple[int, int]:
    """Like a client: retry on NotLeader until some leader accepts the command."""
    for _ in range(within):
        leader = agreed_leader(sim, [n for n in sim.ids if sim.nodes[n].alive])
        if leader is not None:
            return sim.propose(command, leader)
        sim.step_tick()
    raise AssertionError(f"seed {sim.seed}: no leader accepted {command!r} within {within} ticks")


def commands(sim: Simulation, node_id: str) -> list[bytes]:
    return list(sim.nodes[node_id].machine.commands)  # type: ignore[attr-defined]


def log_view(sim: Simulation, node_id: str) -> list[tuple[int, int, bytes]]:
    return [(e.index, e.term, e.data) for e in sim.nodes[node_id].core.log.entries]


def followers(sim: Simulation, leader: str) -> list[str]:
    return [n for n in sim.ids if n != leader]


# -- 2A: elections ---------------------------------------------------------------------------
@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_2A_initial_election(seed: int) -> None:
    """§5.2 TestInitialElection: one leader is elected, every node agrees on its term, and
    with no faults the leader and the term stay the same."""
    sim = Simulation(nodes=3, seed=seed)
    watch = LeaderLog()
    leader = wait_leader(sim, watch=watch)
    term = sim.nodes[leader].core.term
    assert {n.core.term for n in sim.nodes.values()} == {term}, f"seed {seed}"
    for _ in range(10):
        run(sim, 30, watch)
        assert agreed_leader(sim, sim.ids) == leader, f"seed {seed}: leadership changed without faults"
        assert {n.core.term for n in sim.nodes.values()} == {term}, f"seed {seed}: term changed without faults"
    sim.check()


@pytest.mark.parametrize("seed", [11, 12, 13])
def test_2A_reelection(seed: int) -> None:
    """§5.2 TestReElection: isolating the leader gets a new one elected by the majority;
    the old leader rejoins as a follower; no quorum, no leader."""
    sim = Simulation(nodes=3, seed=seed)
    watch = LeaderLog()
    old = wait_leader(sim, watch=watch)
    old_term = sim.nodes[old].core.term
    sim.isolate(old)
    new = wait_leader(sim, among=followers(sim, old), watch=watch)
    assert new != old and sim.nodes[new].core.term > old_term, f"seed {seed}"

    sim.heal()
    leader = wait_leader(sim, watch=watch)
    assert sim.nodes[old].core.role is Role.follower, f"seed {seed}: old leader did not step down"
    assert sim.nodes[old].core.term == sim.nodes[leader].core.term, f"seed {seed}"

    # no majority anywhere: within a few election timeouts nobody leads (CheckQuorum)
    sim.partition(*[[n] for n in sim.ids])
    run(sim, 60, watch)
    assert [n for n in sim.ids if sim.nodes[n].core.role is Role.leader] == [], f"seed {seed}"
    # a majority again: a leader again
    sim.partition([sim.ids[0], sim.ids[1]], [sim.ids[2]])
    wait_leader(sim, among=sim.ids[:2], watch=watch)
    sim.heal()
    wait_leader(sim, watch=watch)
    sim.check()
    sim.check_liveness()


@pytest.mark.parametrize("seed", [21, 22, 23])
def test_2A_many_elections_seven_nodes(seed: int) -> None:
    """§5.2 TestManyElections: 7 nodes; repeatedly isolate 3 random nodes. At most one
    leader per term, always, and a leader whenever a majority (4) is connected."""
    sim = Simulation(nodes=7, seed=seed)
    rng = random.Random(seed)
    watch = LeaderLog()
    wait_leader(sim, watch=watch)
    for round_ in range(15):
        cut = rng.sample(sim.ids, 3)
        majority = [n for n in sim.ids if n not in cut]
        sim.partition(majority, *[[n] for n in cut])
        leader = wait_leader(sim, among=majority, watch=watch)
        assert leader in majority, f"seed {seed} round {round_}"
        run(sim, 20, watch)
        sim.check()
        sim.heal()
        run(sim, rng.randrange(5, 30), watch)
    wait_leader(sim, watch=watch)
    assert all(len(v) == 1 for v in watch.by_term.values()), f"seed {seed}: {watch.by_term}"
    assert all(sim.leaders.get(t) in v for t, v in watch.by_term.items()), f"seed {seed}"
    sim.check()
    sim.check_liveness()


def test_2A_election_message_count() -> None:
    """§5.2 message economy: with no faults, electing a leader of 3 nodes (and having the
    followers learn it) takes fewer than 30 messages."""
    for seed in range(10):
        sim = Simulation(nodes=3, seed=seed)
        wait_leader(sim)
        assert sim.messages_sent < 30, f"seed {seed}: election took {sim.messages_sent} messages"
        sim.check()


def test_2A_idle_heartbeats_message_bound() -> None:
    """§5.2 heartbeats: an idle 3-node cluster sends only heartbeats and their replies,
    at most (100/heartbeat_ticks + 2) * 2 peers * 2 messages over 100 ticks."""
    for seed in (31, 32, 33):
        sim = Simulation(nodes=3, seed=seed)
        wait_leader(sim)
        run(sim, 20)
        before = sim.messages_sent
        leader = agreed_leader(sim, sim.ids)
        run(sim, 100)
        sent = sim.messages_sent - before
        hb = sim.config.heartbeat_ticks
        assert sent <= (100 // hb + 2) * 2 * 2, f"seed {seed}: {sent} messages in 100 idle ticks"
        assert sent >= (100 // hb) * 2, f"seed {seed}: only {sent} messages: heartbeats missing"
        assert agreed_leader(sim, sim.ids) == leader, f"seed {seed}"
        sim.check()


# -- 2B: agreement ---------------------------------------------------------------------------
@pytest.mark.parametrize("seed", [41, 141])
def test_2B_basic_agree(seed: int) -> None:
    """§5.3 TestBasicAgree: each proposal is applied by every node, at the expected index,
    in order."""
    sim = Simulation(nodes=5, seed=seed)
    wait_leader(sim)
    expected: list[bytes] = []
    first_index = None
    for i in range(10):
        command = f"agree-{i}".encode()
        index, _ = propose_on_leader(sim, command)
        first_index = first_index or index
        assert index == first_index + i, f"seed {seed}: proposal {i} got index {index}"
        wait_applied(sim, index, sim.ids)
        expected.append(command)
        for node in sim.ids:
            assert commands(sim, node) == expected, f"seed {seed}: {node} applied {commands(sim, node)}"
    sim.check()
    sim.check_liveness()


@pytest.mark.parametrize("seed", [42, 142])
def test_2B_follower_failure(seed: int) -> None:
    """§5.3 TestFollowerFailure: with one of 3 crashed the other two still commit; with two
    crashed the leader cannot commit (its commit index does not advance)."""
    sim = Simulation(nodes=3, seed=seed)
    leader = wait_leader(sim)
    index, _ = sim.propose(b"one")
    wait_applied(sim, index, sim.ids)

    first, second = followers(sim, leader)
    sim.crash(first)
    remaining = [leader, second]
    leader = wait_leader(sim, among=remaining)
    index, _ = sim.propose(b"two", leader)
    wait_applied(sim, index, remaining)

    survivor = leader
    sim.crash(next(n for n in remaining if n != survivor))
    commit = sim.nodes[survivor].core.commit_index
    with_leader = sim.nodes[survivor].core.role is Role.leader
    if with_leader:
        index, _ = sim.propose(b"three", survivor)
    run(sim, 100)
    assert sim.nodes[survivor].core.commit_index == commit, f"seed {seed}: committed without a quorum"
    assert b"three" not in commands(sim, survivor), f"seed {seed}"
    sim.check()
    sim.check_liveness()
    # after the restart the uncommitted proposal may or may not survive; agreement resumes
    assert len({tuple(commands(sim, n)) for n in sim.ids}) == 1, f"seed {seed}"


@pytest.mark.parametrize("seed", [43, 143])
def test_2B_leader_failure(seed: int) -> None:
    """§5.2/§5.3 TestLeaderFailure: crash the leader, a new one commits; crash that one
    too and nothing more commits."""
    sim = Simulation(nodes=3, seed=seed)
    leader = wait_leader(sim)
    index, _ = sim.propose(b"one")
    wait_applied(sim, index, sim.ids)

    sim.crash(leader)
    rest = followers(sim, leader)
    leader = wait_leader(sim, among=rest)
    index, _ = sim.propose(b"two", leader)
    wait_applied(sim, index, rest)

    sim.crash(leader)
    survivor = next(n for n in rest if n != leader)
    commit = sim.nodes[survivor].core.commit_index
    with pytest.raises(NotLeader):
        sim.propose(b"three", survivor)
    run(sim, 100)
    assert sim.nodes[survivor].core.commit_index == commit, f"seed {seed}"
    assert sim.nodes[survivor].core.role is not Role.leader, f"seed {seed}: a leader of one out of three"
    sim.check()
    sim.check_liveness()


@pytest.mark.parametrize("seed", [44, 144])
def test_2B_fail_agree(seed: int) -> None:
    """§5.3 TestFailAgree: a disconnected follower misses entries and catches up on all of
    them after it reconnects."""
    sim = Simulation(nodes=3, seed=seed)
    leader = wait_leader(sim)
    sim.propose(b"before")
    lagger = followers(sim, leader)[0]
    sim.isolate(lagger)
    last = 0
    for i in range(5):
        last, _ = propose_on_leader(sim, f"missed-{i}".encode())
    wait_applied(sim, last, [n for n in sim.ids if n != lagger])
    assert sim.nodes[lagger].core.last_applied < last, f"seed {seed}"
    sim.heal()
    index, _ = propose_on_leader(sim, b"after")
    wait_applied(sim, index, sim.ids)
    expected = commands(sim, leader)
    assert expected[-7:] == [b"before", *[f"missed-{i}".encode() for i in range(5)], b"after"], f"seed {seed}"
    assert all(commands(sim, n) == expected for n in sim.ids), f"seed {seed}"
    sim.check()
    sim.check_liveness()


@pytest.mark.parametrize("seed", [45, 145])
def test_2B_fail_no_agree(seed: int) -> None:
    """§5.3 TestFailNoAgree: 5 nodes, 3 followers disconnected: the leader's proposal is not
    committed; after the partition heals a leader's log wins and agreement continues."""
    sim = Simulation(nodes=5, seed=seed)
    leader = wait_leader(sim)
    index, _ = sim.propose(b"first")
    wait_applied(sim, index, sim.ids)
    base = index
    rest = followers(sim, leader)
    sim.partition([leader, rest[0]], *[[n] for n in rest[1:]])
    index, _ = sim.propose(b"minority", leader)
    assert index == base + 1, f"seed {seed}"
    run(sim, 100)
    for node in sim.nodes.values():
        assert node.core.commit_index <= base, f"seed {seed}: {node.id} committed without a quorum"
        assert b"minority" not in node.machine.commands, f"seed {seed}"  # type: ignore[attr-defined]
    sim.heal()
    new_index, _ = propose_on_leader(sim, b"after-heal")
    wait_applied(sim, new_index, sim.ids)
    assert new_index in (base + 2, base + 3), f"seed {seed}: unexpected index {new_index}"
    reference = commands(sim, sim.ids[0])
    assert reference[-1] == b"after-heal"
    assert all(commands(sim, n) == reference for n in sim.ids), f"seed {seed}"
    sim.check()
    sim.check_liveness()


@pytest.mark.parametrize("seed", [46, 146])
def test_2B_concurrent_starts(seed: int) -> None:
    """§5.3 TestConcurrentStarts: many proposals in one tick all commit, each at a distinct
    index, and every node applies the same command at each index."""
    sim = Simulation(nodes=3, seed=seed)
    leader = wait_leader(sim)
    placed = {}
    for i in range(50):
        command = f"concurrent-{i}".encode()
        index, term = sim.propose(command, leader)
        placed[index] = (term, command)
    assert len(placed) == 50, f"seed {seed}: indexes not distinct"
    assert sorted(placed) == list(range(min(placed), min(placed) + 50)), f"seed {seed}"
    wait_applied(sim, max(placed), sim.ids)
    for node in sim.nodes.values():
        for index, value in placed.items():
            assert node.applied.get(index) == value, f"seed {seed}: {node.id} index {index}"
    sim.check()
    sim.check_liveness()


@pytest.mark.parametrize("seed", [47, 147])
def test_2B_rejoin_of_partitioned_leader(seed: int) -> None:
    """§5.3/§5.4 TestRejoin: a leader cut off in a minority accepts proposals that must be
    discarded; the majority moves on; after rejoining, the old leader holds the majority's
    log and none of its minority entries is ever applied."""
    sim = Simulation(nodes=3, seed=seed)
    old = wait_leader(sim)
    index, _ = sim.propose(b"101")
    wait_applied(sim, index, sim.ids)

    sim.isolate(old)
    for i in range(3):
        sim.propose(f"lost-{i}".encode(), old)
    rest = followers(sim, old)
    second = wait_leader(sim, among=rest)
    index, _ = sim.propose(b"103", second)
    wait_applied(sim, index, rest)

    # the new leader goes away, the old one comes back with the remaining follower
    sim.partition([old, next(n for n in rest if n != second)], [second])
    index, _ = propose_on_leader_in(sim, b"104", [old, next(n for n in rest if n != second)])
    sim.heal()
    index, _ = propose_on_leader(sim, b"105")
    wait_applied(sim, index, sim.ids)
    reference = log_view(sim, sim.ids[0])
    for node in sim.ids:
        assert log_view(sim, node) == reference, f"seed {seed}: {node}'s log differs"
        assert not [c for c in commands(sim, node) if c.startswith(b"lost")], f"seed {seed}: {node}"
    assert commands(sim, old)[-4:] == [b"101", b"103", b"104", b"105"], f"seed {seed}"
    sim.check()
    sim.check_liveness()


def propose_on_leader_in(sim: Simulation, command: bytes, group: list[str]) -> tuple[int, int]:
    leader = wait_leader(sim, among=group)
    index, term = sim.propose(command, leader)
    wait_applied(sim, index, group)
    return index, term


@pytest.mark.parametrize("seed", [48, 148])
def test_2B_backup_fast_backoff(seed: int) -> None:
    """§5.3 TestBackup: a leader in a minority accumulates 60 uncommitted entries while the
    majority commits 60 others; after the heal the divergent suffixes are replaced quickly
    (conflict hints) and all logs converge."""
    sim = Simulation(nodes=5, seed=seed)
    old = wait_leader(sim)
    index, _ = sim.propose(b"base")
    wait_applied(sim, index, sim.ids)
    rest = followers(sim, old)
    minority = [old, rest[0]]
    majority = rest[1:]
    sim.partition(minority, majority)
    for i in range(60):
        sim.propose(f"stale-{i}".encode(), old)
    run(sim, 5)
    assert sim.nodes[rest[0]].core.log.last_index >= index + 60, f"seed {seed}: minority follower lacks entries"
    leader = wait_leader(sim, among=majority)
    last = 0
    for i in range(60):
        last, _ = sim.propose(f"fresh-{i}".encode(), leader)
    wait_applied(sim, last, majority)
    sim.heal()
    sent = sim.messages_sent
    start = sim.now
    final, _ = propose_on_leader(sim, b"final")
    wait_applied(sim, final, sim.ids, within=100)
    assert sim.now - start <= 100, f"seed {seed}"
    assert sim.messages_sent - sent < 400, f"seed {seed}: {sim.messages_sent - sent} messages to converge"
    reference = log_view(sim, leader)
    for node in sim.ids:
        assert log_view(sim, node)[: len(reference)] == reference, f"seed {seed}: {node}"
        applied = commands(sim, node)
        assert not [c for c in applied if c.startswith(b"stale")], f"seed {seed}: {node} applied stale entries"
        assert applied[-61:] == [*[f"fresh-{i}".encode() for i in range(60)], b"final"], f"seed {seed}: {node}"
    sim.check()
    sim.check_liveness()


# -- 2C: persistence, Figure 8, churn --------------------------------------------------------
def _figure8(seed: int, unreliable: bool, rounds: int) -> Simulation:
    """TestFigure8(Unreliable): propose on the leader, let it run a little, crash the
    leader often; keep a majority... or not: restart crashed nodes at random."""
    sim = Simulation(nodes=5, seed=seed)
    rng = random.Random(seed)
    if unreliable:
        sim.set_faults(drop=0.1, reorder=0.3, duplicate=0.1, delay=3)
    watch = LeaderLog()
    for round_ in range(rounds):
        leader = sim.leader()
        if leader is not None:
            sim.propose(f"f8-{round_}".encode(), leader)
        run(sim, rng.choice([1, 2, 5, 10, 20, 40]), watch)
        leader = sim.leader()
        if leader is not None and rng.random() < 0.5:
            sim.crash(leader)
        alive = [n for n in sim.ids if sim.nodes[n].alive]
        if len(alive) < 3:
            dead = [n for n in sim.ids if not sim.nodes[n].alive]
            sim.restart(rng.choice(dead))
        sim.check()
    return sim


@pytest.mark.parametrize("seed", [51, 52, 53, 54, 55])
def test_2C_figure8(seed: int) -> None:
    """§5.4.2 TestFigure8: leaders crash repeatedly while proposing; the Figure 8 scenario
    must never commit an entry that is later overwritten (continuous checkers + sim.check
    each round), and after the faults a leader commits everything (liveness)."""
    sim = _figure8(seed, unreliable=False, rounds=250)
    sim.check()
    sim.check_liveness()
    assert sim.acknowledged, f"seed {seed}: no proposal ever committed"


@pytest.mark.parametrize("seed", [61, 62, 63, 64, 65])
def test_2C_figure8_unreliable(seed: int) -> None:
    """§5.4.2 TestFigure8Unreliable: as Figure 8 with drop=0.1, reorder=0.3,
    duplicate=0.1 and delays of up to 3 ticks."""
    sim = _figure8(seed, unreliable=True, rounds=250)
    sim.check()
    sim.check_liveness()
    assert sim.acknowledged, f"seed {seed}: no proposal ever committed"


def _churn(seed: int, unreliable: bool, rounds: int) -> Simulation:
    """Crash and restart random nodes (any of them, sometimes a majority) while clients
    propose on whatever node they think leads."""
    sim = Simulation(nodes=5, seed=seed)
    rng = random.Random(seed)
    if unreliable:
        sim.set_faults(drop=0.1, reorder=0.3, duplicate=0.1, delay=3)
    watch = LeaderLog()
    counter = 0
    for _ in range(rounds):
        for _ in range(rng.randrange(1, 4)):
            target = rng.choice(sim.ids)
            counter += 1
            if sim.nodes[target].alive:
                with contextlib.suppress(NotLeader):
                    sim.propose(f"churn-{counter}".encode(), target)
        if rng.random() < 0.2:
            victim = rng.choice(sim.ids)
            if sim.nodes[victim].alive:
                sim.crash(victim)
            else:
                sim.restart(victim)
        if rng.random() < 0.2:
            for node_id in sim.ids:
                sim.restart(node_id)
        run(sim, rng.randrange(1, 15), watch)
        sim.check()
    return sim


@pytest.mark.parametrize("seed", [71, 72, 73, 74])
def test_2C_reliable_churn(seed: int) -> None:
    """§5 TestReliableChurn: nodes crash and restart at random (losing what they did not
    persist) while commands are proposed; safety holds throughout and, once all nodes are
    back, the cluster commits and applies everywhere (check_liveness)."""
    sim = _churn(seed, unreliable=False, rounds=300)
    sim.check()
    sim.check_liveness()
    assert sim.acknowledged, f"seed {seed}: no proposal ever committed"


@pytest.mark.parametrize("seed", [81, 82, 83, 84])
def test_2C_unreliable_churn(seed: int) -> None:
    """§5 TestUnreliableChurn: churn over a network that drops, duplicates, reorders and
    delays messages."""
    sim = _churn(seed, unreliable=True, rounds=300)
    sim.check()
    sim.check_liveness()
    assert sim.acknowledged, f"seed {seed}: no proposal ever committed"


@pytest.mark.parametrize("seed", [91, 191])
def test_2C_persist_across_full_restart(seed: int) -> None:
    """§5 Figure 2 persistent state (TestPersist1): crash and restart every node; committed
    commands survive and the cluster continues from them."""
    sim = Simulation(nodes=3, seed=seed)
    wait_leader(sim)
    index, _ = propose_on_leader(sim, b"durable")
    wait_applied(sim, index, sim.ids)
    terms = {n: sim.nodes[n].core.term for n in sim.ids}
    for node_id in sim.ids:
        sim.crash(node_id)
    for node_id in sim.ids:
        sim.restart(node_id)
        assert sim.nodes[node_id].core.term == terms[node_id], f"seed {seed}: {node_id} forgot its term"
    index2, _ = propose_on_leader(sim, b"after-restart")
    wait_applied(sim, index2, sim.ids)
    for node_id in sim.ids:
        assert commands(sim, node_id)[-2:] == [b"durable", b"after-restart"], f"seed {seed}: {node_id}"
    sim.check()
    sim.check_liveness()

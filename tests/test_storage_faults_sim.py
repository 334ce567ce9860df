"""Principle 4: a node whose storage fails moves to the error role, stops speaking, and
the rest of the cluster keeps committing; its persisted state restarts cleanly."""

from __future__ import annotations

import pytest

from generated.raft_fsm import Role
from runtime.sim import Simulation
from runtime.storage.faulty import FaultyStorage


def run_until(sim: Simulation, condition, ticks: int = 500) -> None:  # type: ignore[no-untyped-def]
    for _ in range(ticks):
        if condition():
            return
        sim.step_tick()
    raise AssertionError(f"condition not reached within {ticks} ticks (seed {sim.seed})")


@pytest.mark.parametrize(("kind", "cause"), [("io", "I/O error"), ("disk_full", "disk full"), ("fsync", "fsync failed")])
def test_storage_failure_moves_node_to_error_and_cluster_keeps_committing(kind: str, cause: str, caplog) -> None:  # type: ignore[no-untyped-def]
    sim = Simulation(nodes=3, seed=11)
    run_until(sim, lambda: sim.leader() is not None)
    leader = sim.leader()
    victim = next(n for n in sim.ids if n != leader)
    node = sim.nodes[victim]
    node.disk = FaultyStorage(node.disk)
    node.disk.fail_next(kind)  # type: ignore[union-attr]
    index, _ = sim.propose(b"before-failure")
    run_until(sim, lambda: node.core.role is Role.error)
    assert node.core.record.halt_reason is not None and cause in node.core.record.halt_reason
    assert sum("entering the error role" in r.getMessage() for r in caplog.records) == 1
    sent_before = sim.messages_sent
    # the failed node says nothing more, the others still commit
    survivors = [n for n in sim.ids if n != victim]
    for i in range(5):
        sim.propose(f"after-{i}".encode())
    run_until(sim, lambda: all(sim.nodes[n].core.last_applied >= index + 5 for n in survivors))
    assert not node.core.has_ready()
    assert all(m.sender != victim for _, _, m in sim._network)
    assert sim.messages_sent > sent_before
    sim.check()
    # its data directory is still valid: restart from what it persisted and catch up
    sim.crash(victim)
    node.disk = node.disk.inner  # type: ignore[union-attr]
    sim.restart(victim)
    restarted = sim.nodes[victim]
    run_until(sim, lambda: restarted.core.last_applied >= index + 5)
    sim.check_liveness()

"""Every checker bites: each planted Raft bug is caught by the simulator within a bounded
number of seeds, while the stock handlers pass the same seeds."""

from __future__ import annotations

import pytest

from runtime.consensus import Config, Consensus
from runtime.sim import InvariantViolation, run_seed
from tests.planted_bugs import PLANTED_BUGS

# Small messages and a single in-flight message widen the windows in which these bugs
# show; a high fault rate gives many elections, crashes and reboots per run. PreVote and
# CheckQuorum are off: PreVote screens candidates with the same up-to-date rule and makes
# competing elections rare, which hides the vote-granting bugs it is meant to help hunt;
# CheckQuorum brings leader stickiness (vote requests ignored while a leader is live) and
# retires isolated leaders within one election timeout, so the deposed-leader races of
# Figure 8 and of stale leaders become rare too.
CONFIG = Config(election_ticks=10, heartbeat_ticks=2, max_entries_per_message=1, max_inflight=1, pre_vote=False,
                check_quorum=False)
SEED_BUDGET = 150
CLASSIC_FAULTS = ("partition", "crash", "reboot", "drop", "duplicate", "reorder", "delay")
"""The classic bugs are hunted without membership changes and forged messages, which
spread the nemesis's attention thinner; the membership bugs need the membership nemesis."""
MEMBERSHIP_BUGS = frozenset({"two_membership_changes_at_once", "membership_change_before_own_term_commit",
                             "count_removed_voter"})


def first_violation(handlers: type[Consensus], seeds: range, faults: tuple[str, ...] = CLASSIC_FAULTS,
                    ) -> tuple[int, str] | None:
    for seed in seeds:
        try:
            run_seed(seed, nodes=3, ticks=1000, handlers=handlers, config=CONFIG, rate=0.1, faults=faults)
        except InvariantViolation as exc:
            return seed, str(exc)
    return None


@pytest.mark.parametrize("name", sorted(PLANTED_BUGS))
def test_planted_bug_is_caught(name: str) -> None:
    faults = ("all",) if name in MEMBERSHIP_BUGS else CLASSIC_FAULTS
    found = first_violation(PLANTED_BUGS[name], range(SEED_BUDGET), faults)
    assert found is not None, f"planted bug {name!r} went undetected in {SEED_BUDGET} seeds"
    seed, account = found
    print(f"{name}: caught at seed {seed}: {account.splitlines()[0]}")


@pytest.mark.parametrize("faults", [CLASSIC_FAULTS, ("all",)], ids=["classic", "all"])
def test_stock_handlers_pass_the_bug_hunting_seeds(faults: tuple[str, ...]) -> None:
    found = first_violation(Consensus, range(40), faults)
    assert found is None, found

"""Events per second through the raftfsm dispatcher and through transitions.Machine,
on the same event stream with the same (no-op) callbacks, side by side.

    python benchmarks/dispatch.py [--events N] [--seed S]
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import transitions

from benchmarks.common import table, write_json
from generated.raft_fsm import CALLBACK_TAKES_PAYLOAD, EVENT_PAYLOAD, STATES, TRANSITIONS, Event
from runtime.dispatch import Dispatcher
from runtime.record import NodeRecord


class NoOpHandlers:
    """Every guard answers from a fixed pattern; every action does nothing."""

    def __init__(self) -> None:
        self.flip = False

    def __getattr__(self, name: str) -> Any:
        if name not in CALLBACK_TAKES_PAYLOAD:
            raise AttributeError(name)

        def callback(*args: object) -> bool:
            self.flip = not self.flip
            return self.flip

        setattr(self, name, callback)  # later lookups skip __getattr__
        return callback


def stream(count: int, seed: int) -> list[tuple[Event, object]]:
    rng = random.Random(seed)
    events = [e for e in Event if e is not Event.fatal_error]  # stay out of the final role
    payload = object()
    out = []
    for _ in range(count):
        event = rng.choice(events)
        out.append((event, payload if EVENT_PAYLOAD[event] is not None else None))
    return out


def run_dispatcher(events: list[tuple[Event, object]]) -> float:
    dispatcher = Dispatcher(NodeRecord(id="n1", peers={}), NoOpHandlers())  # type: ignore[arg-type]
    fire = dispatcher.fire
    start = time.perf_counter()
    for event, payload in events:
        fire(event, payload)
    return time.perf_counter() - start


def run_transitions(events: list[tuple[Event, object]]) -> float:
    model = NoOpHandlers()
    transitions.Machine(
        model=model, states=list(STATES), transitions=[dict(r) for r in TRANSITIONS],
        initial="follower", auto_transitions=False, ignore_invalid_triggers=True,
    )
    trigger = model.trigger  # type: ignore[attr-defined]
    named = [(e.name, p) for e, p in events]
    start = time.perf_counter()
    for name, payload in named:
        if payload is None:
            trigger(name)
        else:
            trigger(name, payload)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    events = stream(args.events, args.seed)
    # best of three, each on the same stream
    ours = min(run_dispatcher(events) for _ in range(3))
    reference = min(run_transitions(events[: args.events // 10]) for _ in range(3)) * 10
    rows = [
        ["raftfsm Dispatcher", args.events / ours, ours / args.events * 1e6],
        ["transitions.Machine", args.events / reference, reference / args.events * 1e6],
    ]
    print(table(["dispatcher", "events/s", "µs/event"], rows))
    print(f"ratio: raftfsm is {reference / ours:.1f}x faster")
    path = write_json("dispatch", {
        "events": args.events, "seed": args.seed,
        "raftfsm_events_per_s": args.events / ours, "transitions_events_per_s": args.events / reference,
        "ratio": reference / ours,
    })
    print(f"wrote {path}")


if __name__ == "__main__":
    main()

"""The linearizability checker (runtime/linearizability.py): planted violations it must
find, linearizable histories it must accept, a differential test against brute force,
the shrinker's witnesses, the budget, the recorder, JSON and the command line.

Randomized tests print their seed; set LINCHECK_SEED to replay another one.
"""

from __future__ import annotations

import asyncio
import math
import os
import random
import threading
import time
from collections.abc import Sequence
from itertools import combinations
from pathlib import Path

import pytest

from runtime.kv import CompareAndSet, Delete, Get, KVCommand, KVResult, KVStateMachine, Put
from runtime.linearizability import (
    History,
    Operation,
    Outcome,
    Result,
    Verdict,
    Violation,
    check,
    dumps,
    load,
    loads,
    main,
    save,
)

SEED = int(os.environ.get("LINCHECK_SEED", "20240609"))

ABSENT = KVResult(False, None)


def found(value: str) -> KVResult:
    return KVResult(True, value)


class Script:
    """Hand-written histories: `s.ok("c1", Put("x", "1"), 0, 1)` etc."""

    def __init__(self) -> None:
        self.history = History()

    def ok(self, client: str, command: KVCommand, call: float, ret: float, result: KVResult | None = None) -> int:
        return self.history.invoke(client, command, at=call).ok(result, at=ret).id

    def fail(self, client: str, command: KVCommand, call: float, ret: float) -> int:
        return self.history.invoke(client, command, at=call).fail(at=ret).id

    def unknown(self, client: str, command: KVCommand, call: float, ret: float | None = None) -> int:
        pending = self.history.invoke(client, command, at=call)
        if ret is not None:
            pending.unknown(at=ret)
        return pending.id

    def check(self) -> Result:
        result = check(self.history)
        print(result.format())
        return result


# -- brute force: the oracle of the differential test -----------------------------------------------


def brute_force(operations: Sequence[Operation]) -> bool:
    """Linearizable? Tries every subset of the unknown operations, and every order of the
    chosen operations that respects real time, on a whole `KVStateMachine` (all keys at
    once: no partitioning)."""
    kept = [op for op in operations if op.outcome is not Outcome.FAIL]
    known = [op for op in kept if op.outcome is Outcome.OK]
    unknown = [op for op in kept if op.outcome is Outcome.UNKNOWN]
    return any(_some_order(known + list(chosen))
               for size in range(len(unknown) + 1) for chosen in combinations(unknown, size))


def _some_order(ops: Sequence[Operation]) -> bool:
    n = len(ops)
    ret = [op.ret if op.outcome is Outcome.OK and op.ret is not None else math.inf for op in ops]
    # must_follow[i]: the operations that returned before i was called
    must_precede = [[j for j in range(n) if ret[j] < ops[i].call] for i in range(n)]
    full = (1 << n) - 1

    def search(placed: int, data: dict[str, str]) -> bool:
        if placed == full:
            return True
        for i in range(n):
            if placed >> i & 1 or any(not placed >> j & 1 for j in must_precede[i]):
                continue
            machine = KVStateMachine()
            machine.data = dict(data)
            result = machine.apply(ops[i].command)
            if ops[i].outcome is Outcome.OK and result != ops[i].result:
                continue
            if search(placed | 1 << i, machine.data):
                return True
        return False

    return search(0, {})


# -- planted violations ---------------------------------------------------------------------------


def assert_violation(result: Result, key: str, witness_size: int | None = None) -> None:
    assert result.verdict is Verdict.VIOLATION, result.format()
    assert [v.key for v in result.violations] == [key], result.format()
    violation = result.violations[0]
    assert violation.minimal
    if witness_size is not None:
        assert len(violation.witness) == witness_size, result.format()
    assert not brute_force(violation.history()), "the witness must fail on its own"
    text = result.format()
    assert "NOT linearizable" in text and repr(key) in text


def test_stale_read_after_a_completed_write() -> None:
    s = Script()
    s.ok("w", Put("x", "1"), 0, 1)
    s.ok("w", Put("x", "2"), 2, 3)
    s.ok("r", Get("x"), 4, 5, found("1"))
    s.ok("r", Get("y"), 4, 5, ABSENT)  # another key, fine
    assert_violation(s.check(), "x", witness_size=3)


def test_a_write_answered_fail_is_read_later() -> None:
    s = Script()
    s.ok("a", Put("x", "0"), 0, 1)
    failed = s.fail("a", Put("x", "1"), 2, 3)  # HTTP 503: nothing was applied
    s.ok("b", Get("x"), 4, 5, found("1"))
    result = s.check()
    assert_violation(result, "x", witness_size=1)
    assert [op.id for op in result.violations[0].failed] == [failed]
    assert "answered as failed" in result.format()
    # the same history with the put's outcome unknown (504) is linearizable
    s2 = Script()
    s2.ok("a", Put("x", "0"), 0, 1)
    s2.unknown("a", Put("x", "1"), 2, 3)
    s2.ok("b", Get("x"), 4, 5, found("1"))
    assert s2.check().ok


def test_lost_update_two_cas_from_the_same_value_both_succeed() -> None:
    s = Script()
    s.ok("a", Put("x", "0"), 0, 1)
    s.ok("b", CompareAndSet("x", "0", "1"), 2, 5, found("1"))
    s.ok("c", CompareAndSet("x", "0", "2"), 3, 6, found("2"))
    assert_violation(s.check(), "x", witness_size=3)
    # one of them failing with the other's value is fine
    s2 = Script()
    s2.ok("a", Put("x", "0"), 0, 1)
    s2.ok("b", CompareAndSet("x", "0", "1"), 2, 5, found("1"))
    s2.ok("c", CompareAndSet("x", "0", "2"), 3, 6, KVResult(False, "1"))
    assert s2.check().ok


def test_read_of_a_value_never_written() -> None:
    s = Script()
    s.ok("a", Put("x", "1"), 0, 1)
    s.ok("b", Get("x"), 0.5, 2, found("1"))
    s.ok("b", Get("x"), 3, 4, found("7"))
    assert_violation(s.check(), "x", witness_size=1)


def test_a_read_goes_back_in_time() -> None:
    s = Script()
    s.ok("w", Put("x", "1"), 0, 1)
    s.ok("w", Put("x", "2"), 2, 10)  # one writer; the second write is slow
    s.ok("r", Get("x"), 2.5, 2.8, found("1"))
    s.ok("r", Get("x"), 3, 4, found("2"))
    s.ok("r", Get("x"), 5, 6, found("1"))
    result = s.check()
    assert_violation(result, "x")
    assert len(result.violations[0].witness) <= 4  # the first read is not needed


def test_delete_and_cas_answers_are_checked() -> None:
    s = Script()
    s.ok("a", Put("x", "1"), 0, 1)
    s.ok("a", Delete("x"), 2, 3, found("1"))
    s.ok("a", Delete("x"), 4, 5, found("1"))  # nothing left to remove
    assert_violation(s.check(), "x")
    s = Script()
    s.ok("a", Put("x", "1"), 0, 1)
    s.ok("a", CompareAndSet("x", "2", "3"), 2, 3, KVResult(False, "2"))  # reports a value the key never had then
    assert_violation(s.check(), "x")


# -- linearizable histories -----------------------------------------------------------------------


def test_concurrent_operations_may_take_effect_anywhere_in_their_interval() -> None:
    s = Script()
    s.ok("w", Put("x", "1"), 0, 10)
    s.ok("r", Get("x"), 1, 2, ABSENT)
    s.ok("r", Get("x"), 3, 4, found("1"))
    s.ok("r2", Get("x"), 3.5, 9, found("1"))
    s.ok("c", CompareAndSet("x", None, "9"), 0.5, 11, KVResult(False, "1"))
    s.ok("d", Delete("x"), 9.5, 12, found("1"))
    s.ok("r", Get("x"), 13, 14, ABSENT)
    assert s.check().ok


def test_unknown_put_seen_later_and_unknown_put_never_seen() -> None:
    s = Script()
    s.unknown("a", Put("x", "1"), 0, 5)  # 504
    s.ok("b", Get("x"), 6, 7, ABSENT)  # not yet...
    s.ok("b", Get("x"), 8, 9, found("1"))  # ...now: it took effect late
    s.unknown("a", Put("y", "1"), 0)  # never answered at all
    s.ok("b", Get("y"), 8, 9, ABSENT)  # and never seen
    s.unknown("c", CompareAndSet("z", None, "1"), 0)
    s.ok("b", Get("z"), 1, 2, ABSENT)
    assert s.check().ok
    # but an unknown write cannot take effect before it was sent
    s = Script()
    s.ok("b", Get("x"), 0, 1, found("1"))
    s.unknown("a", Put("x", "1"), 2)
    assert_violation(s.check(), "x", witness_size=1)  # the put cannot help: pruned


def test_equal_timestamps_count_as_concurrent() -> None:
    s = Script()
    s.ok("a", Put("x", "1"), 0, 1)
    s.ok("b", Get("x"), 1, 2, ABSENT)  # called when the put returned: concurrent
    assert s.check().ok
    s = Script()
    s.ok("a", Put("x", "1"), 0, 1)
    s.ok("b", Get("x"), 1.001, 2, ABSENT)
    assert_violation(s.check(), "x", witness_size=2)


def test_keys_are_checked_independently() -> None:
    """P-compositionality: each key alone is linearizable, so the history is; a check that
    mixed keys up would find none of these orders."""
    s = Script()
    for i, key in enumerate("abcdefgh"):
        s.ok("w", Put(key, str(i)), i, i + 0.5)
        s.ok("r", Get(key), i + 0.6, i + 0.7, found(str(i)))
    result = s.check()
    assert result.ok and result.keys == 8


def test_empty_and_failed_only_histories_are_linearizable() -> None:
    assert check([]).ok
    s = Script()
    s.fail("a", Put("x", "1"), 0, 1)
    assert s.check().ok


# -- the differential test ------------------------------------------------------------------------

VALUES = ("a", "b", "c")


def random_command(rng: random.Random, key: str) -> KVCommand:
    kind = rng.choice(("get", "get", "put", "put", "cas", "delete"))
    if kind == "get":
        return Get(key)
    if kind == "put":
        return Put(key, rng.choice(VALUES))
    if kind == "delete":
        return Delete(key)
    return CompareAndSet(key, rng.choice((None, *VALUES)), rng.choice(VALUES))


def random_result(rng: random.Random, command: KVCommand) -> KVResult:
    if isinstance(command, Put):
        return found(command.value)
    if isinstance(command, CompareAndSet):
        return found(command.value) if rng.random() < 0.5 else KVResult(False, rng.choice((None, *VALUES)))
    return rng.choice((ABSENT, *(found(v) for v in VALUES)))


def random_history(rng: random.Random) -> list[Operation]:
    """≤ 7 operations by 2-3 clients on 1-2 keys, on an integer time grid (so ties
    happen), some unknown or failed. Half the time the results come from a real execution
    (linearization points inside the intervals), sometimes with one result corrupted; the
    other half they are random."""
    clients = rng.randint(2, 3)
    keys = ("x", "y")[: rng.randint(1, 2)]
    cursor = [rng.randint(0, 2) for _ in range(clients)]
    shapes = []
    for i in range(rng.randint(1, 7)):
        client = rng.randrange(clients)
        call = cursor[client] + rng.randint(0, 2)
        ret = call + rng.randint(0, 4)
        cursor[client] = ret
        outcome = rng.choices((Outcome.OK, Outcome.UNKNOWN, Outcome.FAIL), weights=(75, 17, 8))[0]
        shapes.append((i, f"c{client}", random_command(rng, rng.choice(keys)), float(call), float(ret), outcome))
    results: dict[int, KVResult] = {}
    if rng.random() < 0.5:
        points = []
        for i, _, command, call, ret, outcome in shapes:
            if outcome is Outcome.OK:
                points.append((rng.uniform(call, ret), i, command))
            elif outcome is Outcome.UNKNOWN and rng.random() < 0.5:
                points.append((rng.uniform(call, call + 8), i, command))
        machine = KVStateMachine()
        for _, i, command in sorted(points, key=lambda p: p[0]):
            results[i] = machine.apply(command)
        if rng.random() < 0.3 and shapes:
            i, _, command, *_ = rng.choice(shapes)
            results[i] = random_result(rng, command)
    else:
        results = {i: random_result(rng, command) for i, _, command, *_ in shapes}
    return [Operation(i, client, command, call, outcome,
                      ret if outcome is not Outcome.UNKNOWN or rng.random() < 0.5 else None,
                      results[i] if outcome is Outcome.OK else None)
            for i, client, command, call, ret, outcome in shapes]


def reduce_once(witness: Sequence[Operation], op: Operation) -> list[Operation]:
    """The shrinker's reduction of one ok operation: drop it if it left the register as it
    was, else make its outcome unknown."""
    assert op.result is not None
    unchanged = isinstance(op.command, Get) or (not op.result.ok and isinstance(op.command, (Delete, CompareAndSet)))
    if unchanged:
        return [o for o in witness if o.id != op.id]
    return [Operation(o.id, o.client, o.command, o.call, Outcome.UNKNOWN) if o.id == op.id else o for o in witness]


def with_the_rest_unknown(operations: Sequence[Operation], violation: Violation) -> list[Operation]:
    """The witness plus every other operation on its key that the shrinker may not simply
    drop, as unknown: a faithful witness still fails with them (so the original, which
    only constrains these operations more, fails because of the witness)."""
    rest = []
    in_witness = {op.id for op in violation.witness}
    for op in operations:
        if op.key != violation.key or op.id in in_witness or op.outcome is Outcome.FAIL:
            continue
        if op.outcome is Outcome.OK and op.result is not None and (
                isinstance(op.command, Get) or (not op.result.ok and isinstance(op.command, (Delete, CompareAndSet)))):
            continue  # left the register unchanged: dropping it is a faithful reduction
        rest.append(Operation(op.id, op.client, op.command, op.call, Outcome.UNKNOWN))
    return violation.history() + rest


def test_checker_agrees_with_brute_force_on_random_small_histories() -> None:
    cases = int(os.environ.get("LINCHECK_CASES", "8000"))
    print(f"seed={SEED} cases={cases}")
    rng = random.Random(SEED)
    verdicts = {True: 0, False: 0}
    began = time.monotonic()
    for case in range(cases):
        operations = random_history(rng)
        expected = brute_force(operations)
        result = check(operations)
        assert result.verdict is not Verdict.UNKNOWN
        assert result.ok == expected, (
            f"seed {SEED} case {case}: brute force says {expected}, the checker {result.verdict}\n"
            f"{result.format()}\n{dumps(operations)}")
        verdicts[expected] += 1
        for violation in result.violations:
            # the witness fails on its own, and no single further reduction keeps it failing
            witness = violation.history()
            assert not brute_force(witness), f"seed {SEED} case {case}: witness is linearizable\n{result.format()}"
            assert not brute_force(with_the_rest_unknown(operations, violation)), (
                f"seed {SEED} case {case}: the witness does not explain the failure\n{result.format()}")
            assert violation.minimal
            for op in witness:
                if op.outcome is Outcome.OK:
                    assert brute_force(reduce_once(witness, op)), (
                        f"seed {SEED} case {case}: witness not minimal, op {op.id} reducible\n{result.format()}")
    elapsed = time.monotonic() - began
    print(f"{cases} histories: {verdicts[True]} linearizable, {verdicts[False]} not; {elapsed:.1f} s")
    # the generator must produce both kinds in numbers, or the comparison proves little
    assert min(verdicts.values()) > cases // 5, verdicts


# -- performance ----------------------------------------------------------------------------------


def generated_history(rng: random.Random, ops: int, keys: int, clients: int,
                      unknown: float = 0.02, failed: float = 0.01, unique: bool = False) -> list[Operation]:
    """A linearizable history: each client runs one operation at a time, every operation
    takes effect at a random point of its interval (an unknown one half of the time, at a
    point up to a second after its call). Values are five per key, or with `unique` a new
    one per write (compare-and-sets expect one of the last two written to the key)."""
    shapes = []
    clock = [0.0] * clients
    written: dict[str, list[str]] = {}
    for i in range(ops):
        client = min(range(clients), key=lambda c: clock[c])
        call = clock[client] + rng.uniform(0.0, 0.002)
        ret = call + rng.expovariate(1 / 0.01)
        clock[client] = ret
        roll = rng.random()
        outcome = Outcome.UNKNOWN if roll < unknown else Outcome.FAIL if roll < unknown + failed else Outcome.OK
        key = f"k{rng.randrange(keys)}"
        command = random_command_from(rng, key)
        if unique and isinstance(command, (Put, CompareAndSet)):
            recent = written.setdefault(key, [])
            if isinstance(command, Put):
                command = Put(key, f"v{i}")
            else:
                command = CompareAndSet(key, rng.choice((None, *recent[-2:])), f"v{i}")
            recent.append(f"v{i}")
        shapes.append((i, f"c{client}", command, call, ret, outcome))
    points = []
    for i, _, command, call, ret, outcome in shapes:
        if outcome is Outcome.OK:
            points.append((rng.uniform(call, ret), i, command))
        elif outcome is Outcome.UNKNOWN and rng.random() < 0.5:
            points.append((rng.uniform(call, call + 1.0), i, command))
    machine = KVStateMachine()
    results = {i: machine.apply(command) for _, i, command in sorted(points, key=lambda p: p[0])}
    return [Operation(i, client, command, call, outcome, ret, results[i] if outcome is Outcome.OK else None)
            for i, client, command, call, ret, outcome in shapes]


def random_command_from(rng: random.Random, key: str) -> KVCommand:
    values = ("0", "1", "2", "3", "4")
    kind = rng.choice(("get", "get", "get", "put", "put", "cas", "delete"))
    if kind == "get":
        return Get(key)
    if kind == "put":
        return Put(key, rng.choice(values))
    if kind == "delete":
        return Delete(key)
    return CompareAndSet(key, rng.choice((None, *values)), rng.choice(values))


def test_a_5000_operation_history_checks_in_seconds() -> None:
    print(f"seed={SEED}")
    rng = random.Random(SEED)
    operations = generated_history(rng, ops=5000, keys=50, clients=10)
    began = time.monotonic()
    result = check(operations, timeout=120)
    elapsed = time.monotonic() - began
    print(f"5000 ops / 50 keys / 10 clients: {result.format()} (wall {elapsed:.2f} s)")
    assert result.ok, result.format()
    assert elapsed < 60, "far slower than expected"
    # plant one read of a value never written into the middle: found, on the right key
    reads = [op for op in operations if isinstance(op.command, Get) and op.outcome is Outcome.OK]
    victim = reads[len(reads) // 2]
    planted = [Operation(op.id, op.client, op.command, op.call, op.outcome, op.ret, found("never-written"))
               if op is victim else op for op in operations]
    began = time.monotonic()
    result = check(planted, timeout=120)
    print(f"with a planted bad read: {time.monotonic() - began:.2f} s\n{result.format()}")
    assert result.verdict is Verdict.VIOLATION and [v.key for v in result.violations] == [victim.key]
    assert [op.id for op in result.violations[0].witness] == [victim.id]


@pytest.mark.parametrize(("ops", "unknown"), [(2000, 0.0), (500, 0.03)])
def test_a_busy_single_key(ops: int, unknown: float) -> None:
    """One key, 10 clients, one value per write: the per-key search itself. Unknown
    outcomes that take effect up to a second later are what makes a single key expensive
    (each may have happened anywhere since its call), hence fewer operations with them."""
    print(f"seed={SEED}")
    rng = random.Random(SEED + 1)
    operations = generated_history(rng, ops=ops, keys=1, clients=10, unknown=unknown, unique=True)
    began = time.monotonic()
    result = check(operations, timeout=120)
    print(f"{ops} ops / 1 key / 10 clients / {unknown:.0%} unknown: {result.format()} "
          f"(wall {time.monotonic() - began:.2f} s)")
    assert result.ok, result.format()


# -- budget ---------------------------------------------------------------------------------------


def exploding_history(writers: int) -> list[Operation]:
    """`writers` concurrent puts of distinct values, then a read of a value nobody wrote:
    not linearizable, but the search must try every subset of the puts to know."""
    s = Script()
    for i in range(writers):
        s.ok(f"w{i}", Put("x", str(i)), 0, 10)
    s.ok("r", Get("x"), 5, 6, found("nobody"))
    s.ok("r", Get("y"), 5, 6, ABSENT)
    return s.history.operations()


def test_budget_exhausted_is_reported_as_unknown() -> None:
    by_states = check(exploding_history(16), max_states=1000)
    print(by_states.format())
    assert by_states.verdict is Verdict.UNKNOWN and by_states.exhausted == ("x",)
    assert "budget exhausted" in by_states.format()
    began = time.monotonic()
    by_time = check(exploding_history(22), max_states=None, timeout=0.2)
    assert by_time.verdict is Verdict.UNKNOWN
    assert time.monotonic() - began < 5
    # with enough budget the same kind of history is decided
    assert check(exploding_history(6)).verdict is Verdict.VIOLATION


def test_a_violation_wins_over_an_exhausted_key() -> None:
    operations = exploding_history(16)
    operations.append(Operation(100, "r", Get("z"), 20, Outcome.OK, 21, found("ghost")))
    result = check(operations, max_states=1000)
    assert result.verdict is Verdict.VIOLATION
    assert [v.key for v in result.violations] == ["z"] and result.exhausted == ("x",)


# -- recorder, JSON, command line -----------------------------------------------------------------


def test_recorder_from_threads_with_a_locked_store() -> None:
    """Operations applied under a lock, recorded around it: linearizable by construction."""
    print(f"seed={SEED}")
    history = History()
    machine = KVStateMachine()
    lock = threading.Lock()

    def client(name: str, seed: int) -> None:
        rng = random.Random(seed)
        for _ in range(200):
            command = random_command_from(rng, rng.choice(("a", "b")))
            pending = history.invoke(name, command)
            with lock:
                result = machine.apply(command)
            pending.ok(result)

    threads = [threading.Thread(target=client, args=(f"t{i}", SEED + i)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(history) == 800
    assert check(history).ok


def test_recorder_from_asyncio_with_a_stale_cache_bug() -> None:
    """Readers go through a per-reader cache that is never invalidated: once a write
    completes after they cached the old value, their reads are stale."""
    history = History()
    store: dict[str, str] = {}
    caches: dict[str, dict[str, str]] = {"r1": {}, "r2": {}}

    async def put(value: str) -> None:
        pending = history.invoke("writer", Put("x", value))
        await asyncio.sleep(0.001)
        store["x"] = value
        pending.ok()

    async def read(name: str) -> None:
        pending = history.invoke(name, Get("x"))
        await asyncio.sleep(0.001)
        cache = caches[name]
        if "x" not in cache and "x" in store:
            cache["x"] = store["x"]
        value = cache.get("x")
        pending.ok(KVResult(value is not None, value))

    async def run() -> None:
        await put("0")
        await asyncio.gather(read("r1"), read("r2"))
        await put("1")
        await asyncio.gather(read("r1"), read("r2"))

    asyncio.run(run())
    result = check(history)
    print(result.format())
    assert result.verdict is Verdict.VIOLATION
    assert len(result.violations[0].witness) == 3  # put 0, put 1, one stale read


def test_pending_operations_become_unknown_and_complete_once() -> None:
    history = History()
    pending = history.invoke("a", Put("x", "1"), at=0)
    assert history.operations()[0].outcome is Outcome.UNKNOWN
    history.invoke("b", Get("x"), at=1).ok(found("1"), at=2)
    assert check(history).ok  # the never-answered put explains the read
    pending.fail(at=3)
    with pytest.raises(RuntimeError):
        pending.ok(at=4)
    assert [op.outcome for op in history.operations()] == [Outcome.FAIL, Outcome.OK]
    assert check(history).verdict is Verdict.VIOLATION
    with pytest.raises(ValueError, match="required"):
        history.invoke("c", Get("x"), at=5).ok(at=6)
    with pytest.raises(ValueError, match="before its call"):
        history.invoke("c", Get("x"), at=5).ok(ABSENT, at=4)


def test_http_answers_map_to_outcomes() -> None:
    history = History()
    assert history.invoke("a", Put("x", "1")).http(200, {"key": "x", "value": "1"}).result == found("1")
    assert history.invoke("a", Get("x")).http(404, {"error": "not found"}).result == ABSENT
    assert history.invoke("a", Delete("x")).http(200, {"key": "x", "value": "1"}).result == found("1")
    cas = history.invoke("a", CompareAndSet("x", None, "2")).http(200, {"key": "x", "ok": False, "value": "1"})
    assert cas.result == KVResult(False, "1")
    assert history.invoke("a", Put("x", "3")).http(503, {"error": "no leader"}).outcome is Outcome.FAIL
    assert history.invoke("a", Put("x", "3")).http(400, {"error": "bad"}).outcome is Outcome.FAIL
    for status in (502, 504, 500):
        assert history.invoke("a", Put("x", "3")).http(status, {"error": "?"}).outcome is Outcome.UNKNOWN


def test_json_round_trip(tmp_path: Path) -> None:
    print(f"seed={SEED}")
    rng = random.Random(SEED)
    operations = [op for _ in range(20) for op in random_history(rng)]
    operations = [Operation(i, op.client, op.command, op.call, op.outcome, op.ret, op.result)
                  for i, op in enumerate(operations)]
    assert loads(dumps(operations)) == operations
    path = tmp_path / "history.json"
    save(path, operations)
    assert load(path) == operations
    with pytest.raises(ValueError):
        loads('{"format": "something-else", "operations": []}')


def test_command_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    s = Script()
    s.ok("w", Put("x", "1"), 0, 1)
    s.ok("r", Get("x"), 2, 3, ABSENT)
    bad = tmp_path / "bad.json"
    s.history.save(bad)
    assert main([str(bad)]) == 1
    assert "NOT linearizable" in capsys.readouterr().out
    good = tmp_path / "good.json"
    save(good, s.history.operations()[:1])
    assert main([str(good)]) == 0
    assert "linearizable" in capsys.readouterr().out
    hard = tmp_path / "hard.json"
    save(hard, exploding_history(16))
    assert main([str(hard), "--max-states", "1000"]) == 3
    assert main([str(tmp_path / "missing.json")]) == 2

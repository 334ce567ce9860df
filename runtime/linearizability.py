"""A linearizability checker for recorded client histories of the key-value store.

Record what clients did, then ask whether some sequential execution of `KVStateMachine`
(runtime/kv.py) explains every answer they got while respecting real time::

    history = History()
    pending = history.invoke("client-1", Put("x", "1"))   # before sending the request
    ...
    pending.ok(KVResult(True, "1"))       # or .fail() / .unknown() / .http(status, body)
    result = check(history)
    print(result.format())

**Outcomes.** An operation is *ok* (it took effect exactly once, between its call and its
return, with the recorded result), *fail* (it definitely did not take effect: HTTP 503 or
a rejected request; failed operations are dropped before checking) or *unknown* (it may or
may not have taken effect, at any time after its call: HTTP 502/504, a timeout, a reset
connection). An operation that never completed while recording is unknown. Unknown
operations get a return time of +infinity and an unconstrained result, as in Knossos and
Porcupine; they may thus also take effect "after the end", which is the same as never.

**Real time.** Operation A precedes B when A returned strictly before B was called
(`A.ret < B.call`); equal timestamps count as concurrent, so the checker never blames a
history on a clock tie.

**The search** is Wing & Gong's, with Lowe's memoisation: walk a doubly linked list of
call and return events ordered by time; linearize a pending call whose model step matches
its result (unlink its call and return, push it), backtrack when the first event left is
a return; remember every (set of linearized operations, model state) pair seen, so no
configuration is explored twice. The history is checked per key (P-compositionality:
linearizability is local, each key is an independent register), and the search has a
budget: more than `max_states` remembered configurations on one key, or `timeout` seconds
in all, gives the verdict "unknown (budget exhausted)" instead of an answer.

**Pruning.** Before the search, unknown operations are simplified in three ways that
never change the verdict:

- one called after every ok operation returned is dropped: it can only take effect after
  all of them;
- an unknown put, compare-and-set or delete whose new value nobody observed (no ok get,
  delete or failed compare-and-set returned it, no compare-and-set expected it; a delete
  writes "absent") is dropped: wherever it takes effect, the next operation to look at the
  register can only be one that overwrites it, so without it the linearization still
  holds (unknown compare-and-sets that failed meanwhile move to the end, where unknown
  operations may always go);
- an unknown write of a value that no other operation writes, once an ok operation
  observed that value, must have taken effect before the first such observer returned:
  it gets that return time instead of +infinity.

With unique values per write (recommended for recorded workloads) unknown puts and
compare-and-sets are thus dropped or closed. What stays open to the end of the history
(unknown deletes, writes of values other writes also write) and long closed windows are
what makes a busy key expensive: each lets the operation take effect at many points, and
the search may try them all. Spread the load over many keys, keep the operations per key
in the hundreds when many outcomes are unknown, and rely on the budget.

**Diagnostics.** For each key that is not linearizable the checker shrinks the key's
history to a small *witness* that still fails, using only reductions that can never turn a
linearizable history into a non-linearizable one: drop an ok operation that left the
register unchanged (a get, a failed compare-and-set, a delete of a missing key), or relax
an ok operation that wrote to "unknown outcome" (its result and return time no longer
constrain anything). So the witness failing proves the whole history fails; plain
deletion of writes would not (deleting the put a read depends on "fails" for the wrong
reason). Greedy delta debugging over those reductions makes the witness 1-minimal unless
the shrinking budget runs out.

`python -m runtime.linearizability HISTORY.json` checks a saved history (see `save`) and
exits 0 (linearizable), 1 (violation) or 3 (budget exhausted).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from enum import StrEnum
from pathlib import Path
from typing import Any, Final

from attrs import evolve, field, frozen
from attrs.converters import optional

from runtime.kv import CompareAndSet, Delete, Get, KVCommand, KVResult, Put

__all__ = [
    "FORMAT",
    "History",
    "Kind",
    "Operation",
    "Outcome",
    "Pending",
    "Result",
    "Verdict",
    "Violation",
    "check",
    "dumps",
    "load",
    "loads",
    "main",
    "save",
]

FORMAT: Final = "raftfsm-kv-history"
"""The `format` field of a saved history (see `dumps`)."""
_VERSION: Final = 1


class Kind(StrEnum):
    """The four key-value operations."""

    GET = "get"
    PUT = "put"
    CAS = "cas"
    DELETE = "delete"


class Outcome(StrEnum):
    """What the client learnt about an operation."""

    OK = "ok"
    """It took effect once, between call and return, and `result` is what it returned."""
    FAIL = "fail"
    """It definitely did not take effect (e.g. HTTP 503: nothing was applied)."""
    UNKNOWN = "unknown"
    """It may or may not have taken effect, at any time after its call (502, 504, timeout)."""


def _kind(command: KVCommand) -> Kind:
    if isinstance(command, Get):
        return Kind.GET
    if isinstance(command, Put):
        return Kind.PUT
    if isinstance(command, Delete):
        return Kind.DELETE
    return Kind.CAS


def _check_time(name: str, value: float) -> None:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number of seconds, not {value!r}")


@frozen
class Operation:
    """One client operation of a history.

    `command` is a runtime.kv command (its `key` and arguments); `call` is when the client
    sent it; `ret` when it got the answer (for an unknown outcome: when it gave up, if it
    knows; the checker ignores it); `result` is the `KVResult` of an ok operation: get
    `(present, value)`, put `(True, value)`, delete `(removed, removed value)`, cas `(ok,
    value now)` — exactly what `KVStateMachine.apply` returns.
    """

    id: int
    client: str
    command: KVCommand
    call: float = field(converter=float)
    outcome: Outcome = field(converter=Outcome)
    ret: float | None = field(default=None, converter=optional(float))
    result: KVResult | None = None

    def __attrs_post_init__(self) -> None:
        _check_time("call", self.call)
        if self.ret is not None:
            _check_time("ret", self.ret)
            if self.ret < self.call:
                raise ValueError(f"operation {self.id} returns at {self.ret} before its call at {self.call}")
        if self.outcome is Outcome.OK:
            if self.ret is None or self.result is None:
                raise ValueError(f"ok operation {self.id} needs a return time and a result")
        elif self.result is not None:
            raise ValueError(f"{self.outcome} operation {self.id} cannot have a result")

    @property
    def kind(self) -> Kind:
        return _kind(self.command)

    @property
    def key(self) -> str:
        return self.command.key

    def describe(self) -> str:
        """The call, e.g. `cas(x, "1" -> "2")`."""
        command = self.command
        if isinstance(command, Put):
            return f"put({command.key}, {_show(command.value)})"
        if isinstance(command, CompareAndSet):
            return f"cas({command.key}, {_show(command.expected)} -> {_show(command.value)})"
        return f"{self.kind}({command.key})"

    def describe_result(self) -> str:
        """The answer, e.g. `"1"`, `absent`, `removed "1"`, `failed, value is "3"`."""
        if self.outcome is not Outcome.OK:
            return str(self.outcome)
        assert self.result is not None
        ok, value = self.result.ok, self.result.value
        kind = self.kind
        if kind is Kind.GET:
            return _show(value) if ok else "absent" + ("" if value is None else f" (?? value {_show(value)})")
        if isinstance(self.command, Put):
            return "ok" if ok and value == self.command.value else f"ok?? {self.result}"
        if kind is Kind.DELETE:
            return f"removed {_show(value)}" if ok else "absent" + ("" if value is None else f" (?? {_show(value)})")
        return f"ok, value {_show(value)}" if ok else f"failed, value is {_show(value)}"


def _show(value: str | None) -> str:
    return "absent" if value is None else json.dumps(value, ensure_ascii=False)


# -- recording -------------------------------------------------------------------------------------


class Pending:
    """An invoked operation waiting for its outcome; complete it exactly once."""

    def __init__(self, history: History, id: int, client: str, command: KVCommand, call: float) -> None:
        self._history = history
        self.id = id
        self.client = client
        self.command = command
        self.call = call

    def ok(self, result: KVResult | None = None, *, at: float | None = None) -> Operation:
        """It took effect and returned `result` (a put may omit it: `KVResult(True, value)`)."""
        if result is None:
            if not isinstance(self.command, Put):
                raise ValueError(f"the result of {_kind(self.command)} is required")
            result = KVResult(True, self.command.value)
        if not isinstance(result, KVResult):
            raise TypeError(f"a result is a KVResult, not {result!r}")
        return self._complete(Outcome.OK, result, at)

    def fail(self, *, at: float | None = None) -> Operation:
        """It definitely did not take effect."""
        return self._complete(Outcome.FAIL, None, at)

    def unknown(self, *, at: float | None = None) -> Operation:
        """It may or may not have taken effect (timeout, 502, 504, connection reset)."""
        return self._complete(Outcome.UNKNOWN, None, at)

    def http(self, status: int, body: Mapping[str, Any] | None = None, *, at: float | None = None) -> Operation:
        """Complete from an answer of the HTTP API (docs/kv.md): 200 and 404 are ok
        answers, 503 and other 4xx mean nothing was applied, anything else (502, 504, 500)
        leaves the outcome unknown."""
        command = self.command
        if status == 200:
            if body is None:
                raise ValueError("a 200 answer has a body")
            value = body.get("value")
            if value is not None and not isinstance(value, str):
                raise ValueError(f"not a value: {value!r}")
            if isinstance(command, CompareAndSet):
                return self.ok(KVResult(bool(body["ok"]), value), at=at)
            return self.ok(KVResult(True, value), at=at)
        if status == 404 and isinstance(command, (Get, Delete)):
            return self.ok(KVResult(False, None), at=at)
        if status == 503 or 400 <= status < 500:
            return self.fail(at=at)
        return self.unknown(at=at)

    def _complete(self, outcome: Outcome, result: KVResult | None, at: float | None) -> Operation:
        return self._history._complete(self, outcome, result, at)


class History:
    """A thread-safe recorder of client operations (usable from threads and asyncio tasks).

    `clock` gives the time of calls and returns (default `time.monotonic`); pass `at=` to
    `invoke`/`ok`/`fail`/`unknown` to record explicit times instead (a simulator's clock,
    hand-written histories).
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._pending: dict[int, Pending] = {}
        self._operations: dict[int, Operation] = {}
        self._next_id = 0

    def invoke(self, client: str | int, command: KVCommand, *, at: float | None = None) -> Pending:
        """Record that `client` sends `command` now (or `at`); returns the handle to complete."""
        if not isinstance(command, (Get, Put, Delete, CompareAndSet)):
            raise TypeError(f"not a key-value command: {command!r}")
        call = self._clock() if at is None else at
        _check_time("call", call)
        with self._lock:
            pending = Pending(self, self._next_id, str(client), command, call)
            self._next_id += 1
            self._pending[pending.id] = pending
        return pending

    def _complete(self, pending: Pending, outcome: Outcome, result: KVResult | None, at: float | None) -> Operation:
        ret = self._clock() if at is None else at
        operation = Operation(pending.id, pending.client, pending.command, pending.call, outcome, ret, result)
        with self._lock:
            if self._pending.pop(pending.id, None) is None:
                raise RuntimeError(f"operation {pending.id} was already completed")
            self._operations[pending.id] = operation
        return operation

    def add(self, operation: Operation) -> None:
        """Add a finished operation (e.g. loaded from elsewhere); its id must be new."""
        with self._lock:
            if operation.id in self._operations or operation.id in self._pending:
                raise ValueError(f"duplicate operation id {operation.id}")
            self._operations[operation.id] = operation
            self._next_id = max(self._next_id, operation.id + 1)

    def operations(self) -> list[Operation]:
        """Every operation in invocation order; those not completed yet are unknown."""
        with self._lock:
            finished = dict(self._operations)
            for pending in self._pending.values():
                finished[pending.id] = Operation(pending.id, pending.client, pending.command, pending.call,
                                                 Outcome.UNKNOWN)
        return [finished[i] for i in sorted(finished)]

    def __len__(self) -> int:
        with self._lock:
            return len(self._operations) + len(self._pending)

    def dumps(self) -> str:
        return dumps(self.operations())

    def save(self, path: str | Path) -> None:
        save(path, self.operations())


# -- JSON ------------------------------------------------------------------------------------------


def _command_json(command: KVCommand) -> dict[str, Any]:
    body: dict[str, Any] = {"op": str(_kind(command)), "key": command.key}
    if isinstance(command, CompareAndSet):
        body["expected"] = command.expected
    if isinstance(command, (Put, CompareAndSet)):
        body["value"] = command.value
    return body


def _operation_json(operation: Operation) -> dict[str, Any]:
    body: dict[str, Any] = {"id": operation.id, "client": operation.client}
    body.update(_command_json(operation.command))
    body.update({"call": operation.call, "return": operation.ret, "outcome": str(operation.outcome)})
    if operation.result is not None:
        body["result"] = {"ok": operation.result.ok, "value": operation.result.value}
    return body


def _command_from(body: Mapping[str, Any]) -> KVCommand:
    op, key = body["op"], body["key"]
    if not isinstance(key, str):
        raise ValueError(f"key must be a string: {body!r}")
    if op == "get":
        return Get(key)
    if op == "delete":
        return Delete(key)
    value = body["value"]
    if not isinstance(value, str):
        raise ValueError(f"value must be a string: {body!r}")
    if op == "put":
        return Put(key, value)
    if op == "cas":
        expected = body["expected"]
        if expected is not None and not isinstance(expected, str):
            raise ValueError(f"expected must be a string or null: {body!r}")
        return CompareAndSet(key, expected, value)
    raise ValueError(f"unknown op {op!r}")


def _operation_from(body: Mapping[str, Any]) -> Operation:
    result = body.get("result")
    kv_result = None
    if result is not None:
        value = result["value"]
        if value is not None and not isinstance(value, str):
            raise ValueError(f"result value must be a string or null: {body!r}")
        kv_result = KVResult(bool(result["ok"]), value)
    ret = body.get("return")
    return Operation(int(body["id"]), str(body["client"]), _command_from(body), float(body["call"]),
                     Outcome(body["outcome"]), None if ret is None else float(ret), kv_result)


def dumps(operations: Iterable[Operation]) -> str:
    """A JSON document of the operations, one per line, readable by `loads`."""
    lines = [json.dumps(_operation_json(op), ensure_ascii=False) for op in operations]
    head = json.dumps({"format": FORMAT, "version": _VERSION})[:-1]
    return head + ', "operations": [\n' + ",\n".join(lines) + "\n]}\n"


def loads(text: str) -> list[Operation]:
    """The operations of a document written by `dumps`."""
    document = json.loads(text)
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise ValueError(f"not a {FORMAT} document")
    if document.get("version") != _VERSION:
        raise ValueError(f"unsupported {FORMAT} version {document.get('version')!r}")
    operations = [_operation_from(body) for body in document["operations"]]
    if len({op.id for op in operations}) != len(operations):
        raise ValueError("duplicate operation ids")
    return operations


def save(path: str | Path, operations: Iterable[Operation]) -> None:
    Path(path).write_text(dumps(operations), encoding="utf-8")


def load(path: str | Path) -> list[Operation]:
    return loads(Path(path).read_text(encoding="utf-8"))


# -- the search ------------------------------------------------------------------------------------

_GET, _PUT, _DELETE, _CAS = range(4)
_CODES: Final = {Kind.GET: _GET, Kind.PUT: _PUT, Kind.DELETE: _DELETE, Kind.CAS: _CAS}
_CLOCK_EVERY: Final = 1024  # search steps between two looks at the clock


@frozen
class _Entry:
    """An operation as the search sees it: `ret` is +inf and `result` None when the
    outcome is unknown (or relaxed to unknown by the shrinker)."""

    op: Operation
    code: int
    value: str | None
    expected: str | None
    ret: float
    result: tuple[bool, str | None] | None


class _Budget:
    """The search budget: remembered configurations per key search, and a deadline."""

    def __init__(self, max_states: int | None, deadline: float | None) -> None:
        self.max_states = max_states
        self.deadline = deadline

    def expired(self) -> bool:
        return self.deadline is not None and time.monotonic() > self.deadline


def _prepare(operations: Iterable[Operation], relaxed: frozenset[int] = frozenset()) -> list[_Entry]:
    """The entries to search: failed operations and unknown gets dropped (they change
    nothing and constrain nothing), `relaxed` ids treated as unknown, and unknown
    operations pruned as the module docstring explains."""
    entries: list[_Entry] = []
    for op in operations:
        if op.outcome is Outcome.FAIL:
            continue
        command = op.command
        known = op.outcome is Outcome.OK and op.id not in relaxed
        if not known and isinstance(command, Get):
            continue
        assert op.ret is not None or not known
        result = None
        if known:
            assert op.result is not None and op.ret is not None
            result = (op.result.ok, op.result.value)
        value = command.value if isinstance(command, (Put, CompareAndSet)) else None
        expected = command.expected if isinstance(command, CompareAndSet) else None
        entries.append(_Entry(op, _CODES[_kind(command)], value, expected,
                              op.ret if known and op.ret is not None else math.inf, result))
    # an unknown operation called after every ok one returned comes after all of them
    last_return = max((e.ret for e in entries if e.result is not None), default=-math.inf)
    entries = [e for e in entries if e.result is not None or e.op.call <= last_return]
    while True:  # to a fixpoint: a pruned compare-and-set no longer observes its `expected`
        observed: set[str | None] = set()
        for entry in entries:
            if entry.code == _CAS:
                observed.add(entry.expected)
            if entry.result is not None and entry.code != _PUT and not (entry.code == _CAS and entry.result[0]):
                observed.add(entry.result[1])
        # an unknown write of a value nobody observed (a delete writes "absent": None)
        kept = [e for e in entries if e.result is not None or e.value in observed]
        if len(kept) == len(entries):
            break
        entries = kept
    return _close_unique_writes(entries)


def _close_unique_writes(entries: list[_Entry]) -> list[_Entry]:
    """Give an unknown write the return time of the first ok operation that observed its
    value, when no other operation writes that value: the write must have taken effect
    before that observer returned, in every linearization."""
    writers: dict[str | None, list[_Entry]] = {}
    for entry in entries:
        if entry.code in (_PUT, _CAS):
            writers.setdefault(entry.value, []).append(entry)
    first_seen: dict[str | None, float] = {}
    for entry in entries:
        result = entry.result
        if result is None:
            continue
        if entry.code == _CAS and result[0]:
            seen = entry.expected
        elif entry.code != _PUT and result[1] is not None:
            seen = result[1]
        else:
            continue
        first_seen[seen] = min(entry.ret, first_seen.get(seen, math.inf))
    closed = []
    for entry in entries:
        if entry.result is None and entry.code in (_PUT, _CAS) and len(writers[entry.value]) == 1:
            seen_by = first_seen.get(entry.value, math.inf)
            if entry.op.call <= seen_by < entry.ret:
                entry = evolve(entry, ret=seen_by)
        closed.append(entry)
    return closed


def _search(entries: Sequence[_Entry], budget: _Budget) -> tuple[bool | None, int]:
    """Wing & Gong's search with Lowe's cache over one key's entries. Returns (True:
    linearizable / False: not / None: budget exhausted, remembered configurations)."""
    n = len(entries)
    if n == 0:
        return True, 0
    events = sorted([(e.op.call, 0, i) for i, e in enumerate(entries)]
                    + [(e.ret, 1, i) for i, e in enumerate(entries)])
    # a doubly linked list over nodes 1..2n (node 0 is the head, -1 the end); a call node's
    # `match` is its return node, -1 for return nodes
    size = 2 * n
    nxt = [*range(1, size + 1), -1]
    prv = list(range(-1, size))
    owner = [-1] * (size + 1)
    return_node = [0] * n
    for node, (_, is_return, i) in enumerate(events, 1):
        owner[node] = i
        if is_return:
            return_node[i] = node
    match = [-1] * (size + 1)
    for node, (_, is_return, i) in enumerate(events, 1):
        if not is_return:
            match[node] = return_node[i]
    codes = [e.code for e in entries]
    values = [e.value for e in entries]
    expects = [e.expected for e in entries]
    results = [e.result for e in entries]
    # open: an unknown outcome never closed (it returns at +inf)
    open_ = [e.result is None and e.ret == math.inf for e in entries]
    max_states = budget.max_states
    cache: set[tuple[int, str | None]] = set()
    state: str | None = None
    linearized = 0
    node = nxt[0]
    steps = 0
    # done when every operation but the open ones is linearized: those can all go last,
    # where no one observes them
    required = n - sum(open_)
    done = 0
    stack: list[tuple[int, str | None]] = []
    while done < required:
        steps += 1
        if steps % _CLOCK_EVERY == 0 and budget.expired():
            return None, len(cache)
        returned = match[node]
        if returned >= 0:  # a call: try to linearize it now
            i = owner[node]
            code = codes[i]
            new: str | None
            if code == _GET:
                new, ok, out = state, state is not None, state
            elif code == _PUT:
                new = values[i]
                ok, out = True, new
            elif code == _DELETE:
                new, ok, out = None, state is not None, state
            elif state == expects[i]:
                new = values[i]
                ok, out = True, new
            else:
                new, ok, out = state, False, state
            expected_result = results[i]
            if expected_result is None or (expected_result[0] == ok and expected_result[1] == out):
                bits = linearized | (1 << i)
                configuration = (bits, new)
                if configuration not in cache:
                    cache.add(configuration)
                    if max_states is not None and len(cache) > max_states:
                        return None, len(cache)
                    stack.append((node, state))
                    state, linearized = new, bits
                    if not open_[i]:
                        done += 1
                    # lift: unlink the call and its return
                    before, after = prv[node], nxt[node]
                    nxt[before] = after
                    prv[after] = before
                    before, after = prv[returned], nxt[returned]
                    nxt[before] = after
                    if after != -1:
                        prv[after] = before
                    node = nxt[0]
                    continue
            node = nxt[node]
        else:  # the first return left: its operation cannot be linearized this way; backtrack
            if not stack:
                return False, len(cache)
            node, state = stack.pop()
            linearized &= ~(1 << owner[node])
            if not open_[owner[node]]:
                done -= 1
            # unlift, in the reverse order of lift
            returned = match[node]
            before, after = prv[returned], nxt[returned]
            nxt[before] = returned
            if after != -1:
                prv[after] = returned
            before, after = prv[node], nxt[node]
            nxt[before] = node
            prv[after] = node
            node = nxt[node]
    return True, len(cache)


# -- shrinking -------------------------------------------------------------------------------------


_SHRINK_STATES: Final = 50_000
"""Search states allowed to one shrinking attempt: an attempt over it counts as passing,
so it is not taken (the witness stays a failing history, only maybe a larger one)."""


def _verdict(operations: Sequence[Operation], relaxed: frozenset[int], budget: _Budget) -> bool | None:
    verdict, _ = _search(_prepare(operations, relaxed), budget)
    return verdict


def _shrink(operations: Sequence[Operation], budget: _Budget) -> tuple[list[Operation], frozenset[int], bool]:
    """Shrink a failing key history with verdict-preserving reductions (see the module
    docstring): drop ok operations that left the register unchanged, relax ok writes to
    unknown. Three stages, each keeping only reductions after which the history still
    fails: cut off the end (reduce everything called after the earliest point where the
    history already fails: a binary search, as reducing more can only make failing
    harder), then greedy delta debugging over drops only, then over all reductions, to a
    fixpoint. Returns (witness operations, ids relaxed to unknown, 1-minimal?)."""
    current = [op for op in operations if op.outcome is not Outcome.FAIL]
    relaxed: frozenset[int] = frozenset()
    undecided = False  # some attempt ran out of budget: the result may not be 1-minimal

    def fails(operations: Sequence[Operation], relaxed: frozenset[int]) -> bool:
        nonlocal undecided
        verdict = _verdict(operations, relaxed, budget)
        undecided = undecided or verdict is None
        return verdict is False

    def reducible(drops_only: bool) -> list[Operation]:
        return sorted((op for op in current if op.outcome is Outcome.OK and op.id not in relaxed
                       and (_unchanged(op) or not drops_only)),
                      key=lambda op: (not _unchanged(op), op.call, op.id))

    def attempt(chosen: Sequence[Operation]) -> bool:
        """Reduce `chosen`; keep the result if it still fails."""
        nonlocal current, relaxed
        drop = {op.id for op in chosen if _unchanged(op)}
        reduced = [op for op in current if op.id not in drop]
        reduced_relaxed = relaxed | {op.id for op in chosen if not _unchanged(op)}
        if not fails(reduced, reduced_relaxed):
            return False
        current, relaxed = reduced, reduced_relaxed
        return True

    # 1. cut off the end: the fewest operations (by call time) to keep unreduced
    by_call = sorted(reducible(False), key=lambda op: (op.call, op.id))
    lo, hi = 0, len(by_call)
    while lo < hi:
        if budget.expired():
            return _witness(current, relaxed), relaxed, False
        middle = (lo + hi) // 2
        drop = {op.id for op in by_call[middle:] if _unchanged(op)}
        reduced = [op for op in current if op.id not in drop]
        if fails(reduced, relaxed | {op.id for op in by_call[middle:] if not _unchanged(op)}):
            hi = middle
        else:
            lo = middle + 1
    if hi < len(by_call):
        attempt(by_call[hi:])
    # 2. and 3. delta debugging: drops alone first (they shorten the witness and are cheap
    # to check), then all reductions
    for drops_only in (True, False):
        candidates = reducible(drops_only)
        chunk = max(1, len(candidates) // 2)
        while candidates:
            progress = False
            start = 0
            while start < len(candidates):
                if budget.expired():
                    return _witness(current, relaxed), relaxed, False
                if attempt(candidates[start:start + chunk]):
                    progress = True
                    del candidates[start:start + chunk]
                else:
                    start += chunk
            if not progress and chunk == 1:
                break  # no single reduction keeps the failure
            candidates = reducible(drops_only)
            chunk = max(1, min(chunk if progress else chunk // 2, len(candidates) // 2))
    return _witness(current, relaxed), relaxed, not undecided


def _unchanged(op: Operation) -> bool:
    """An ok operation whose result says the register did not change."""
    assert op.result is not None
    return isinstance(op.command, Get) or (not op.result.ok and isinstance(op.command, (Delete, CompareAndSet)))


def _witness(operations: Sequence[Operation], relaxed: frozenset[int]) -> list[Operation]:
    kept = {entry.op.id for entry in _prepare(operations, relaxed)}
    return sorted((op for op in operations if op.id in kept), key=lambda op: (op.call, op.id))


# -- results ---------------------------------------------------------------------------------------


class Verdict(StrEnum):
    OK = "ok"
    VIOLATION = "violation"
    UNKNOWN = "unknown"


@frozen
class Violation:
    """A key whose history is not linearizable.

    `witness` is the smallest failing sub-history found (operations as recorded, by call
    time); the ids in `relaxed` are ok operations the witness treats as unknown outcomes.
    `minimal`: no single further reduction keeps it failing (False when shrinking ran into
    its budget, or was off). `failed` lists failed operations on the key that wrote a
    value the witness observes: a likely cause.
    """

    key: str
    checked: int
    witness: tuple[Operation, ...]
    relaxed: frozenset[int]
    minimal: bool
    failed: tuple[Operation, ...] = ()

    def history(self) -> list[Operation]:
        """The witness as a history of its own (relaxed operations unknown): it fails
        `check`, and every history it was shrunk from fails too."""
        return [Operation(op.id, op.client, op.command, op.call, Outcome.UNKNOWN, op.ret)
                if op.id in self.relaxed else op for op in self.witness]


@frozen
class Result:
    """The verdict on a history, with the violations found and budget-exhausted keys."""

    verdict: Verdict
    violations: tuple[Violation, ...]
    exhausted: tuple[str, ...]
    operations: int
    keys: int
    states: int
    elapsed: float
    start: float = 0.0

    @property
    def ok(self) -> bool:
        return self.verdict is Verdict.OK

    def format(self) -> str:
        """A report for humans: the verdict, then each violation's witness as a timeline."""
        lines: list[str] = []
        summary = (f"{self.operations} operations on {self.keys} keys, {self.states} search states, "
                   f"{self.elapsed:.3f} s")
        if self.verdict is Verdict.OK:
            lines.append(f"linearizable ({summary})")
        elif self.verdict is Verdict.UNKNOWN:
            lines.append(f"unknown (budget exhausted) ({summary})")
        else:
            lines.append(f"NOT linearizable: {len(self.violations)} key(s) ({summary})")
        if self.exhausted:
            shown = ", ".join(repr(k) for k in self.exhausted[:10])
            more = f" and {len(self.exhausted) - 10} more" if len(self.exhausted) > 10 else ""
            lines.append(f"budget exhausted on {len(self.exhausted)} key(s): {shown}{more}")
        for violation in self.violations:
            lines.append("")
            lines.extend(_format_violation(violation, self.start))
        return "\n".join(lines)


def _format_violation(violation: Violation, start: float) -> list[str]:
    size = len(violation.witness)
    how = "1-minimal" if violation.minimal else "not necessarily minimal"
    lines = [f"key {violation.key!r}: no linearization of {violation.checked} operations; "
             f"a failing sub-history of {size} ({how}), times in s from {start:.6f}:"]
    witness = violation.witness
    lo = min(op.call for op in witness)
    finite = [op.ret for op in witness if op.ret is not None and op.id not in violation.relaxed
              and op.outcome is Outcome.OK]
    hi = max([*finite, *(op.call for op in witness)])
    width = 24
    scale = (width - 1) / (hi - lo) if hi > lo else 0.0
    client_width = max(6, *(len(op.client) for op in witness))
    call_width = max(len(op.describe()) for op in witness)
    for op in witness:
        relaxed = op.id in violation.relaxed
        known = op.outcome is Outcome.OK and not relaxed
        first = round((op.call - lo) * scale)
        last = round((op.ret - lo) * scale) if known and op.ret is not None else width - 1
        bar = " " * first + ("|" + "=" * max(0, last - first - 1) + "|" if last > first else "|")
        if not known:
            bar = (" " * first + "|" + "-" * (width - first - 1))[:width] + ">"
        ret = f"{op.ret - start:9.3f}" if op.ret is not None else "        ?"
        answer = op.describe_result()
        if relaxed:
            answer += "   [relaxed to unknown]"
        elif op.outcome is Outcome.UNKNOWN:
            answer = "unknown outcome"
        lines.append(f"  {op.client:<{client_width}} {op.call - start:9.3f} .. {ret}  {bar:<{width + 1}}  "
                     f"{op.describe():<{call_width}}  -> {answer}")
    if violation.relaxed & {op.id for op in witness}:
        lines.append("  (relaxed: answered ok, but the violation remains even if it is taken as an unknown "
                     "outcome, ignoring its result and return time)")
    for op in violation.failed:
        lines.append(f"  note: {op.client} {op.describe()} at {op.call - start:.3f} was answered as failed "
                     "(not applied), yet the witness observes its value")
    return lines


# -- the check -------------------------------------------------------------------------------------


def check(
    history: History | Iterable[Operation],
    *,
    max_states: int | None = 1_000_000,
    timeout: float | None = 60.0,
    shrink: bool = True,
    shrink_timeout: float = 10.0,
) -> Result:
    """Decide whether `history` is linearizable for the key-value model of runtime/kv.py.

    Keys are checked one by one (in sorted order). `max_states` bounds the remembered
    configurations of one key's search, `timeout` the seconds of the whole search (None:
    no bound); a key over budget makes the verdict UNKNOWN unless another key is a
    VIOLATION. Each violation is shrunk (at most `shrink_timeout` seconds per key).
    """
    began = time.monotonic()
    operations = history.operations() if isinstance(history, History) else list(history)
    if len({op.id for op in operations}) != len(operations):
        raise ValueError("operation ids must be unique")
    by_key: dict[str, list[Operation]] = {}
    for op in operations:
        by_key.setdefault(op.key, []).append(op)
    budget = _Budget(max_states, None if timeout is None else began + timeout)
    start = min((op.call for op in operations), default=0.0)
    failing: list[tuple[str, list[Operation], int]] = []
    exhausted: list[str] = []
    states = 0
    for key in sorted(by_key):
        entries = _prepare(by_key[key])
        verdict, explored = _search(entries, budget)
        states += explored
        if verdict is None:
            exhausted.append(key)
        elif not verdict:
            failing.append((key, by_key[key], len(entries)))
    violations: list[Violation] = []
    for key, key_operations, checked in failing:
        if shrink:
            shrink_states = _SHRINK_STATES if max_states is None else min(max_states, _SHRINK_STATES)
            shrink_budget = _Budget(shrink_states, time.monotonic() + shrink_timeout)
            witness, relaxed, minimal = _shrink(key_operations, shrink_budget)
        else:
            witness = _witness(key_operations, frozenset())
            relaxed, minimal = frozenset(), False
        observed = {op.result.value for op in witness if op.result is not None and op.id not in relaxed
                    and not isinstance(op.command, Put)
                    and not (isinstance(op.command, CompareAndSet) and op.result.ok)}
        failed = tuple(op for op in key_operations if op.outcome is Outcome.FAIL
                       and isinstance(op.command, (Put, CompareAndSet)) and op.command.value in observed)
        violations.append(Violation(key, checked, tuple(witness), relaxed & {op.id for op in witness},
                                    minimal, failed))
    if violations:
        verdict_all = Verdict.VIOLATION
    elif exhausted:
        verdict_all = Verdict.UNKNOWN
    else:
        verdict_all = Verdict.OK
    return Result(verdict_all, tuple(violations), tuple(exhausted), len(operations), len(by_key), states,
                  time.monotonic() - began, start)


# -- command line ----------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m runtime.linearizability",
                                     description="Check a recorded key-value history for linearizability.")
    parser.add_argument("history", type=Path, help="a JSON history written by runtime.linearizability.save")
    parser.add_argument("--max-states", type=int, default=1_000_000, help="search states per key (default 1e6)")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds for the whole search (default 60)")
    parser.add_argument("--no-shrink", action="store_true", help="report violations without shrinking them")
    args = parser.parse_args(argv)
    try:
        operations = load(args.history)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        print(f"cannot read {args.history}: {exc}", file=sys.stderr)
        return 2
    result = check(operations, max_states=args.max_states, timeout=args.timeout, shrink=not args.no_shrink)
    print(result.format())
    return {Verdict.OK: 0, Verdict.VIOLATION: 1, Verdict.UNKNOWN: 3}[result.verdict]


if __name__ == "__main__":
    sys.exit(main())

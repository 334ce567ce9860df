"""Durable storage: the contract every Storage keeps, and what SqliteStorage does when the
directory, the disk or another process gets in the way (principle 4: persist before you
speak; a node whose storage fails stops acknowledging)."""

from __future__ import annotations

import json
import os
import re
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from generated.raft_fsm import Entry, EntryKind
from runtime.errors import RaftError
from runtime.membership import Configuration
from runtime.ready import HardState, PersistentState, Snapshot
from runtime.storage import CorruptStorage, MemoryStorage, SqliteStorage, Storage, StorageError
from runtime.storage.faulty import FaultyStorage

REPO = Path(__file__).resolve().parent.parent


def make_entries(first: int, last: int, term: int = 1, size: int = 16) -> list[Entry]:
    return [Entry(term, i, EntryKind.data, i.to_bytes(4, "big") * (size // 4)) for i in range(first, last + 1)]


def snapshot_at(index: int, term: int = 1) -> Snapshot:
    return Snapshot(index, term, Configuration.voters_only(("n1", "n2", "n3")), b"state@%d" % index)


def open_sqlite(path: Path, node_id: str = "n1", cluster_id: str = "c1") -> SqliteStorage:
    return SqliteStorage(path, node_id=node_id, cluster_id=cluster_id)


def load(path: Path) -> PersistentState:
    """What a restarting node sees: open, read the initial state, close."""
    storage = open_sqlite(path)
    try:
        return storage.initial_state()
    finally:
        storage.close()


Reopen = Callable[[], Storage]


@pytest.fixture(params=["memory", "sqlite"])
def reopen(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Reopen]:
    """Returns the storage "after a restart": the same MemoryStorage (it outlives the
    simulated crash), or a fresh SqliteStorage on the same directory."""
    if request.param == "memory":
        memory = MemoryStorage()
        yield lambda: memory
        return
    current: list[SqliteStorage] = []

    def restart() -> Storage:
        if current:
            current.pop().close()
        current.append(open_sqlite(tmp_path / "data"))
        return current[-1]

    yield restart
    for storage in current:
        storage.close()


# --- the contract ---------------------------------------------------------------------------


def test_a_new_storage_starts_at_term_zero_with_an_empty_log(reopen: Reopen) -> None:
    assert reopen().initial_state() == PersistentState(HardState(), None, [])


def test_entries_and_hard_state_survive_a_restart(reopen: Reopen) -> None:
    reopen().persist(make_entries(1, 5), HardState(3, "n2", 4), None)
    state = reopen().initial_state()
    assert state.hard_state == HardState(3, "n2", 4)
    assert list(state.entries) == make_entries(1, 5)
    assert state.snapshot is None


def test_a_hard_state_without_a_vote_survives_a_restart(reopen: Reopen) -> None:
    reopen().persist([], HardState(7, None, 0), None)
    assert reopen().initial_state().hard_state == HardState(7, None, 0)


def test_entries_appended_in_later_batches_extend_the_log(reopen: Reopen) -> None:
    storage = reopen()
    storage.persist(make_entries(1, 3), None, None)
    storage.persist(make_entries(4, 6), None, None)
    storage.persist([], HardState(1, "n1", 6), None)
    state = reopen().initial_state()
    assert list(state.entries) == make_entries(1, 6)
    assert state.hard_state == HardState(1, "n1", 6)


def test_conflicting_entries_replace_the_stored_suffix(reopen: Reopen) -> None:
    """§5.3: if an existing entry conflicts with a new one, delete it and all that follow."""
    storage = reopen()
    storage.persist(make_entries(1, 10, term=1), HardState(1, None, 0), None)
    storage.persist(make_entries(6, 8, term=2), HardState(2, None, 0), None)
    assert list(reopen().initial_state().entries) == make_entries(1, 5, term=1) + make_entries(6, 8, term=2)


def test_a_batch_that_would_leave_a_hole_is_refused_and_changes_nothing(reopen: Reopen) -> None:
    storage = reopen()
    storage.persist(make_entries(1, 3), HardState(1, None, 0), None)
    with pytest.raises(ValueError, match="start at 5"):
        storage.persist(make_entries(5, 6), HardState(9, None, 0), None)
    with pytest.raises(ValueError, match="not contiguous"):
        storage.persist([*make_entries(4, 4), *make_entries(6, 6)], None, None)
    state = reopen().initial_state()
    assert list(state.entries) == make_entries(1, 3)
    assert state.hard_state == HardState(1, None, 0)


def test_an_installed_snapshot_replaces_the_whole_log(reopen: Reopen) -> None:
    """§7: if the snapshot is newer than the log, the follower discards its entire log."""
    storage = reopen()
    storage.persist(make_entries(1, 10), HardState(1, None, 5), None)
    storage.persist(make_entries(21, 22, term=3), HardState(3, "n2", 20), snapshot_at(20, term=2))
    state = reopen().initial_state()
    assert state.snapshot == snapshot_at(20, term=2)
    assert list(state.entries) == make_entries(21, 22, term=3)
    assert state.hard_state == HardState(3, "n2", 20)


def test_a_snapshot_alone_leaves_an_empty_log_that_continues_after_it(reopen: Reopen) -> None:
    storage = reopen()
    storage.persist(make_entries(1, 3), None, None)
    storage.persist([], None, snapshot_at(50))
    storage = reopen()
    assert list(storage.initial_state().entries) == []
    with pytest.raises(ValueError):
        storage.persist(make_entries(50, 51), None, None)  # 50 is inside the snapshot
    storage.persist(make_entries(51, 52), None, None)
    assert list(reopen().initial_state().entries) == make_entries(51, 52)


def test_compaction_drops_the_entries_the_snapshot_covers(reopen: Reopen) -> None:
    """§7: the log up to the snapshot's last included index is replaced by the snapshot."""
    storage = reopen()
    storage.persist(make_entries(1, 10), HardState(1, "n1", 10), None)
    storage.compact(snapshot_at(6))
    storage.persist(make_entries(11, 12), None, None)
    state = reopen().initial_state()
    assert state.snapshot == snapshot_at(6)
    assert list(state.entries) == make_entries(7, 12)
    assert state.hard_state == HardState(1, "n1", 10)


def test_compacting_everything_then_appending_continues_the_log(reopen: Reopen) -> None:
    storage = reopen()
    storage.persist(make_entries(1, 4), None, None)
    storage.compact(snapshot_at(4))
    storage.persist(make_entries(5, 5), None, None)
    assert list(reopen().initial_state().entries) == make_entries(5, 5)


def test_a_snapshot_older_than_the_stored_one_or_beyond_the_log_is_refused(reopen: Reopen) -> None:
    storage = reopen()
    storage.persist(make_entries(1, 10), None, None)
    storage.compact(snapshot_at(6))
    with pytest.raises(ValueError, match="older"):
        storage.compact(snapshot_at(3))
    with pytest.raises(ValueError, match="beyond"):
        storage.compact(snapshot_at(11))
    assert reopen().initial_state().snapshot == snapshot_at(6)


def test_the_initial_state_does_not_alias_the_stored_log(reopen: Reopen) -> None:
    storage = reopen()
    storage.persist(make_entries(1, 3), None, None)
    entries = storage.initial_state().entries
    assert isinstance(entries, list)
    entries.clear()
    assert list(storage.initial_state().entries) == make_entries(1, 3)


@pytest.mark.parametrize("kind", ["io", "disk_full", "fsync"])
def test_an_injected_fault_writes_nothing_and_names_its_cause(reopen: Reopen, kind: str) -> None:
    storage = FaultyStorage(reopen())
    storage.persist(make_entries(1, 2), HardState(1, None, 0), None)
    storage.fail_next(kind)  # type: ignore[arg-type]
    with pytest.raises(StorageError, match=r"(I/O error|disk full|fsync failed) while persisting 3 entries"):
        storage.persist(make_entries(3, 5), HardState(2, None, 0), None)
    storage.fail_next(kind)  # type: ignore[arg-type]
    with pytest.raises(StorageError, match="compacting"):
        storage.compact(snapshot_at(2))
    storage.persist(make_entries(3, 3), None, None)  # one failure, not a stuck storage
    state = reopen().initial_state()
    assert list(state.entries) == make_entries(1, 3)
    assert (state.hard_state, state.snapshot) == (HardState(1, None, 0), None)


def test_storage_errors_are_raft_errors() -> None:
    assert issubclass(CorruptStorage, StorageError)
    assert issubclass(StorageError, RaftError)


# --- SqliteStorage: who may open a directory --------------------------------------------------

CHILD_HOLDS_LOCK = """
import sys
from runtime.storage import SqliteStorage
storage = SqliteStorage(sys.argv[1], node_id="n1", cluster_id="c1")
print("ready", flush=True)
sys.stdin.read()
storage.close()
"""


def run_child(code: str, *args: str, **popen: object) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen(  # type: ignore[call-overload, no-any-return]
        [sys.executable, "-c", code, *args], cwd=REPO, env=env, text=True, **popen
    )


def test_a_directory_held_by_another_process_is_refused_naming_the_holder(tmp_path: Path) -> None:
    child = run_child(CHILD_HOLDS_LOCK, str(tmp_path), stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "ready"
        with pytest.raises(StorageError, match=rf"in use by process {child.pid}\b"):
            open_sqlite(tmp_path)
    finally:
        assert child.stdin is not None
        child.stdin.close()
        assert child.wait(timeout=20) == 0
    open_sqlite(tmp_path).close()  # the lock went with the child


def test_the_same_directory_cannot_be_opened_twice_in_one_process(tmp_path: Path) -> None:
    with open_sqlite(tmp_path), pytest.raises(StorageError, match=rf"in use by process {os.getpid()}\b"):
        open_sqlite(tmp_path)
    open_sqlite(tmp_path).close()


@pytest.mark.parametrize(
    ("node_id", "cluster_id", "expected"),
    [("n2", "c1", "belongs to node 'n1' of cluster 'c1'"), ("n1", "c2", "refusing to open it as node 'n1' of cluster 'c2'")],
)
def test_a_directory_refuses_to_start_as_another_node_or_cluster(
    tmp_path: Path, node_id: str, cluster_id: str, expected: str
) -> None:
    open_sqlite(tmp_path).close()
    with pytest.raises(StorageError, match=expected) as raised:
        open_sqlite(tmp_path, node_id=node_id, cluster_id=cluster_id)
    assert not isinstance(raised.value, CorruptStorage)
    open_sqlite(tmp_path).close()  # the refusal released the lock


def test_a_database_of_another_schema_version_is_refused(tmp_path: Path) -> None:
    open_sqlite(tmp_path).close()
    with sqlite3.connect(tmp_path / "raft.db") as connection:
        connection.execute("UPDATE meta SET schema_version = 99")
    connection.close()
    with pytest.raises(StorageError, match="schema version 99; this raftfsm reads versions 1 and 2"):
        open_sqlite(tmp_path)


# --- SqliteStorage: corruption is reported, never repaired -----------------------------------


def populated(path: Path, count: int = 400) -> bytes:
    """A closed data directory with a log big enough to span many pages; its raft.db bytes."""
    with open_sqlite(path) as storage:
        storage.persist(make_entries(1, count, size=100), HardState(2, "n1", count), None)
    assert sorted(os.listdir(path)) == ["LOCK", "raft.db"]
    return (path / "raft.db").read_bytes()


def truncate_to_half(data: bytes) -> bytes:
    return data[: len(data) // 2]


def overwrite_the_middle(data: bytes) -> bytes:
    middle = len(data) // 2
    return data[:middle] + b"\xa5" * 512 + data[middle + 512 :]


def garbage(data: bytes) -> bytes:
    return os.urandom(len(data))


@pytest.mark.parametrize("damage", [truncate_to_half, overwrite_the_middle, garbage, lambda _: b""])
def test_a_damaged_database_is_reported_as_corrupt_and_left_as_it_is(
    tmp_path: Path, damage: Callable[[bytes], bytes]
) -> None:
    damaged = damage(populated(tmp_path))
    (tmp_path / "raft.db").write_bytes(damaged)
    with pytest.raises(CorruptStorage, match=re.escape(str(tmp_path / "raft.db"))) as raised:
        load(tmp_path)
    assert "\n" not in str(raised.value)
    assert (tmp_path / "raft.db").read_bytes() == damaged


def test_a_flipped_byte_inside_an_entry_fails_its_checksum(tmp_path: Path) -> None:
    populated(tmp_path, count=10)
    with sqlite3.connect(tmp_path / "raft.db") as connection:
        connection.execute("UPDATE entries SET data = zeroblob(100) WHERE idx = 7")
    connection.close()
    with pytest.raises(CorruptStorage, match="log entry 7 fails its checksum"):
        load(tmp_path)


def test_a_gap_in_the_stored_log_is_reported_at_open(tmp_path: Path) -> None:
    populated(tmp_path, count=10)
    with sqlite3.connect(tmp_path / "raft.db") as connection:
        connection.execute("DELETE FROM entries WHERE idx = 4")
    connection.close()
    with pytest.raises(CorruptStorage, match=r"9 log entries spanning 1\.\.10"):
        open_sqlite(tmp_path)


def test_another_programs_sqlite_file_is_not_taken_for_a_log(tmp_path: Path) -> None:
    with sqlite3.connect(tmp_path / "raft.db") as connection:
        connection.execute("CREATE TABLE photos (name TEXT)")
    connection.close()
    before = (tmp_path / "raft.db").read_bytes()
    with pytest.raises(CorruptStorage, match="not a raftfsm log"):
        open_sqlite(tmp_path)
    assert (tmp_path / "raft.db").read_bytes() == before


def test_an_unknown_file_in_the_data_directory_is_reported_by_name(tmp_path: Path) -> None:
    populated(tmp_path, count=3)
    (tmp_path / "raft.db.bak").write_bytes(b"an operator's copy")
    with pytest.raises(CorruptStorage, match=r"unknown file .*raft\.db\.bak"):
        open_sqlite(tmp_path)
    assert (tmp_path / "raft.db.bak").exists()


def test_a_write_ahead_log_without_its_database_is_reported(tmp_path: Path) -> None:
    (tmp_path / "raft.db-wal").write_bytes(b"\x00" * 32)
    with pytest.raises(CorruptStorage, match=r"raft\.db-wal exists"):
        open_sqlite(tmp_path)
    assert not (tmp_path / "raft.db").exists()


# --- SqliteStorage: a real full disk ---------------------------------------------------------

CHILD_FILLS_DISK = """
import json, os, resource, signal, sys
from generated.raft_fsm import Entry, EntryKind
from runtime.ready import HardState
from runtime.storage import SqliteStorage, StorageError

signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # get EFBIG from write() instead of dying
storage = SqliteStorage(sys.argv[1], node_id="n1", cluster_id="c1")
limit = 2 * 1024 * 1024
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
acknowledged, error = 0, None
for batch in range(100):
    first = acknowledged + 1
    entries = [Entry(1, i, EntryKind.data, bytes([batch]) * 4096) for i in range(first, first + 64)]
    try:
        storage.persist(entries, HardState(1, "n1", acknowledged), None)
    except StorageError as failure:
        error = str(failure)
        break
    acknowledged = entries[-1].index
print(json.dumps({"acknowledged": acknowledged, "error": error}), flush=True)
os._exit(0)  # crash: no close, no checkpoint; the restart must recover from the WAL
"""


def test_a_full_disk_fails_the_batch_and_loses_nothing_acknowledged(tmp_path: Path) -> None:
    """Persist before you speak: every batch persist() returned for is there after a restart."""
    child = run_child(CHILD_FILLS_DISK, str(tmp_path), stdout=subprocess.PIPE)
    output, _ = child.communicate(timeout=30)
    assert child.returncode == 0
    report = json.loads(output)
    assert report["error"] is not None, "the file size limit was never hit"
    assert report["acknowledged"] >= 64, "the limit was hit before any batch was acknowledged"
    assert "while persisting 64 entries and the hard state to" in report["error"]
    assert report["error"].startswith("disk full while"), report["error"]
    assert "RLIMIT_FSIZE" in report["error"]

    state = load(tmp_path)  # runs PRAGMA quick_check
    assert len(state.entries) == report["acknowledged"]
    for entry in state.entries:
        assert entry.data == bytes([(entry.index - 1) // 64]) * 4096
    assert state.hard_state == HardState(1, "n1", report["acknowledged"] - 64)
    with sqlite3.connect(tmp_path / "raft.db") as connection:
        assert connection.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    connection.close()

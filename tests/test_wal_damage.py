"""A damaged SQLite write-ahead log is refused at open instead of silently replayed short.

SQLite replays raft.db-wal up to the first frame that does not verify and ignores the
rest: right for a torn tail after a crash, silent data loss when a frame in the middle
(or the WAL header) was damaged later. The first half checks the inspector on WAL bytes
built here, with a checksum written independently of runtime/storage/wal.py; the second
half kill -9s a real writer (fsync on) and damages the files it leaves behind.
"""

from __future__ import annotations

import hashlib
import os
import random
import re
import select
import shutil
import signal
import socket
import sqlite3
import struct
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from generated.raft_fsm import Entry, EntryKind
from runtime.membership import Configuration
from runtime.ready import HardState, PersistentState, Snapshot
from runtime.storage import CorruptStorage, MemoryStorage, SqliteStorage, Storage, StorageError
from runtime.storage.wal import WalReport, checksum, inspect_wal
from runtime.transport.auth import write_secret

REPO = Path(__file__).resolve().parent.parent
MASK = 0xFFFFFFFF

# --- a WAL writer of our own ------------------------------------------------------------------


def reference_checksum(data: bytes, seed: tuple[int, int], big_endian: bool) -> tuple[int, int]:
    """The WAL checksum exactly as the format describes it, one word pair at a time."""
    order = ">" if big_endian else "<"
    s1, s2 = seed
    for offset in range(0, len(data), 8):
        x, y = struct.unpack_from(order + "II", data, offset)
        s1 = (s1 + x + s2) & MASK
        s2 = (s2 + y + s1) & MASK
    return s1, s2


@dataclass
class Frame:
    page: int
    commit: int  # database size after a commit, 0 in other frames
    data: bytes


def build_wal(
    frames: list[Frame], page_size: int = 512, *, big_endian: bool = False, salts: tuple[int, int] = (0x11, 0x22),
    version: int = 3007000, sequence: int = 0,
) -> bytearray:
    magic = 0x377F0683 if big_endian else 0x377F0682
    header = struct.pack(">6I", magic, version, page_size, sequence, *salts)
    running = reference_checksum(header, (0, 0), big_endian)
    wal = bytearray(header + struct.pack(">2I", *running))
    for frame in frames:
        assert len(frame.data) == page_size
        start = struct.pack(">2I", frame.page, frame.commit)
        running = reference_checksum(start + frame.data, running, big_endian)
        wal += start + struct.pack(">2I", *salts) + struct.pack(">2I", *running) + frame.data
    return wal


def pages(count: int, page_size: int = 512, commit_every: int = 2, seed: int = 1) -> list[Frame]:
    """`count` frames of random pages; every `commit_every`-th frame commits."""
    rng = random.Random(seed)
    return [
        Frame(1 + i % 7, (i + 1) if (i + 1) % commit_every == 0 else 0, rng.randbytes(page_size))
        for i in range(count)
    ]


def frame_offset(number: int, page_size: int) -> int:
    return 32 + (number - 1) * (24 + page_size)


def flip(data: bytearray, offset: int, bit: int = 0x10) -> bytearray:
    data[offset] ^= bit
    return data


def inspect_bytes(tmp_path: Path, data: bytes | bytearray) -> WalReport:
    path = tmp_path / "test-wal"
    path.write_bytes(bytes(data))
    return inspect_wal(path)


# --- the inspector on built WALs --------------------------------------------------------------


@pytest.mark.parametrize("big_endian", [False, True])
@pytest.mark.parametrize("size", [8, 24, 512, 4096, 65536 + 24])
def test_the_fast_checksum_agrees_with_the_reference(big_endian: bool, size: int) -> None:
    data = random.Random(size).randbytes(size)
    seed = (0xDEADBEEF, 0x12345678)
    assert checksum(data, seed, big_endian=big_endian) == reference_checksum(data, seed, big_endian)


@pytest.mark.parametrize("big_endian", [False, True])
@pytest.mark.parametrize("page_size", [512, 4096, 65536])
def test_an_intact_wal_is_accepted_whole(tmp_path: Path, page_size: int, big_endian: bool) -> None:
    frames = pages(9, page_size, commit_every=3)
    report = inspect_bytes(tmp_path, build_wal(frames, page_size, big_endian=big_endian))
    assert report.problem is None
    assert (report.page_size, report.big_endian) == (page_size, big_endian)
    assert (report.frames, report.valid, report.committed, report.transactions) == (9, 9, 9, 3)
    assert not report.torn and report.stale == 0


@pytest.mark.parametrize("content", [None, b"", b"\x37\x7f\x06", bytes(31)])
def test_a_missing_empty_or_headerless_wal_is_fine(tmp_path: Path, content: bytes | None) -> None:
    path = tmp_path / "raft.db-wal"
    if content is not None:
        path.write_bytes(content)
    report = inspect_wal(path)
    assert report.problem is None and report.frames == 0


def test_a_header_without_frames_is_fine(tmp_path: Path) -> None:
    report = inspect_bytes(tmp_path, build_wal([]))
    assert report.problem is None and report.frames == 0 and not report.torn


@pytest.mark.parametrize("big_endian", [False, True])
@pytest.mark.parametrize("where", ["page", "page number", "commit field", "checksum-1", "checksum-2", "salt-2"])
def test_a_frame_damaged_in_the_middle_is_reported(tmp_path: Path, where: str, big_endian: bool) -> None:
    wal = build_wal(pages(10), big_endian=big_endian)
    start = frame_offset(4, 512)
    field = {"page": 24 + 300, "page number": 3, "commit field": 7, "checksum-1": 19, "checksum-2": 23, "salt-2": 15}
    report = inspect_bytes(tmp_path, flip(wal, start + field[where]))
    assert report.problem is not None
    why = "carries the salts of another WAL generation" if where == "salt-2" else "fails its checksum"
    assert report.problem.startswith(f"frame 4 (offset {start}) {why}, yet ")
    assert "3 of them committing transactions (the last at frame 10)" in report.problem
    assert "keep only frames 1..2" in report.problem
    assert (report.valid, report.committed, report.transactions) == (3, 2, 1)


def test_a_damaged_checksum_just_before_the_last_commit_is_reported(tmp_path: Path) -> None:
    """Frame 3 only verifies when seeded with the checksum frame 2 should have had."""
    wal = build_wal(pages(3, commit_every=1))
    report = inspect_bytes(tmp_path, flip(wal, frame_offset(2, 512) + 17))
    assert report.problem is not None and report.problem.startswith("frame 2 (offset 568) fails its checksum")
    assert "1 of them committing transactions (the last at frame 3)" in report.problem


def test_a_valid_frame_with_page_number_zero_breaks_the_chain(tmp_path: Path) -> None:
    frames = pages(6)
    frames[2].page = 0  # SQLite refuses the frame although its checksum matches
    report = inspect_bytes(tmp_path, build_wal(frames))
    assert report.problem is not None and report.problem.startswith("frame 3 (offset 1104) has page number 0")


@pytest.mark.parametrize(
    "tear",
    [
        pytest.param(lambda wal: wal[: len(wal) - 100], id="truncated-in-the-last-frame"),
        pytest.param(lambda wal: wal[: len(wal) - 300] + bytes(300), id="last-page-zeroed"),
        pytest.param(lambda wal: flip(wal, len(wal) - 5), id="bit-flipped-in-the-last-page"),
        pytest.param(lambda wal: wal + bytes(200), id="partial-frame-appended"),
    ],
)
def test_a_torn_tail_is_not_damage(tmp_path: Path, tear: Callable[[bytearray], bytearray]) -> None:
    report = inspect_bytes(tmp_path, tear(build_wal(pages(8))))
    assert report.problem is None
    assert report.torn


def test_frames_after_the_last_commit_may_break_without_damage(tmp_path: Path) -> None:
    """A transaction that spilled pages to the WAL and rewrote one in place, then died
    before its commit fixed the checksums: frames after the break verify, none commits."""
    frames = pages(4) + [Frame(9, 0, bytes([i]) * 512) for i in range(5)]
    wal = build_wal(frames)
    start = frame_offset(6, 512) + 24
    wal[start : start + 512] = b"\x77" * 512  # the page rewritten in place, its checksum not
    report = inspect_bytes(tmp_path, wal)
    assert report.problem is None and report.torn
    assert (report.valid, report.committed) == (5, 4)


def test_frames_of_an_earlier_generation_are_stale_not_damage(tmp_path: Path) -> None:
    old = build_wal(pages(12, seed=1), salts=(5, 99))
    new = build_wal(pages(4, seed=2), salts=(6, 1234), sequence=1)
    wal = new + old[len(new) :]  # a restarted WAL overwrites the old one from the start
    report = inspect_bytes(tmp_path, wal)
    assert report.problem is None and not report.torn
    assert (report.frames, report.valid, report.committed, report.stale) == (12, 4, 4, 8)


@pytest.mark.parametrize(
    ("offset", "bit", "what"),
    [
        (3, 0x01, "its checksum does not match"),  # the magic's byte-order bit
        (3, 0x40, "bad magic number 0x377f06c"),
        (6, 0x10, "its checksum does not match"),  # format version
        (10, 0x10, "bad page size 4608"),
        (15, 0x10, "its checksum does not match"),  # checkpoint sequence
        (19, 0x10, "its checksum does not match"),  # salt-1
        (22, 0x10, "its checksum does not match"),  # salt-2
        (26, 0x10, "its checksum does not match"),  # checksum-1
        (31, 0x10, "its checksum does not match"),  # checksum-2
    ],
)
@pytest.mark.parametrize("big_endian", [False, True])
def test_a_damaged_header_in_front_of_committed_frames_is_reported(
    tmp_path: Path, offset: int, bit: int, what: str, big_endian: bool
) -> None:
    report = inspect_bytes(tmp_path, flip(build_wal(pages(6), big_endian=big_endian), offset, bit))
    assert report.problem is not None
    assert report.problem.startswith(f"the WAL header (offset 0) is damaged ({what}")
    assert report.problem.endswith(
        "yet 6 frames after it verify (512-byte pages), 3 of them committing transactions (the last at frame 6);"
        " SQLite would silently ignore the whole WAL"
    )


@pytest.mark.parametrize("big_endian", [False, True])
def test_a_zeroed_first_block_over_the_header_and_first_frame_is_reported(tmp_path: Path, big_endian: bool) -> None:
    wal = build_wal(pages(12, page_size=1024), page_size=1024, big_endian=big_endian)
    wal[:512] = bytes(512)  # the header and frame 1's header: frames 3.. verify, chained from frame 2
    report = inspect_bytes(tmp_path, wal)
    assert report.problem is not None
    assert report.problem.startswith("the WAL header (offset 0) is damaged (bad magic number 0x00000000), yet 10")
    assert "(1024-byte pages), 5 of them committing transactions (the last at frame 12)" in report.problem


def test_a_damaged_header_without_committed_frames_loses_nothing(tmp_path: Path) -> None:
    wal = build_wal([Frame(1, 0, bytes(512)), Frame(2, 0, bytes(512))])
    assert inspect_bytes(tmp_path, flip(wal, 20)).problem is None
    assert inspect_bytes(tmp_path, random.Random(3).randbytes(32 + 3 * 536)).problem is None


def test_an_unknown_format_version_is_reported(tmp_path: Path) -> None:
    report = inspect_bytes(tmp_path, build_wal(pages(2), version=3007001))
    assert report.problem == "the WAL header names format version 3007001, not 3007000"


def test_a_big_wal_written_by_sqlite_verifies_whole_and_fast(tmp_path: Path) -> None:
    """16 MB of frames from SQLite itself (the checksums are SQLite's, not ours); prints the
    time the inspector takes."""
    connection = sqlite3.connect(tmp_path / "big.db", isolation_level=None)
    connection.execute("PRAGMA journal_mode = WAL")
    connection.execute("PRAGMA wal_autocheckpoint = 0")
    connection.execute("PRAGMA synchronous = OFF")
    connection.execute("CREATE TABLE t (k INTEGER PRIMARY KEY, v BLOB)")
    blob, first = random.Random(5).randbytes(3000), 1
    while (tmp_path / "big.db-wal").stat().st_size < 16 << 20:
        connection.execute("BEGIN")
        connection.executemany("INSERT INTO t VALUES (?, ?)", ((k, blob) for k in range(first, first + 100)))
        connection.execute("COMMIT")
        first += 100
    shutil.copy(tmp_path / "big.db-wal", tmp_path / "copy-wal")
    connection.close()
    started = time.process_time()
    report = inspect_wal(tmp_path / "copy-wal")
    took = time.process_time() - started
    print(f"inspected {report.size / 2**20:.1f} MB, {report.frames} frames, in {took:.3f} s of CPU")
    assert report.problem is None and not report.torn
    assert report.valid == report.committed == report.frames > 4000
    assert took < 5, f"inspecting 16 MB took {took:.1f} s"


# --- a real writer, killed -9 -----------------------------------------------------------------

WRITER = r"""
import sqlite3, sys
from generated.raft_fsm import Entry, EntryKind
from runtime.ready import HardState
from runtime.storage import SqliteStorage

directory, checkpoint_at, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3]
storage = SqliteStorage(directory, node_id="n1", cluster_id="c1")  # fsync on: synchronous=FULL

def persist(index):
    term = 1 + index // 8
    entry = Entry(term, index, EntryKind.data, b"entry %d " % index + bytes(300))
    storage.persist([entry], HardState(term, "n%d" % (1 + index % 3), index - 1), None)

persist(1)
for index in range(2, 600):
    persist(index)
    # Acknowledge an index once the next transaction is durable too: then the WAL's last
    # transaction is never an acknowledged one, and tearing it loses nothing promised.
    print(index - 1, flush=True)
    if index == checkpoint_at:
        checkpointer = sqlite3.connect(storage.path)
        checkpointer.execute(f"PRAGMA wal_checkpoint({mode})")
        checkpointer.close()
sys.stdin.read()  # the parent kills long before this
"""


@dataclass(frozen=True)
class Killed:
    directory: Path
    acknowledged: int  # entries 1..acknowledged were acknowledged before the kill


def kill_writer(directory: Path, kill_at: int, checkpoint_at: int = 0, mode: str = "RESTART") -> Killed:
    """Run WRITER, SIGKILL it as soon as it has acknowledged `kill_at` (it goes on writing
    meanwhile), and return what it acknowledged."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    child = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(directory), str(checkpoint_at), mode],
        cwd=REPO, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    assert child.stdout is not None and child.stderr is not None
    output = b""
    deadline = time.monotonic() + 120
    try:
        while not output.endswith(b"\n") or int(output.rsplit(b"\n", 2)[-2]) < kill_at:
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"the writer acknowledged only {output.split()[-1:]} in 120 s"
            ready, _, _ = select.select([child.stdout], [], [], remaining)
            if ready:
                chunk = os.read(child.stdout.fileno(), 65536)
                assert chunk, f"the writer exited early: {child.stderr.read().decode()[-2000:]}"
                output += chunk
        child.send_signal(signal.SIGKILL)
    finally:
        if child.poll() is None:
            child.kill()
        child.wait(timeout=30)
    output += child.stdout.read()  # what it printed before the signal landed
    for pipe in (child.stdin, child.stdout, child.stderr):
        if pipe is not None:
            pipe.close()
    assert child.returncode == -signal.SIGKILL
    acknowledged = [int(line) for line in output.split()]
    assert acknowledged == list(range(1, len(acknowledged) + 1))
    return Killed(directory, acknowledged[-1])


def copy_of(killed: Killed, tmp_path: Path) -> Path:
    """A private copy of the killed writer's files, to damage."""
    directory = tmp_path / "data"
    shutil.copytree(killed.directory, directory)
    return directory


def fingerprint(directory: Path) -> dict[str, str]:
    return {
        name: hashlib.sha256((directory / name).read_bytes()).hexdigest()
        for name in ("raft.db", "raft.db-wal", "raft.db-shm")
    }


def open_storage(directory: Path) -> SqliteStorage:
    return SqliteStorage(directory, node_id="n1", cluster_id="c1")


def loaded(directory: Path) -> PersistentState:
    with open_storage(directory) as storage:
        return storage.initial_state()


def what_sqlite_alone_sees(directory: Path, tmp_path: Path) -> int:
    """The last log index plain SQLite finds, on a scratch copy (opening replays and may
    checkpoint): shows what a restart without the inspector would have started with."""
    scratch = tmp_path / "scratch"
    shutil.copytree(directory, scratch)
    connection = sqlite3.connect(scratch / "raft.db")
    try:
        assert connection.execute("PRAGMA quick_check").fetchall() == [("ok",)]
        last: int | None = connection.execute("SELECT MAX(idx) FROM entries").fetchone()[0]
    finally:
        connection.close()
    shutil.rmtree(scratch)
    return last or 0


def assert_everything_acknowledged_is_there(state: PersistentState, acknowledged: int) -> None:
    assert len(state.entries) >= acknowledged
    for entry in state.entries[:acknowledged]:
        assert entry.data == b"entry %d " % entry.index + bytes(300)
        assert entry.term == 1 + entry.index // 8
    assert state.hard_state.commit >= acknowledged - 1


@pytest.fixture(scope="module")
def plain(tmp_path_factory: pytest.TempPathFactory) -> Killed:
    """A writer killed after 60 acknowledged entries, every transaction still in the WAL."""
    killed = kill_writer(tmp_path_factory.mktemp("plain") / "data", kill_at=60)
    report = inspect_wal(killed.directory / "raft.db-wal")
    # SQLite checkpoints at 1000 frames; none happened, so the WAL holds every transaction
    # (the schema's, then one per entry, the unacknowledged last ones included).
    assert report.problem is None and report.stale == 0
    assert report.transactions >= killed.acknowledged + 2, report
    return killed


@pytest.fixture(scope="module")
def truncated(tmp_path_factory: pytest.TempPathFactory) -> Killed:
    """A writer that checkpointed (TRUNCATE) after entry 30 and was killed after 45."""
    killed = kill_writer(tmp_path_factory.mktemp("truncated") / "data", kill_at=45, checkpoint_at=30, mode="TRUNCATE")
    report = inspect_wal(killed.directory / "raft.db-wal")
    assert report.problem is None and report.stale == 0 and report.transactions >= 15, report
    return killed


@pytest.fixture(scope="module")
def restarted(tmp_path_factory: pytest.TempPathFactory) -> Killed:
    """A writer whose WAL restarted after entry 60 (checkpoint RESTART), killed after 70:
    the new generation overwrote the start of the old one, whose tail is left behind."""
    return kill_writer(tmp_path_factory.mktemp("restarted") / "data", kill_at=70, checkpoint_at=60, mode="RESTART")


def test_a_bit_flipped_in_a_middle_frame_is_refused_and_changes_no_file(plain: Killed, tmp_path: Path) -> None:
    directory = copy_of(plain, tmp_path)
    wal = directory / "raft.db-wal"
    before = inspect_wal(wal)
    number = before.committed // 2
    start = 32 + (number - 1) * (24 + before.page_size)
    with open(wal, "r+b") as file:
        file.seek(start + 24 + 1000)
        byte = file.read(1)[0]
        file.seek(start + 24 + 1000)
        file.write(bytes([byte ^ 0x04]))
    # Without the inspector, SQLite replays only the frames before the flip, quick_check
    # passes, and about half the acknowledged log is gone:
    assert what_sqlite_alone_sees(directory, tmp_path) < plain.acknowledged
    files = fingerprint(directory)

    with pytest.raises(CorruptStorage) as raised:
        open_storage(directory)
    message = str(raised.value)
    assert message.startswith(f"{wal} is damaged: frame {number} (offset {start}) fails its checksum, yet ")
    assert "\n" not in message
    assert fingerprint(directory) == files


def test_the_node_command_refuses_a_damaged_wal_in_one_line(plain: Killed, tmp_path: Path) -> None:
    directory = copy_of(plain, tmp_path)
    wal = directory / "raft.db-wal"
    before = inspect_wal(wal)
    number = before.committed // 2
    data = flip(bytearray(wal.read_bytes()), 32 + (number - 1) * (24 + before.page_size) + 24 + 2000, 0x01)
    wal.write_bytes(data)
    files = fingerprint(directory)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    result = subprocess.run(
        [sys.executable, "-m", "runtime.cli", "node", "--id", "n1", "--listen", f"127.0.0.1:{port}",
         "--peers", f"n1=127.0.0.1:{port}", "--data-dir", str(directory), "--cluster-id", "c1",
         "--secret-file", str(write_secret(tmp_path / "secret"))],
        cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True, timeout=30,
    )
    assert result.returncode == 2, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"raftfsm node: {wal} is damaged: frame {number} (offset ")
    assert fingerprint(directory) == files


def tear_by_truncating(wal: Path, page_size: int) -> None:
    frames = (wal.stat().st_size - 32) // (24 + page_size)
    os.truncate(wal, frame_offset(frames, page_size) + 24 + page_size // 2)


def tear_by_overwriting(wal: Path, page_size: int) -> None:
    frames = (wal.stat().st_size - 32) // (24 + page_size)
    with open(wal, "r+b") as file:
        file.seek(frame_offset(frames, page_size) + 24 + 100)
        file.write(os.urandom(page_size - 100))


@pytest.mark.parametrize("tear", [tear_by_truncating, tear_by_overwriting])
def test_a_torn_tail_opens_with_every_acknowledged_entry(
    plain: Killed, tmp_path: Path, tear: Callable[[Path, int], None]
) -> None:
    directory = copy_of(plain, tmp_path)
    wal = directory / "raft.db-wal"
    before = inspect_wal(wal)
    tear(wal, before.page_size)
    after = inspect_wal(wal)
    assert after.problem is None and after.torn
    assert after.valid == before.valid - 1  # the last frame no longer counts
    assert_everything_acknowledged_is_there(loaded(directory), plain.acknowledged)


@pytest.mark.parametrize("offset", [3, 10, 15, 18, 23, 25, 30])
def test_a_damaged_wal_header_is_refused_and_changes_no_file(truncated: Killed, tmp_path: Path, offset: int) -> None:
    directory = copy_of(truncated, tmp_path)
    wal = directory / "raft.db-wal"
    wal.write_bytes(flip(bytearray(wal.read_bytes()), offset, 0x01))
    # SQLite alone would ignore the whole WAL and start from the checkpoint after entry 30:
    assert what_sqlite_alone_sees(directory, tmp_path) == 30 < truncated.acknowledged
    files = fingerprint(directory)
    with pytest.raises(CorruptStorage, match=re.escape(f"{wal} is damaged: the WAL header (offset 0) is damaged (")):
        open_storage(directory)
    assert fingerprint(directory) == files


def test_the_undamaged_checkpointed_writer_opens_with_every_acknowledged_entry(truncated: Killed, tmp_path: Path) -> None:
    assert_everything_acknowledged_is_there(loaded(copy_of(truncated, tmp_path)), truncated.acknowledged)


def test_stale_frames_of_a_restarted_wal_are_not_damage(restarted: Killed, tmp_path: Path) -> None:
    directory = copy_of(restarted, tmp_path)
    report = inspect_wal(directory / "raft.db-wal")
    assert report.stale > 0, f"the WAL did not restart: {report}"
    assert report.problem is None
    assert report.valid < report.frames
    assert_everything_acknowledged_is_there(loaded(directory), restarted.acknowledged)


# --- values the medium cannot hold ------------------------------------------------------------

TOO_BIG = 1 << 63
ONE = Configuration.voters_only(("n1",))


@pytest.fixture(params=["memory", "sqlite"])
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> Storage:
    if request.param == "memory":
        return MemoryStorage()
    opened = open_storage(tmp_path / "data")
    request.addfinalizer(opened.close)
    return opened


@pytest.mark.parametrize(
    ("batch", "message"),
    [
        (([Entry(TOO_BIG, 1, EntryKind.data, b"x")], None, None),
         f"term {TOO_BIG} of log entry 1 does not fit in a signed 64-bit integer"),
        (([], HardState(TOO_BIG, "n1", 0), None), f"term {TOO_BIG} of the hard state does not fit"),
        (([], HardState(1, "n1", TOO_BIG), None), f"commit index {TOO_BIG} does not fit"),
        (([], HardState(-TOO_BIG - 1, None, 0), None), f"term {-TOO_BIG - 1} of the hard state does not fit"),
        (([], None, Snapshot(TOO_BIG, 1, ONE, b"")), f"snapshot index {TOO_BIG} does not fit"),
        (([], None, Snapshot(3, TOO_BIG, ONE, b"")), f"term {TOO_BIG} of the snapshot at 3 does not fit"),
    ],
)
def test_a_value_beyond_64_bits_is_a_storage_error_and_stores_nothing(
    storage: Storage, batch: tuple[list[Entry], HardState | None, Snapshot | None], message: str
) -> None:
    storage.persist([Entry(1, 1, EntryKind.data, b"a")], HardState(1, "n1", 1), None)
    before = storage.initial_state()
    with pytest.raises(StorageError, match=re.escape(message)):
        storage.persist(*batch)
    assert storage.initial_state() == before


def test_compacting_to_a_snapshot_beyond_64_bits_is_a_storage_error(storage: Storage) -> None:
    storage.persist([Entry(1, 1, EntryKind.data, b"a")], HardState(1, "n1", 1), None)
    with pytest.raises(StorageError, match=re.escape(f"term {TOO_BIG} of the snapshot at 1 does not fit")):
        storage.compact(Snapshot(1, TOO_BIG, ONE, b""))
    assert storage.initial_state().snapshot is None


def test_the_largest_64_bit_values_are_stored(storage: Storage) -> None:
    largest = TOO_BIG - 1
    storage.persist([Entry(largest, 1, EntryKind.data, b"a")], HardState(largest, "n1", 1), None)
    state = storage.initial_state()
    assert state.hard_state.term == largest and state.entries[0].term == largest

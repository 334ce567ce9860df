"""The default durable storage: one SQLite database per node, in WAL mode.

Layout of a data directory (nothing else may live there, so a mistyped path or a
half-restored backup is noticed instead of being half-used):

    raft.db, raft.db-wal, raft.db-shm   the database
    LOCK                                flock()ed while open; holds the holder's pid

Every row carries a CRC-32: SQLite's own checks (`PRAGMA quick_check`) see a broken
b-tree but not a flipped bit inside a blob, and a node that restarts with a silently
changed term or entry breaks Raft's safety rather than just crashing.

Opening checks, in this order, and raises CorruptStorage (one line) at the first failure;
nothing is repaired, and up to step 3 not a byte of raft.db, raft.db-wal or raft.db-shm
has changed (LOCK takes the new pid):

1. the directory holds only the files above, and is locked;
2. raft.db starts with an SQLite header;
3. raft.db-wal, read by `runtime.storage.wal.inspect_wal` before any SQLite connection
   exists: SQLite replays a WAL up to the first frame that does not verify and ignores
   the rest without a word, which is right for a torn tail after a crash but drops
   acknowledged entries and votes when a frame in the middle (or the WAL header) was
   damaged later. A break followed by committed frames of the same WAL generation that
   still verify is refused, naming the frame and its offset; a torn tail or frames of an
   earlier generation are not;
4. a read-only connection runs quick_check and checks identity and a gap-free log (it
   replays the WAL, but a read-only connection does not checkpoint);
5. `initial_state()` verifies every row's CRC.

Terms and indexes are SQLite INTEGERs: one that does not fit in a signed 64-bit integer
makes persist/compact raise StorageError before the transaction starts.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import resource
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Final
from zlib import crc32

from generated.raft_fsm import Entry, EntryKind
from runtime.membership import Configuration, ConfigurationError
from runtime.ready import HardState, PersistentState, Snapshot
from runtime.storage.base import (
    CorruptStorage,
    StorageError,
    check_batch,
    check_compaction,
    check_storable,
    describe_batch,
)
from runtime.storage.wal import inspect_wal

SCHEMA_VERSION: Final = 2
"""2 added the `bootstrap` table (the configuration a node starts from); a version-1
database is upgraded in place when opened."""
APPLICATION_ID: Final = 0x52414654  # "RAFT" in the SQLite header: tells our files from other SQLite files
DB_NAME: Final = "raft.db"
LOCK_NAME: Final = "LOCK"
KNOWN_FILES: Final = frozenset({DB_NAME, f"{DB_NAME}-wal", f"{DB_NAME}-shm", LOCK_NAME})
_SQLITE_MAGIC: Final = b"SQLite format 3\x00"
_TABLES: Final = frozenset({"meta", "hard_state", "snapshot", "entries", "bootstrap"})
_TABLES_V1: Final = _TABLES - {"bootstrap"}
_CREATE_BOOTSTRAP: Final = """CREATE TABLE bootstrap (
        id INTEGER PRIMARY KEY CHECK (id = 0),
        configuration TEXT NOT NULL,
        crc INTEGER NOT NULL
    )"""
_KINDS: Final = {kind.value: kind for kind in EntryKind}
_MASK: Final = 0xFFFFFFFF
_LOW_SPACE: Final = 1 << 20  # a write failing with less than this left is taken for a full disk

_SCHEMA: Final = (
    f"PRAGMA application_id = {APPLICATION_ID}",
    """CREATE TABLE meta (
        id INTEGER PRIMARY KEY CHECK (id = 0),
        schema_version INTEGER NOT NULL,
        cluster_id TEXT NOT NULL,
        node_id TEXT NOT NULL
    )""",
    """CREATE TABLE hard_state (
        id INTEGER PRIMARY KEY CHECK (id = 0),
        term INTEGER NOT NULL,
        vote TEXT,
        commit_index INTEGER NOT NULL,
        crc INTEGER NOT NULL
    )""",
    """CREATE TABLE snapshot (
        id INTEGER PRIMARY KEY CHECK (id = 0),
        idx INTEGER NOT NULL,
        term INTEGER NOT NULL,
        configuration TEXT NOT NULL,
        data BLOB NOT NULL,
        crc INTEGER NOT NULL
    )""",
    """CREATE TABLE entries (
        idx INTEGER PRIMARY KEY,
        term INTEGER NOT NULL,
        kind INTEGER NOT NULL,
        data BLOB NOT NULL,
        crc INTEGER NOT NULL
    )""",
    _CREATE_BOOTSTRAP,
)
_INSERT_ENTRY: Final = "INSERT INTO entries (idx, term, kind, data, crc) VALUES (?, ?, ?, ?, ?)"
_SAVE_HARD_STATE: Final = (
    "INSERT OR REPLACE INTO hard_state (id, term, vote, commit_index, crc) VALUES (0, ?, ?, ?, ?)"
)
_SAVE_SNAPSHOT: Final = (
    "INSERT OR REPLACE INTO snapshot (id, idx, term, configuration, data, crc) VALUES (0, ?, ?, ?, ?, ?)"
)


def _entry_crc(index: int, term: int, kind: int, data: bytes) -> int:
    # The header fields seed the CRC of the payload: one C call per entry, no packing.
    return crc32(data, (index * 0x9E3779B1 + term * 0x85EBCA6B + kind) & _MASK)


def _hard_state_crc(term: int, vote: str | None, commit: int) -> int:
    return crc32(repr((term, vote, commit)).encode())


def _snapshot_crc(index: int, term: int, configuration: str, data: bytes) -> int:
    return crc32(data, crc32(repr((index, term, configuration)).encode()))


def _entry_rows(entries: Sequence[Entry]) -> list[tuple[int, int, int, bytes, int]]:
    return [
        (e.index, e.term, e.kind, e.data, _entry_crc(e.index, e.term, e.kind, e.data)) for e in entries
    ]


def _cause(error: BaseException) -> str:
    """The operator-facing name of what went wrong, leading the one-line message."""
    if isinstance(error, sqlite3.Error):
        code = (error.sqlite_errorcode or 0) & 0xFF
        name = error.sqlite_errorname or ""
        if code == sqlite3.SQLITE_FULL:
            return "disk full"
        if name == "SQLITE_IOERR_FSYNC":
            return "fsync failed"
        if code == sqlite3.SQLITE_IOERR:
            return "I/O error"
        if code in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB):
            return "corruption"
        if code == sqlite3.SQLITE_READONLY:
            return "read-only database"
        if code in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
            return "database locked"
        return "database error"
    if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        return "disk full"
    return "I/O error"


def _detail(error: BaseException) -> str:
    if isinstance(error, sqlite3.Error) and error.sqlite_errorname:
        return f"{error} ({error.sqlite_errorname})"
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    return str(error)


def _is_corruption(error: sqlite3.Error) -> bool:
    return (error.sqlite_errorcode or 0) & 0xFF in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB)


class SqliteStorage:
    """A node's log, hard state and snapshot in `<data_dir>/raft.db`.

    `fsync=False` (synchronous=OFF) makes a power cut lose acknowledged writes; it is for
    benchmarks and tests only. Calls must not overlap (the driver is single-threaded per
    node), but they may come from different threads, e.g. an executor.

    Opening checks the structure (quick_check, identity, a gap-free log) without reading
    every row; `initial_state()` reads every row anyway and checks its CRC there. So a
    restart meets CorruptStorage from either call, and pays for one pass over the log.
    """

    def __init__(self, data_dir: Path | str, *, node_id: str, cluster_id: str, fsync: bool = True) -> None:
        self.directory = Path(data_dir)
        self.path = self.directory / DB_NAME
        self.node_id = node_id
        self.cluster_id = cluster_id
        self._lock_fd: int | None = None
        self._connection: sqlite3.Connection | None = None
        self._schema_version = SCHEMA_VERSION
        self._snapshot_index = 0
        self._first_index = 1
        """The first stored entry's index (snapshot index + 1 without a trailing log)."""
        self._last_index = 0
        try:
            self._open(fsync)
        except BaseException:
            self._release()
            raise

    # --- opening -------------------------------------------------------------------------

    def _open(self, fsync: bool) -> None:
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise StorageError(f"cannot create data directory {self.directory}: {_detail(error)}") from error
        self._check_directory()
        self._lock()
        fresh = not self.path.exists()
        if not fresh:
            self._check_header()
            self._check_wal()
            self._validate()
        try:
            connection = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            self._connection = connection
            mode = connection.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if mode != "wal":
                raise StorageError(f"cannot put {self.path} in WAL mode (journal mode stays {mode!r})")
            connection.execute(f"PRAGMA synchronous = {'FULL' if fsync else 'OFF'}")
            if fresh:
                connection.execute("BEGIN IMMEDIATE")
                for statement in _SCHEMA:
                    connection.execute(statement)
                connection.execute(
                    "INSERT INTO meta (id, schema_version, cluster_id, node_id) VALUES (0, ?, ?, ?)",
                    (SCHEMA_VERSION, self.cluster_id, self.node_id),
                )
                connection.execute("COMMIT")
                self._sync_directory()
            elif self._schema_version == 1:
                connection.execute("BEGIN IMMEDIATE")
                connection.execute(_CREATE_BOOTSTRAP)
                connection.execute("UPDATE meta SET schema_version = ?", (SCHEMA_VERSION,))
                connection.execute("COMMIT")
        except (sqlite3.Error, OSError) as error:
            raise StorageError(self._explain(error, f"opening {self.path}")) from error

    def _check_directory(self) -> None:
        try:
            names = sorted(os.listdir(self.directory))
        except OSError as error:
            raise StorageError(f"cannot list data directory {self.directory}: {_detail(error)}") from error
        for name in names:
            if name not in KNOWN_FILES:
                raise CorruptStorage(
                    f"unknown file {self.directory / name} in data directory {self.directory};"
                    " refusing to start next to files raftfsm did not write"
                )
        if DB_NAME not in names and f"{DB_NAME}-wal" in names:
            raise CorruptStorage(f"{self.directory / (DB_NAME + '-wal')} exists but {self.path} does not")

    def _lock(self) -> None:
        lock_path = self.directory / LOCK_NAME
        try:
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as error:
            raise StorageError(f"cannot open lock file {lock_path}: {_detail(error)}") from error
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise StorageError(
                f"data directory {self.directory} is in use by process {holder} (it holds {lock_path})"
            ) from None
        except OSError as error:
            os.close(fd)
            raise StorageError(f"cannot lock {lock_path}: {_detail(error)}") from error
        self._lock_fd = fd
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        except OSError as error:
            raise StorageError(f"cannot write pid to lock file {lock_path}: {_detail(error)}") from error

    def _check_header(self) -> None:
        """Catch foreign and emptied files before SQLite sees them: SQLite takes a zero-length
        file for a new database and would initialize it as if this node never ran."""
        try:
            with open(self.path, "rb") as file:
                header = file.read(100)
        except OSError as error:
            raise StorageError(f"cannot read {self.path}: {_detail(error)}") from error
        if not header:
            raise CorruptStorage(
                f"{self.path} is empty (an interrupted first start leaves this too; remove the"
                " directory only if this node never joined a cluster)"
            )
        if not header.startswith(_SQLITE_MAGIC):
            raise CorruptStorage(f"{self.path} is not an SQLite database (foreign or overwritten file)")
        if len(header) < 100:
            raise CorruptStorage(f"{self.path} is truncated ({len(header)} bytes, less than its header)")

    def _check_wal(self) -> None:
        """Refuse a WAL whose replay would silently drop committed transactions. This must
        come before any SQLite connection, even the read-only one of `_validate`: opening
        the database replays the WAL, and the next checkpoint makes the loss permanent."""
        wal = self.directory / f"{DB_NAME}-wal"
        try:
            report = inspect_wal(wal)
        except OSError as error:
            raise StorageError(f"cannot read {wal}: {_detail(error)}") from error
        if report.problem is not None:
            raise CorruptStorage(f"{wal} is damaged: {report.problem}; no file was changed")

    def _validate(self) -> None:
        """Check the database read-only first: a read-write connection checkpoints the WAL
        into the file when it closes, and a file found corrupt must stay as it was."""
        try:
            uri = self.path.resolve().as_uri() + "?mode=ro"
            reader = sqlite3.connect(uri, uri=True, isolation_level=None)
        except sqlite3.Error as error:
            raise StorageError(f"{_cause(error)} while opening {self.path}: {_detail(error)}") from error
        try:
            self._validate_with(reader)
        except sqlite3.Error as error:
            if _is_corruption(error):
                raise CorruptStorage(f"{self.path} is corrupt: {_detail(error)}") from error
            raise StorageError(f"{_cause(error)} while checking {self.path}: {_detail(error)}") from error
        finally:
            reader.close()

    def _validate_with(self, reader: sqlite3.Connection) -> None:
        problems = [row[0] for row in reader.execute("PRAGMA quick_check")]
        if problems != ["ok"]:
            first = " ".join(problems[0].split())  # SQLite's report spans lines; the message must not
            raise CorruptStorage(
                f"{self.path} fails SQLite's integrity check ({len(problems)} problems), first: {first[:200]}"
            )
        application_id = reader.execute("PRAGMA application_id").fetchone()[0]
        if application_id != APPLICATION_ID:
            raise CorruptStorage(
                f"{self.path} is an SQLite database but not a raftfsm log"
                f" (application_id {application_id:#x})"
            )
        tables = {row[0] for row in reader.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if "meta" not in tables:
            raise CorruptStorage(f"{self.path} has no meta table")
        meta = reader.execute("SELECT schema_version, cluster_id, node_id FROM meta").fetchall()
        if len(meta) != 1:
            raise CorruptStorage(f"{self.path} has {len(meta)} meta rows, not 1")
        schema_version, cluster_id, node_id = meta[0]
        if schema_version not in (1, SCHEMA_VERSION):
            raise StorageError(
                f"{self.path} has schema version {schema_version};"
                f" this raftfsm reads versions 1 and {SCHEMA_VERSION}"
            )
        expected = _TABLES if schema_version == SCHEMA_VERSION else _TABLES_V1
        if tables != expected:
            raise CorruptStorage(f"{self.path} has tables {sorted(tables)}, not {sorted(expected)}")
        self._schema_version = schema_version
        if (cluster_id, node_id) != (self.cluster_id, self.node_id):
            raise StorageError(
                f"data directory {self.directory} belongs to node {node_id!r} of cluster {cluster_id!r};"
                f" refusing to open it as node {self.node_id!r} of cluster {self.cluster_id!r}"
            )
        snapshot = reader.execute("SELECT idx FROM snapshot").fetchone()
        self._snapshot_index = snapshot[0] if snapshot else 0
        count, first, last = reader.execute("SELECT COUNT(*), MIN(idx), MAX(idx) FROM entries").fetchone()
        # Indexes are unique (primary key), so count == last - first + 1 means no gaps. A
        # trailing log may start before the snapshot's index, but must reach past it.
        if count and (
            not 1 <= first <= self._snapshot_index + 1 or last < self._snapshot_index or last - first + 1 != count
        ):
            raise CorruptStorage(
                f"{self.path} holds {count} log entries spanning {first}..{last} after a snapshot at"
                f" {self._snapshot_index}; the log has a gap"
            )
        self._first_index = first if count else self._snapshot_index + 1
        self._last_index = last if count else self._snapshot_index

    def _sync_directory(self) -> None:
        """Make the new file's directory entry durable, or a crash could lose the whole
        database although its own contents were fsynced."""
        fd = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    # --- the Storage protocol ------------------------------------------------------------

    def initial_state(self) -> PersistentState:
        connection = self._open_connection()
        try:
            hard_row = connection.execute("SELECT term, vote, commit_index, crc FROM hard_state").fetchone()
            snapshot_row = connection.execute(
                "SELECT idx, term, configuration, data, crc FROM snapshot"
            ).fetchone()
            rows = connection.execute(
                "SELECT idx, term, kind, data, crc FROM entries ORDER BY idx"
            ).fetchall()
            bootstrap_row = connection.execute("SELECT configuration, crc FROM bootstrap").fetchone()
        except sqlite3.Error as error:
            if _is_corruption(error):
                raise CorruptStorage(f"{self.path} is corrupt: {_detail(error)}") from error
            raise StorageError(f"{_cause(error)} while loading {self.path}: {_detail(error)}") from error
        hard_state = self._decode_hard_state(hard_row)
        snapshot = self._decode_snapshot(snapshot_row)
        bootstrap = None
        if bootstrap_row is not None:
            text, crc = bootstrap_row
            if crc32(text.encode()) != crc:
                raise CorruptStorage(f"{self.path}: the bootstrap configuration fails its checksum")
            bootstrap = self._decode_configuration(text, "the bootstrap configuration")
        return PersistentState(hard_state, snapshot, self._decode_entries(rows, snapshot), bootstrap)

    def bootstrap(self, configuration: Configuration) -> None:
        """Store the configuration this node starts from (once, before it takes part)."""
        connection = self._open_connection()
        text = json.dumps(configuration.to_json())
        try:
            connection.execute("BEGIN IMMEDIATE")
            connection.execute("INSERT OR REPLACE INTO bootstrap (id, configuration, crc) VALUES (0, ?, ?)",
                               (text, crc32(text.encode())))
            connection.execute("COMMIT")
        except (sqlite3.Error, OSError) as error:
            raise self._failed(connection, error, f"storing the bootstrap configuration in {self.path}", 0) \
                from error

    def persist(
        self, entries: Sequence[Entry], hard_state: HardState | None, snapshot: Snapshot | None
    ) -> None:
        connection = self._open_connection()
        check_batch(entries, snapshot, self._first_index, self._last_index)
        check_storable(entries, hard_state, snapshot)
        if not entries and hard_state is None and snapshot is None:
            return  # an empty Ready: no transaction, no fsync
        try:
            connection.execute("BEGIN IMMEDIATE")
            if snapshot is not None:
                connection.execute("DELETE FROM entries")
                self._save_snapshot(connection, snapshot)
            if entries:
                connection.execute("DELETE FROM entries WHERE idx >= ?", (entries[0].index,))
                connection.executemany(_INSERT_ENTRY, _entry_rows(entries))
            if hard_state is not None:
                term, vote, commit = hard_state.term, hard_state.vote, hard_state.commit
                crc = _hard_state_crc(term, vote, commit)
                connection.execute(_SAVE_HARD_STATE, (term, vote, commit, crc))
            connection.execute("COMMIT")
        except (sqlite3.Error, OSError) as error:
            doing = f"persisting {describe_batch(entries, hard_state, snapshot)} to {self.path}"
            size = sum(len(entry.data) for entry in entries) + (len(snapshot.data) if snapshot else 0)
            raise self._failed(connection, error, doing, size) from error
        if snapshot is not None:
            self._snapshot_index = self._last_index = snapshot.index
            self._first_index = snapshot.index + 1
        if entries:
            self._last_index = entries[-1].index

    def compact(self, snapshot: Snapshot, log_from: int | None = None) -> None:
        connection = self._open_connection()
        keep = snapshot.index + 1 if log_from is None else log_from
        check_compaction(snapshot, keep, self._snapshot_index, self._first_index, self._last_index)
        check_storable((), None, snapshot)
        try:
            connection.execute("BEGIN IMMEDIATE")
            self._save_snapshot(connection, snapshot)
            connection.execute("DELETE FROM entries WHERE idx < ?", (keep,))
            connection.execute("COMMIT")
        except (sqlite3.Error, OSError) as error:
            doing = f"compacting the log up to {snapshot.index} in {self.path}"
            raise self._failed(connection, error, doing, len(snapshot.data)) from error
        self._snapshot_index = snapshot.index
        self._first_index = keep

    def close(self) -> None:
        """Checkpoint and close the database, then release the directory lock. Safe to call
        twice."""
        connection, self._connection = self._connection, None
        try:
            if connection is not None:
                connection.close()
        except sqlite3.Error as error:
            raise StorageError(self._explain(error, f"closing {self.path}")) from error
        finally:
            self._release()

    def __enter__(self) -> SqliteStorage:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # --- helpers -------------------------------------------------------------------------

    def _open_connection(self) -> sqlite3.Connection:
        if self._connection is None:
            raise StorageError(f"{self.path} is closed")
        return self._connection

    def _release(self) -> None:
        if self._connection is not None:
            connection, self._connection = self._connection, None
            with contextlib.suppress(sqlite3.Error):  # already failing: report the first error
                connection.close()
        if self._lock_fd is not None:
            fd, self._lock_fd = self._lock_fd, None
            os.close(fd)  # closing the only descriptor releases the flock

    def _failed(
        self, connection: sqlite3.Connection, error: BaseException, doing: str, size: int
    ) -> StorageError:
        """Roll back so the file holds exactly the transactions that were acknowledged."""
        message = self._explain(error, doing, size)
        if connection.in_transaction:
            try:
                connection.execute("ROLLBACK")
            except sqlite3.Error as rollback_error:
                message += f"; rollback failed too: {_detail(rollback_error)}"
        return StorageError(message)

    def _explain(self, error: BaseException, doing: str, size: int = 0) -> str:
        """One line: cause, what was being done, SQLite's words, and the limit that was hit.

        SQLite reports a full disk as SQLITE_FULL only sometimes (a refused write() can
        also come back as SQLITE_IOERR_WRITE) and never passes errno on, so a failed write
        is checked against the free space and the process's file size limit.
        """
        cause, detail = _cause(error), _detail(error)
        if cause not in ("I/O error", "disk full"):
            return f"{cause} while {doing}: {detail}"
        try:
            disk = os.statvfs(self.directory)
            largest = max(
                (self.directory / name).stat().st_size
                for name in (DB_NAME, f"{DB_NAME}-wal")
                if (self.directory / name).exists()
            )
        except (OSError, ValueError):
            return f"{cause} while {doing}: {detail}"
        free = disk.f_bavail * disk.f_frsize
        file_size_limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
        if free < 2 * size + _LOW_SPACE:
            return f"disk full while {doing}: {detail}; {free} bytes free on its file system"
        if file_size_limit != resource.RLIM_INFINITY and largest + size + _LOW_SPACE >= file_size_limit:
            return (
                f"disk full while {doing}: {detail}; the process's file size limit"
                f" (RLIMIT_FSIZE) of {file_size_limit} bytes is reached"
            )
        return f"{cause} while {doing}: {detail}"

    @staticmethod
    def _save_snapshot(connection: sqlite3.Connection, snapshot: Snapshot) -> None:
        configuration = json.dumps(snapshot.configuration.to_json())
        crc = _snapshot_crc(snapshot.index, snapshot.term, configuration, snapshot.data)
        connection.execute(
            _SAVE_SNAPSHOT, (snapshot.index, snapshot.term, configuration, snapshot.data, crc)
        )

    def _decode_hard_state(self, row: tuple[int, str | None, int, int] | None) -> HardState:
        if row is None:
            return HardState()
        term, vote, commit, crc = row
        if _hard_state_crc(term, vote, commit) != crc:
            raise CorruptStorage(f"{self.path}: the hard state fails its checksum")
        return HardState(term, vote, commit)

    def _decode_snapshot(self, row: tuple[int, int, str, bytes, int] | None) -> Snapshot | None:
        if row is None:
            return None
        index, term, configuration, data, crc = row
        if not isinstance(data, bytes) or _snapshot_crc(index, term, configuration, data) != crc:
            raise CorruptStorage(f"{self.path}: the snapshot at {index} fails its checksum")
        return Snapshot(index, term, self._decode_configuration(configuration, f"the snapshot at {index}"), data)

    def _decode_configuration(self, text: str, what: str) -> Configuration:
        """A configuration as stored: a list of members, or (before membership changes
        existed) a list of voter ids."""
        try:
            members = json.loads(text)
            if isinstance(members, list) and all(isinstance(m, str) for m in members):
                return Configuration.voters_only(members)
            return Configuration.from_json(members)
        except (ValueError, ConfigurationError) as exc:
            raise CorruptStorage(f"{self.path}: {what} has a malformed configuration: {exc}") from None

    def _decode_entries(
        self, rows: list[tuple[int, int, int, bytes, int]], snapshot: Snapshot | None
    ) -> list[Entry]:
        expected_first = snapshot.index + 1 if snapshot is not None else 1
        # a trailing log kept after compaction starts earlier, but reaches the snapshot
        if rows and (
            not 1 <= rows[0][0] <= expected_first or rows[-1][0] < expected_first - 1
            or rows[-1][0] - rows[0][0] + 1 != len(rows)
        ):
            raise CorruptStorage(
                f"{self.path} holds {len(rows)} log entries spanning {rows[0][0]}..{rows[-1][0]};"
                f" expected a gap-free log from {expected_first} (or a trailing log before it)"
            )
        kinds = _KINDS
        entries: list[Entry] = []
        append = entries.append
        for index, term, kind, data, crc in rows:
            if kind not in kinds or not isinstance(data, bytes) or _entry_crc(index, term, kind, data) != crc:
                raise CorruptStorage(f"{self.path}: log entry {index} fails its checksum")
            append(Entry(term, index, kinds[kind], data))
        return entries


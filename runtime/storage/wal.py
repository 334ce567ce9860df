"""Read an SQLite write-ahead log (`raft.db-wal`) and tell a torn tail from damage.

Why: when SQLite opens a database whose WAL was not checkpointed (after kill -9 or a
power cut), it replays the WAL's frames from the start and stops, without a word, at the
first frame that does not verify. That is right for a torn tail, the frames of a
transaction that was being written when the process died; it is wrong when a frame in the
middle was damaged later, because every transaction committed after that frame is dropped
as silently. For a Raft node this means acknowledged entries lost and a vote forgotten (a
second vote in the same term). `inspect_wal` reads the file before SQLite does, so that
`SqliteStorage` can refuse to start instead.

The format (https://www.sqlite.org/fileformat2.html#walformat; all header fields are
big-endian 32-bit integers):

    WAL header, 32 bytes    magic (0x377f0682 or 0x377f0683), format version (3007000),
                            page size, checkpoint sequence, salt-1, salt-2,
                            checksum-1, checksum-2 (over the first 24 header bytes)
    frames, each            page number, database size in pages after a commit (nonzero
    24 + page size bytes    only in a transaction's commit frame), salt-1, salt-2,
                            checksum-1, checksum-2, then the page

The checksum treats its input as 32-bit words, little-endian under magic 0x377f0682 and
big-endian under 0x377f0683, and runs over pairs of words (x, y) as
`s1 += x + s2; s2 += y + s1` modulo 2**32. A frame's checksum covers the first 8 bytes of
its header and its page, seeded with the previous frame's checksum (the WAL header's for
the first frame), so it is cumulative: a frame is valid when its salts equal the header's,
its page number is not 0 and its checksum matches. SQLite keeps the longest valid prefix
up to its last commit frame and ignores the rest; with an invalid header it ignores the
whole file. Each restart of the WAL (after a complete checkpoint) writes a new header with
new salts over the old one and new frames over the old ones, so frames with other salts
are leftovers of an earlier generation, already in the database file.

What counts as damage (`WalReport.problem`), assuming one damaged place:

- the chain breaks at frame B, and a later frame of the same generation (the header's
  salts, page number not 0) that is a commit frame verifies, seeded with its predecessor's
  stored checksum (the chain goes on past a frame damaged in place) or with the checksum
  its predecessor should have had (the predecessor's checksum field is what was damaged).
  Each such frame is a transaction SQLite would drop.
- the header fails its checks (magic, page size, checksum) while, for some byte order
  and page size, one of the first frames verifies when seeded from the header (its
  stored or its recomputed checksum) or from its predecessor (a zeroed block may have
  taken the first frame too), and the frames that verify that way include a commit
  frame: SQLite would drop the whole WAL.
- a header that verifies but names another format version (SQLite refuses to open it).

Not damage: a missing or empty WAL, one shorter than its header, a trailing partial
frame, frames of earlier generations, and a break after which nothing committed of the
current generation verifies (a torn tail: at most an unacknowledged transaction is lost,
which is what SQLite's replay does). Valid frames after a break that no commit frame
follows are also left alone: SQLite itself leaves them when a transaction that spilled
pages to the WAL rewrites one of them in place and dies before its commit fixes up the
checksums.

Limits: damage inside the last commit frame of the WAL, or inside the last transaction
when none of its later frames verify, looks exactly like a torn tail and is not detected.
Conversely, a power cut that reaches the disk with a later frame of the transaction being
written (its commit frame included) but not an earlier one looks like damage, although
that transaction was never acknowledged (synchronous=FULL acknowledges after the fsync):
the node then refuses to start and an operator decides. A kill -9 cannot produce this,
since the page cache survives it.

Speed: the checksums of a block of frames are computed together, one Python big-integer
operation per 8-byte word position over all the frames of the block (a 64-bit lane per
frame), so the cost per byte is a handful of C-level operations, not an interpreter loop.
The checksum is affine in its seed, so the zero-seeded sums are chained afterwards.
"""

from __future__ import annotations

import struct
from array import array
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Final, NamedTuple

WAL_HEADER_SIZE: Final = 32
FRAME_HEADER_SIZE: Final = 24
WAL_MAGIC_LITTLE: Final = 0x377F0682  # checksum words are little-endian
WAL_MAGIC_BIG: Final = 0x377F0683  # checksum words are big-endian
WAL_FORMAT_VERSION: Final = 3007000
PAGE_SIZES: Final = tuple(1 << shift for shift in range(9, 17))  # 512 .. 65536

_MASK: Final = 0xFFFFFFFF
_HEADER: Final = struct.Struct(">8I")
_FRAME_HEADER: Final = struct.Struct(">II8sII")
_BLOCK_BYTES: Final = 4 << 20  # frames read and summed together: bounds memory, keeps lanes in cache
_MASK_EVERY: Final = 16  # unmasked lanes overflow 64 bits after 23 word pairs in the worst case
_WORD_ARRAY: Final = next(code for code in "IL" if array(code).itemsize == 4)

Checksum = tuple[int, int]


def checksum(data: bytes | memoryview, seed: Checksum = (0, 0), *, big_endian: bool = False) -> Checksum:
    """SQLite's WAL checksum of `data` (a multiple of 8 bytes), seeded with `seed`.

    The plain loop, for the 24 header bytes and for checking the fast path."""
    if len(data) % 8:
        raise ValueError(f"the WAL checksum runs over 8-byte units, got {len(data)} bytes")
    words = struct.unpack(f"{'>' if big_endian else '<'}{len(data) // 4}I", data)
    s1, s2 = seed
    for i in range(0, len(words), 2):
        s1 = (s1 + words[i] + s2) & _MASK
        s2 = (s2 + words[i + 1] + s1) & _MASK
    return s1, s2


class _Affine:
    """The checksum of one frame as a function of its seed: (s1, s2) = M**n (seed) + L,
    with M = [[1, 1], [1, 2]] the step of one word pair, n the frame's word pairs and L
    the frame's checksum from a zero seed."""

    def __init__(self, page_size: int) -> None:
        a, b, c, d = 1, 0, 0, 1  # M**0
        for _ in range((8 + page_size) // 8):
            a, b, c, d = (a + c) & _MASK, (b + d) & _MASK, (a + 2 * c) & _MASK, (b + 2 * d) & _MASK
        self.matrix = (a, b, c, d)

    def __call__(self, seed: Checksum, zero_seeded: Checksum) -> Checksum:
        a, b, c, d = self.matrix
        s1, s2 = seed
        return (a * s1 + b * s2 + zero_seeded[0]) & _MASK, (c * s1 + d * s2 + zero_seeded[1]) & _MASK


def _zero_seeded_sums(block: memoryview, count: int, page_size: int, big_endian: bool) -> list[Checksum]:
    """The zero-seeded checksum of each of the `count` whole frames in `block`.

    Lane k of a big integer holds frame k's 8 bytes at one position (words x and y as
    x + 2**32 y); the two running sums of every frame advance together, one integer
    operation per step instead of one per frame. Lanes keep their carries above bit 32
    and are masked back every `_MASK_EVERY` steps, before they could spill into the next
    lane."""
    if big_endian:  # make every word little-endian; array swaps 4-byte items in C
        words = array(_WORD_ARRAY)
        words.frombytes(block)
        words.byteswap()
        block = memoryview(words).cast("B")
    frame_size = FRAME_HEADER_SIZE + page_size
    lanes = block.cast("Q")
    stride = frame_size // 8
    low = int.from_bytes(b"\xff\xff\xff\xff\x00\x00\x00\x00" * count, "little")
    from_bytes = int.from_bytes
    s1 = s2 = 0
    # Word pairs covered: the frame header's first 8 bytes (unit 0), then the page (units 3..).
    for step, unit in enumerate((0, *range(FRAME_HEADER_SIZE // 8, stride)), 1):
        pairs = from_bytes(lanes[unit::stride], "little")
        s1 = s1 + (pairs & low) + s2
        s2 = s2 + ((pairs >> 32) & low) + s1
        if step % _MASK_EVERY == 0:
            s1 &= low
            s2 &= low
    s1 &= low
    s2 &= low
    first = struct.unpack(f"<{count}Q", s1.to_bytes(8 * count, "little"))
    second = struct.unpack(f"<{count}Q", s2.to_bytes(8 * count, "little"))
    return list(zip(first, second, strict=True))


class _Frame(NamedTuple):
    number: int  # 1-based
    offset: int
    page: int
    commit: int  # database size after the commit; 0 in a frame that does not commit
    salts: bytes
    stored: Checksum
    zero_seeded: Checksum


_HEADER_FRAME: Final = _Frame(0, 0, 0, 0, b"", (0, 0), (0, 0))  # "the break is in the WAL header"


class _Block(NamedTuple):
    first: int  # frames before this block
    offset: int
    data: memoryview  # `len(sums)` whole frames
    sums: list[Checksum]  # each frame's zero-seeded checksum


def _blocks(file: BinaryIO, size: int, page_size: int, big_endian: bool, limit: int | None = None) -> Iterator[_Block]:
    """The file's whole frames (at most `limit`), a block at a time."""
    frame_size = FRAME_HEADER_SIZE + page_size
    total = (size - WAL_HEADER_SIZE) // frame_size
    if limit is not None:
        total = min(total, limit)
    per_block = max(1, _BLOCK_BYTES // frame_size)
    first = 0
    while first < total:
        offset = WAL_HEADER_SIZE + first * frame_size
        file.seek(offset)
        block = file.read(min(per_block, total - first) * frame_size)
        count = len(block) // frame_size  # the file may have shrunk meanwhile: use what is there
        if count == 0:
            return
        data = memoryview(block)[: count * frame_size]
        yield _Block(first, offset, data, _zero_seeded_sums(data, count, page_size, big_endian))
        first += count


@dataclass(frozen=True)
class WalReport:
    """What `inspect_wal` found. `problem` is None when SQLite's replay keeps every
    committed transaction the file holds; otherwise it says, in one line, where the
    damage is and what SQLite would drop."""

    path: Path
    size: int
    page_size: int = 0  # 0: no usable header
    big_endian: bool = False
    frames: int = 0  # whole frames in the file, of every generation
    valid: int = 0  # the frames SQLite's replay accepts (a prefix)
    committed: int = 0  # of those, up to the last commit frame: what SQLite keeps
    transactions: int = 0  # commit frames among the committed ones
    stale: int = 0  # frames of earlier generations (other salts)
    torn: bool = False  # the chain breaks, or a partial frame follows, with nothing committed after
    problem: str | None = None


def inspect_wal(path: Path | str) -> WalReport:
    """Read the WAL at `path` without changing it. Raises OSError if it cannot be read;
    a missing file is an empty WAL."""
    path = Path(path)
    try:
        file = open(path, "rb")  # noqa: SIM115 - closed below; the size must come from this handle
    except FileNotFoundError:
        return WalReport(path, 0)
    with file:
        size = file.seek(0, 2)
        if size < WAL_HEADER_SIZE:
            return WalReport(path, size)
        file.seek(0)
        header = file.read(WAL_HEADER_SIZE)
        if len(header) < WAL_HEADER_SIZE:
            return WalReport(path, size)
        return _inspect(path, file, size, header)


def _header_fault(header: bytes) -> str | None:
    magic, _version, page_size, _sequence, _salt1, _salt2, c1, c2 = _HEADER.unpack(header)
    if magic not in (WAL_MAGIC_LITTLE, WAL_MAGIC_BIG):
        return f"bad magic number {magic:#010x}"
    if page_size not in PAGE_SIZES:
        return f"bad page size {page_size}"
    if checksum(header[:24], big_endian=magic == WAL_MAGIC_BIG) != (c1, c2):
        return "its checksum does not match"
    return None


def _inspect(path: Path, file: BinaryIO, size: int, header: bytes) -> WalReport:
    magic, version, page_size, _sequence, _salt1, _salt2, c1, c2 = _HEADER.unpack(header)
    fault = _header_fault(header)
    if fault is not None:
        return _inspect_damaged_header(path, file, size, header, fault)
    big_endian = magic == WAL_MAGIC_BIG
    if version != WAL_FORMAT_VERSION:
        return WalReport(
            path, size, page_size, big_endian,
            problem=f"the WAL header names format version {version}, not {WAL_FORMAT_VERSION}",
        )
    chain = _Chain(header[16:24], (c1, c2), checksum(header[:24], big_endian=big_endian), page_size)
    for block in _blocks(file, size, page_size, big_endian):
        chain.add(block)
    return chain.report(path, size, big_endian)


_PROBE_FRAMES: Final = 8  # how far past a damaged header to look for the start of a chain


def _inspect_damaged_header(path: Path, file: BinaryIO, size: int, header: bytes, fault: str) -> WalReport:
    """SQLite ignores a WAL whose header fails its checks, which drops committed
    transactions if there are any behind it. The header no longer says the byte order
    or the page size, so try each: a geometry fits when one of the first frames verifies
    when seeded from the header (its stored or recomputed checksum) or from its
    predecessor (the damage, say a zeroed block, may have reached the first frames too).
    Then every frame that verifies that way counts, and a commit frame among them is a
    transaction SQLite would drop."""
    c1, c2 = _HEADER.unpack(header)[6:8]
    stored = c1, c2
    for big_endian in (False, True):
        recomputed = checksum(header[:24], big_endian=big_endian)
        for page_size in PAGE_SIZES:
            probe = next(_blocks(file, size, page_size, big_endian, limit=_PROBE_FRAMES), None)
            if probe is None:
                continue
            chain = _Chain(b"", stored, recomputed, page_size, broken=_HEADER_FRAME)
            chain.add(probe)
            if not chain.verified_after:
                continue
            chain = _Chain(chain.first_verified_salts, stored, recomputed, page_size, broken=_HEADER_FRAME)
            for block in _blocks(file, size, page_size, big_endian):
                chain.add(block)
            if not chain.commits_after:
                continue
            problem = (
                f"the WAL header (offset 0) is damaged ({fault}), yet {chain.verified_after} frames after it"
                f" verify ({page_size}-byte pages), {chain.commits_after} of them committing transactions"
                f" (the last at frame {chain.last_commit_after}); SQLite would silently ignore the whole WAL"
            )
            return WalReport(path, size, page_size, big_endian, chain.frames, stale=chain.stale, problem=problem)
    return WalReport(path, size, torn=True)


class _Chain:
    """Follows the frames in order: the valid prefix SQLite replays, then, after a break,
    whatever of the same generation still verifies."""

    def __init__(
        self, salts: bytes, stored: Checksum, recomputed: Checksum, page_size: int, broken: _Frame | None = None
    ) -> None:
        self.salts = salts  # b"": not known, take any (a damaged header's chain)
        self.page_size = page_size
        self.step = _Affine(page_size)
        self.frames = 0
        self.valid = 0
        self.committed = 0
        self.transactions = 0
        self.stale = 0
        self.broken = broken
        self.why = ""
        self.first_verified_salts = b""
        self.verified_after = 0  # frames of this generation verifying after the break
        self.commits_after = 0
        self.last_commit_after = 0
        self._previous_stored = stored  # the predecessor's stored checksum
        self._previous_true = recomputed  # what the predecessor's checksum should be, from its own seed

    def add(self, block: _Block) -> None:
        frame_size = FRAME_HEADER_SIZE + self.page_size
        a, b, c, d = self.step.matrix
        unpack = _FRAME_HEADER.unpack_from
        for k, zero_seeded in enumerate(block.sums):
            page, commit, salts, c1, c2 = unpack(block.data, k * frame_size)
            p1, p2 = self._previous_stored
            from_stored = (a * p1 + b * p2 + zero_seeded[0]) & _MASK, (c * p1 + d * p2 + zero_seeded[1]) & _MASK
            self.frames += 1
            if self.broken is None and salts == self.salts and page and from_stored == (c1, c2):
                self.valid += 1  # the common case: the chain holds
                if commit:
                    self.committed, self.transactions = self.valid, self.transactions + 1
            else:
                number = block.first + k + 1
                frame = _Frame(number, block.offset + k * frame_size, page, commit, salts, (c1, c2), zero_seeded)
                self._irregular(frame, from_stored)
            self._previous_true = from_stored
            self._previous_stored = c1, c2

    def _irregular(self, frame: _Frame, from_stored: Checksum) -> None:
        """A frame off the valid prefix: the break itself, or one after it."""
        ours = frame.salts == self.salts
        if not ours:
            self.stale += 1
        if self.broken is None:
            self.broken = frame
            self.why = (
                "carries the salts of another WAL generation" if not ours
                else "has page number 0" if frame.page == 0
                else "fails its checksum"
            )
        elif (ours or not self.salts) and frame.page != 0 and frame.stored in (
            from_stored, self.step(self._previous_true, frame.zero_seeded)
        ):
            if not self.verified_after:
                self.first_verified_salts = frame.salts
            self.verified_after += 1
            if frame.commit:
                self.commits_after += 1
                self.last_commit_after = frame.number

    def report(self, path: Path, size: int, big_endian: bool) -> WalReport:
        partial = (size - WAL_HEADER_SIZE) % (FRAME_HEADER_SIZE + self.page_size) != 0
        problem = None
        broken = self.broken
        if broken is not None and self.commits_after:
            problem = (
                f"frame {broken.number} (offset {broken.offset}) {self.why}, yet {self.verified_after} later"
                f" frames of the same WAL generation verify, {self.commits_after} of them committing"
                f" transactions (the last at frame {self.last_commit_after}); SQLite would silently keep"
                f" only frames 1..{self.committed} and drop those transactions"
            )
        return WalReport(
            path, size, self.page_size, big_endian, self.frames, self.valid, self.committed,
            self.transactions, self.stale, problem=problem,
            torn=problem is None and (partial or (broken is not None and broken.salts == self.salts)),
        )

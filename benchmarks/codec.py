"""Encode and decode rates of the wire codec, next to bare msgpack on the same frame
(the floor: what schema checks and attrs objects add on top of parsing).

    python benchmarks/codec.py [--iterations N] [--entries E] [--size BYTES]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import msgpack

from benchmarks.common import table, write_json
from generated.raft_fsm import AppendEntries, AppendEntriesReply, Entry, EntryKind
from runtime.codec import decode, encode


def append_entries(entries: int, size: int) -> AppendEntries:
    return AppendEntries(
        msg_id=1, sender="n1", receiver="n2", term=7, leader_id="n1", prev_log_index=1000,
        prev_log_term=7, leader_commit=999, read_round=0,
        entries=tuple(
            Entry(term=7, index=1001 + i, kind=EntryKind.data, data=bytes([i % 256]) * size)
            for i in range(entries)
        ),
    )


def best_seconds_per_call(call: Callable[[], object], iterations: int) -> float:
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(iterations):
            call()
        best = min(best, time.perf_counter() - start)
    return best / iterations


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--iterations", type=int, default=2000)
    parser.add_argument("--entries", type=int, default=64)
    parser.add_argument("--size", type=int, default=100)
    args = parser.parse_args()

    message = append_entries(args.entries, args.size)
    frame = encode(message)
    assert decode(frame) == message
    reply = AppendEntriesReply(msg_id=1, sender="n2", receiver="n1", term=7, success=True,
                               match_index=1064, reject_index=0, conflict_index=0, conflict_term=0,
                               read_round=0)
    reply_frame = encode(reply)
    plain = msgpack.unpackb(frame, raw=False)

    n = args.iterations
    timings = {
        "encode": best_seconds_per_call(lambda: encode(message), n),
        "decode": best_seconds_per_call(lambda: decode(frame), n),
        "msgpack packb (floor)": best_seconds_per_call(lambda: msgpack.packb(plain, use_bin_type=True), n),
        "msgpack unpackb (floor)": best_seconds_per_call(
            lambda: msgpack.unpackb(frame, raw=False, strict_map_key=True, use_list=False), n),
        "encode reply": best_seconds_per_call(lambda: encode(reply), n * 10),
        "decode reply": best_seconds_per_call(lambda: decode(reply_frame), n * 10),
    }
    round_trip = timings["encode"] + timings["decode"]
    rows = [[name, seconds * 1e6, 1 / seconds] for name, seconds in timings.items()]
    rows.append(["encode+decode", round_trip * 1e6, 1 / round_trip])
    print(f"AppendEntries with {args.entries} entries of {args.size} bytes: {len(frame)} bytes on the wire")
    print(table(["operation", "µs/frame", "frames/s"], rows))
    print(f"round trip: {args.entries / round_trip:,.0f} entries/s, "
          f"{len(frame) / round_trip / 1e6:,.1f} MB/s")
    path = write_json("codec", {
        "entries": args.entries, "entry_bytes": args.size, "frame_bytes": len(frame),
        "iterations": n,
        "us_per_frame": {name: seconds * 1e6 for name, seconds in timings.items()},
        "round_trip_frames_per_s": 1 / round_trip,
        "round_trip_entries_per_s": args.entries / round_trip,
    })
    print(f"wrote {path}")


if __name__ == "__main__":
    main()

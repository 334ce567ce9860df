"""Numeric limits shared by the codec, the core and storage."""

from __future__ import annotations

from typing import Final

MAX_WIRE_INT: Final = 2**63 - 1
"""Every integer on the wire (terms, indexes, offsets, ids) is in 0..MAX_WIRE_INT: what a
signed 64-bit SQLite column, and most other stores, can hold."""

MAX_TERM: Final = MAX_WIRE_INT
"""The largest term a node adopts or campaigns in. A message with a larger term is
invalid, and a node at this term never campaigns again: storage could not hold the next."""

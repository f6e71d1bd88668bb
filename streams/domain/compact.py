"""Compact JSON, the one text form of state keys, timer keys and send ids' parts: no spaces,
text unescaped (a CJK character is 3 UTF-8 bytes, not a 6-byte escape). These bytes must
never change between releases (a key names stored state; a send id is how a repeat is
recognised downstream), so they come from the standard library's encoder; journal records and
store values, which any JSON reader reads, are written by orjson (streams.journal.dump)."""

from __future__ import annotations

import json
from typing import Any

#: One encoder built once (json.dumps with any argument builds a new one on every call).
compact = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


def compact_bytes(value: Any) -> bytes:
    """`value` as compact JSON in UTF-8."""
    return compact(value).encode()

"""Hypothesis strategies for the fuzz targets, derived from the Avro schemas themselves.

`records(name)` draws valid values of any record (strings with NUL, BOM, noncharacters, astral
and combining characters, now and then huge ones; arrays and maps now and then of thousands of
items; timestamps anywhere in the long range, often at the caps' edges); `wire(...)` draws the
bytes a consumer may meet: valid records, their mutations (truncated, bit-flipped, spliced,
wrong schema id, trailing bytes, lengths and enum indexes out of range) and random bytes."""

from __future__ import annotations

import struct
from typing import Any

from hypothesis import strategies as st

from schemas import Codec
from schemas import validation as v
from schemas.loader import expanded, pinned_ids

CODEC = Codec()
NAMES = CODEC.names
IDS = pinned_ids()
#: Epoch seconds the targets treat as now (2027-01-15), and in milliseconds.
NOW = 1_800_000_000.0
NOW_MS = round(NOW * 1000)
LONG = (-(1 << 63), (1 << 63) - 1)
INT = (-(1 << 31), (1 << 31) - 1)

#: Strings at the edges of Unicode and of what an id, a title or a body may be.
EDGE_TEXT = st.sampled_from([
    "", " ", "\t", "\x00", "a\x00b", "\x00" * 64, "\ufeff", "\ufffd", "\uffff", "\ufdd0",
    "\U0010ffff", "\U0001f600", "👩‍👩‍👧‍👦", "e\u0301" * 40, "\u202eevil", "中文" * 50,
    "\r\n", "null", "None", "'; DROP TABLE x; --", "%s%n", "\\u0000", "a" * 128, "a" * 129,
    "😀" * 32, "😀" * 33, "x" * 2048, "x" * 2049,
])
#: Huge strings, of up to 256 KiB of UTF-8: a record must fit the producer's 1 MB limit.
HUGE_TEXT = st.tuples(st.sampled_from([1 << 12, 1 << 14, 1 << 16, 1 << 18]),
                      st.sampled_from(["x", "中", "😀", "\x00"])).map(
    lambda nc: nc[1] * (nc[0] // len(nc[1].encode())))
#: Any Unicode scalar value (lone surrogates cannot be UTF-8 and are refused by validation).
TEXT = st.text(st.characters(codec="utf-8"), max_size=40)
STRINGS = st.one_of(TEXT, TEXT, TEXT, EDGE_TEXT, HUGE_TEXT)
#: Timestamps: the long range, and the edges the caps and ClickHouse's DateTime care about.
TIMES = st.one_of(
    st.integers(*LONG),
    st.sampled_from([0, -1, 1, v.EARLIEST_MS - 1, v.EARLIEST_MS, NOW_MS,
                     NOW_MS + v.FUTURE_MS, NOW_MS + v.FUTURE_MS + 1, (1 << 32) * 1000 - 1,
                     (1 << 32) * 1000, 253_402_300_799_999, LONG[0], LONG[1]]),
    st.integers(v.EARLIEST_MS, NOW_MS + v.FUTURE_MS),
    st.integers(v.EARLIEST_MS, NOW_MS + v.FUTURE_MS),
)


def _node(node: Any, named: dict[str, Any]) -> st.SearchStrategy[Any]:
    """A strategy for one (expanded) schema node; named types are remembered by name."""
    if isinstance(node, str):
        prims = {"null": st.none(), "boolean": st.booleans(), "int": st.integers(*INT),
                 "long": st.integers(*LONG), "float": st.floats(width=32),
                 "double": st.floats(), "bytes": st.binary(max_size=64), "string": STRINGS}
        if node in prims:
            return prims[node]
        return st.deferred(lambda: named[node if "." in node else f"pushcascade.{node}"])
    if isinstance(node, list):
        return st.one_of([_node(b, named) for b in node])
    kind = node["type"]
    if kind == "long" and node.get("logicalType") == "timestamp-millis":
        return TIMES
    if isinstance(kind, (dict, list)) or kind in ("null", "boolean", "int", "long", "float",
                                                  "double", "bytes", "string"):
        return _node(kind, named)
    if kind == "array":
        items = _node(node["items"], named)
        return st.one_of(st.lists(items, max_size=5), st.lists(items, max_size=5),
                         st.integers(100, 5000).map(lambda n: ["d"] * n)
                         if node["items"] == "string" else st.just([]))
    if kind == "map":
        values = _node(node["values"], named)
        return st.one_of(st.dictionaries(STRINGS, values, max_size=4),
                         st.integers(17, 2000).map(lambda n: {f"r{i}": "t" for i in range(n)}))
    name = node["name"] if "." in node["name"] else f"{node.get('namespace', 'pushcascade')}." \
        f"{node['name']}"
    if kind == "enum":
        out: st.SearchStrategy[Any] = st.sampled_from(node["symbols"])
    elif kind == "fixed":
        out = st.binary(min_size=node["size"], max_size=node["size"])
    else:
        out = st.fixed_dictionaries({f["name"]: _node(f["type"], named) for f in node["fields"]})
    named[name] = out
    return out


_RECORDS: dict[str, st.SearchStrategy[dict[str, Any]]] = {}


def records(name: str) -> st.SearchStrategy[dict[str, Any]]:
    """Valid values of record `name` (everything the schema allows, caps or not)."""
    if name not in _RECORDS:
        _RECORDS[name] = _node(expanded(name), {})
    return _RECORDS[name]


def named_records(names: tuple[str, ...] = NAMES) -> st.SearchStrategy[tuple[str, dict]]:
    """(name, valid value) of any of `names`."""
    return st.sampled_from(names).flatmap(lambda n: records(n).map(lambda r: (n, r)))


def _varint(n: int) -> bytes:
    """Avro's zigzag varint of any integer (no range check: lengths out of range on purpose)."""
    u = (n << 1) ^ (n >> 127) if n < 0 else n << 1
    out = bytearray()
    while u >= 0x80:
        out.append(u & 0x7F | 0x80)
        u >>= 7
    out.append(u)
    return bytes(out)


WEIRD_INTS = st.sampled_from([-1, -2, -(1 << 31), (1 << 31) - 1, 1 << 31, 1 << 40, 1 << 62,
                              (1 << 63) - 1, -(1 << 63), 4, 5, 1000, 1 << 20])


@st.composite
def mutated(draw: st.DrawFn, data: bytes) -> bytes:
    """One to three mutations of a wire-format value."""
    out = bytearray(data)
    for _ in range(draw(st.integers(1, 3))):
        op = draw(st.sampled_from(["truncate", "flip", "insert", "delete", "schema_id",
                                   "trailing", "varint", "splice", "magic"]))
        cut = draw(st.integers(0, len(out)))
        if op == "truncate":
            del out[cut:]
        elif op == "flip" and out:
            i = draw(st.integers(0, len(out) - 1))
            out[i] ^= draw(st.integers(1, 255))
        elif op == "insert":
            out[cut:cut] = draw(st.binary(min_size=1, max_size=8))
        elif op == "delete":
            del out[cut:cut + draw(st.integers(1, 8))]
        elif op == "schema_id" and len(out) >= 5:
            sid = draw(st.one_of(st.sampled_from(sorted(IDS.values())),
                                 st.integers(0, (1 << 32) - 1),
                                 st.sampled_from([0, 10, 19, 99, (1 << 32) - 1])))
            out[1:5] = struct.pack(">I", sid)
        elif op == "trailing":
            out += draw(st.binary(min_size=1, max_size=8))
        elif op == "varint":  # a length, count or enum index out of range at some position
            out[cut:cut + draw(st.integers(0, 2))] = _varint(draw(WEIRD_INTS))
        elif op == "splice":
            other = draw(wire_valid())
            out[cut:] = other[draw(st.integers(0, len(other))):]
        elif op == "magic" and out:
            out[0] = draw(st.integers(1, 255))
    return bytes(out)


#: Largest value drawn: a record on a topic is under the producer's 1 MB (a dead letter of a
#: record near the limit leaves its value out: test_fuzz_sink.py, tests/unit/test_dead_letters.py).
MAX_VALUE = 512 * 1024


def wire_valid(names: tuple[str, ...] = NAMES) -> st.SearchStrategy[bytes]:
    """A valid wire-format value of one of `names`."""
    return named_records(names).map(lambda nr: CODEC.encode(*nr)).filter(
        lambda data: len(data) <= MAX_VALUE)


def wire(names: tuple[str, ...] = NAMES) -> st.SearchStrategy[bytes]:
    """What a consumer may read: valid values, their mutations, random and near-empty bytes."""
    return st.one_of(
        wire_valid(names),
        wire_valid(names).flatmap(mutated),
        wire_valid(names).flatmap(mutated),
        st.binary(max_size=200),
        st.binary(max_size=8).map(lambda b: b"\x00" + b),
        st.tuples(st.sampled_from(sorted(IDS.values()) + [0, 10, 99]),
                  st.binary(max_size=120)).map(lambda t: b"\x00" + struct.pack(">I", t[0]) + t[1]),
    ).filter(lambda data: len(data) <= MAX_VALUE)

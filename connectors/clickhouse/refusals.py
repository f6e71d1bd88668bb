"""Which failed inserts are the rows' fault, and how the sink splits their batch (pure).

ClickHouse refuses some rows the same way on every retry (a value out of its type's range, an
unparsable value, a batch spanning too many partitions for one INSERT): retrying the batch
would stall the sink, so it splits the batch instead. Any other failure (connection, timeout,
memory, a missing table) is ClickHouse's, and the sink retries the same batch later."""

from __future__ import annotations

import re
from collections.abc import Hashable, Iterable
from datetime import datetime
from enum import Enum
from typing import TypeVar

T = TypeVar("T")

#: ClickHouse error codes (`SELECT errorCodeToName(n)`) an INSERT raises for the data it was
#: given: unparsable values, types, values out of range, sizes, NULLs, constraints.
REFUSED_DATA = frozenset({
    6,    # CANNOT_PARSE_TEXT
    26,   # CANNOT_PARSE_QUOTED_STRING
    27,   # CANNOT_PARSE_INPUT_ASSERTION_FAILED
    32,   # ATTEMPT_TO_READ_AFTER_EOF
    33,   # CANNOT_READ_ALL_DATA
    38,   # CANNOT_PARSE_DATE
    41,   # CANNOT_PARSE_DATETIME
    53,   # TYPE_MISMATCH
    69,   # ARGUMENT_OUT_OF_BOUND
    70,   # CANNOT_CONVERT_TYPE
    72,   # CANNOT_PARSE_NUMBER
    117,  # INCORRECT_DATA
    128,  # TOO_LARGE_ARRAY_SIZE
    131,  # TOO_LARGE_STRING_SIZE
    190,  # SIZES_OF_ARRAYS_DONT_MATCH
    321,  # VALUE_IS_OUT_OF_RANGE_OF_DATA_TYPE
    349,  # CANNOT_INSERT_NULL_IN_ORDINARY_COLUMN
    469,  # VIOLATED_CONSTRAINT
    691,  # UNKNOWN_ELEMENT_OF_ENUM
})
#: STD_EXCEPTION: a C++ exception; the Avro input format's parser raises its own for a datum
#: it cannot read (e.g. "Invalid Avro varint": a varint fastavro reads, ClickHouse does not).
STD_EXCEPTION = 1001
#: TOO_MANY_PARTS: the batch spans more than `max_partitions_per_insert_block` partitions
#: ("Too many partitions for single INSERT block"), or, transient, merges lag behind inserts.
TOO_MANY_PARTS = 252
#: Day partitions per INSERT when a batch is split by partition (ClickHouse's default limit is
#: 100; a server set lower gets the halves of a group instead).
PARTITIONS_PER_INSERT = 50
DAY_MS = 86_400_000


class Refusal(Enum):
    """What ClickHouse refused in a batch."""

    ROWS = "rows"  # some of its rows: halve the batch until they are found
    PARTITIONS = "partitions"  # its spread: split it by partition


def refusal(code: int | None, message: str) -> Refusal | None:
    """What a failed insert's error code and message say about its rows; None when ClickHouse
    failed rather than the rows (retry the same batch)."""
    if code == TOO_MANY_PARTS:
        return Refusal.PARTITIONS if "partitions for single INSERT" in message else None
    if code == STD_EXCEPTION:
        return Refusal.ROWS if "avro::Exception" in message else None
    return Refusal.ROWS if code in REFUSED_DATA else None


_FROM_CODE = re.compile(r"Code: \d+\..*", re.S)
_TRAILERS = re.compile(r"\s*\((?:for url|version) [^()]*(?:\([^()]*\))?[^()]*\)")


def reason(message: str, limit: int = 500) -> str:
    """ClickHouse's own words for a refusal: from `Code: N.` on, one line, without the
    client's prefix, the URL or the server version."""
    found = _FROM_CODE.search(message)
    text = _TRAILERS.sub("", found.group(0) if found else message)
    return " ".join(text.split())[:limit]


def day(value: int | datetime) -> int:
    """The UTC day (since 1970-01-01) of an Avro timestamp-millis: its toDate() partition."""
    if isinstance(value, datetime):
        return int(value.timestamp() // 86_400)
    return value // DAY_MS


def by_partition(items: Iterable[tuple[Hashable, T]], limit: int = PARTITIONS_PER_INSERT
                 ) -> list[list[T]]:
    """Items grouped by their partition key, at most `limit` partitions a group, in key order."""
    groups: dict[Hashable, list[T]] = {}
    for key, item in items:
        groups.setdefault(key, []).append(item)
    keys = sorted(groups)  # type: ignore[type-var]
    return [[item for key in keys[i:i + limit] for item in groups[key]]
            for i in range(0, len(keys), limit)]


def halves(items: list[T]) -> list[list[T]]:
    """A batch of several rows in two halves, first half first."""
    middle = len(items) // 2
    return [items[:middle], items[middle:]]

"""Pure deadlines: their keys in the timers table, and the in-memory index of those due soon.

Pending deadlines live in the timers table of the state store, keyed by (due time, what they
are for), written in the same batch as the state they belong to and deleted when that state
no longer waits (a READ cancels a read deadline at once). The index holds only the deadlines
due within a look-ahead window, loaded from the table a window at a time, so memory follows the
rate of deadlines times the window, not times their retention.
"""

from __future__ import annotations

import heapq
import json
import struct
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from streams.domain.compact import compact_bytes

#: A due time at the head of a timer key: milliseconds since the epoch, big-endian, so the
#: table's keys sort by due time.
_MS = struct.Struct(">Q")
#: Seconds of deadlines the index holds ahead of now; the next window loads halfway through.
LOOKAHEAD = 60.0
#: The end of time, in ms (a window that never needs a successor).
FOREVER = 2**63 - 1


@dataclass(order=True, frozen=True, slots=True)
class Due:
    """One pending deadline: when it is due, which partition owns it, and what it is for."""

    due_at: float
    partition: int = field(compare=False)
    key: str
    account_id: str = field(compare=False)
    kind: str = field(default="READ", compare=False)
    device_id: str | None = field(default=None, compare=False)
    message_id: str = field(default="", compare=False)


def ms(at: float) -> int:
    """A time as whole milliseconds (the timers table's resolution for ordering)."""
    return max(0, int(at * 1000))


def time_bound(at_ms: int) -> bytes:
    """The smallest timer key due at `at_ms` or later."""
    return _MS.pack(at_ms)


def timer_key(due: Due) -> bytes:
    """A deadline's key in the timers table: its due time first, then what it is for."""
    what = [due.kind, due.account_id, due.message_id, due.key, due.device_id]
    return _MS.pack(ms(due.due_at)) + compact_bytes(what)


def due_record(due: Due) -> dict[str, Any]:
    """A deadline's timers-table value: what its key does not hold (the key names the rest)."""
    return {"due_at": due.due_at, "partition": due.partition}


def due_of(key: bytes, record: dict[str, Any]) -> Due:
    """The deadline a timers-table key and value hold."""
    kind, account_id, message_id, name, device_id = json.loads(key[_MS.size:])
    return Due(record["due_at"], record["partition"], name, account_id, kind, device_id,
               message_id)


def keyed(dues: Iterable[Due]) -> dict[bytes, Due]:
    """Deadlines by their timers-table key."""
    return {timer_key(d): d for d in dues}


def timer_writes(before: Iterable[Due], after: Iterable[Due]) -> dict[bytes, Any]:
    """The timers-table writes when a state's pending deadlines go from `before` to `after`:
    new ones written, gone ones deleted (None), unchanged ones left alone."""
    return timer_changes(keyed(before), keyed(after))


def timer_changes(old: Mapping[bytes, Due], new: Mapping[bytes, Due]) -> dict[bytes, Any]:
    """timer_writes of deadlines already keyed (each key is computed once)."""
    writes: dict[bytes, Any] = dict.fromkeys(old.keys() - new.keys())
    writes.update((k, due_record(d)) for k, d in new.items() if k not in old)
    return writes


@dataclass(frozen=True, slots=True)
class InputProgress:
    """Where one input partition of an account partition stands, for the deadline horizon."""

    behind: bool  # records fetched (or known to the broker) that are not handled yet
    stream_time: float  # the time of the last record handled there (0: none)
    fetched: float | None  # when its latest answered fetch was sent (None: not fetched yet)


def horizon(now: float, inputs: Iterable[InputProgress], delay: float) -> float:
    """How far a partition's deadlines may fire: the stream time of an input still behind;
    of one caught up, the time through which its latest fetch saw all the broker had (when it
    was sent, less `delay`: a record's trip from its stamp to the broker); never past now."""
    cut = now
    for progress in inputs:
        if progress.behind:
            cut = min(cut, progress.stream_time)
        else:
            cut = min(cut, (progress.fetched or 0.0) - delay)
    return cut


class DeadlineIndex:
    """A min-heap per partition of the deadlines due before its loaded window's end.

    The timers table is the truth; the index only says what *may* be due: an entry whose
    timer was deleted since (a READ arrived) is dropped when its owner checks the table.
    A partition's window is loaded from the table (`window`, then `loaded`); a deadline
    written later is added only if it falls inside it. Partitions that move to another worker
    are forgotten; when they come back their windows are loaded again.
    """

    def __init__(self, lookahead: float | None = LOOKAHEAD) -> None:
        self._heaps: dict[int, list[Due]] = {}
        self._loaded: dict[int, int] = {}  # partition -> end of its loaded window (ms)
        #: None: one window to the end of time (when the whole state is in memory anyway)
        self.lookahead_ms = FOREVER if lookahead is None else int(lookahead * 1000)

    def __len__(self) -> int:
        return sum(len(h) for h in self._heaps.values())

    def add(self, due: Due) -> bool:
        """Remember a deadline due inside its partition's loaded window (O(log n)); one due
        later stays in the table only, for a later window. Whether it was added."""
        end = self._loaded.get(due.partition)
        if end is None or ms(due.due_at) >= end:
            return False
        heapq.heappush(self._heaps.setdefault(due.partition, []), due)
        return True

    def window(self, partition: int, now: float) -> tuple[int, int] | None:
        """The next range of due times (ms, end excluded) to load for a partition, once its
        loaded window is half used (from the start of time when nothing is loaded)."""
        end = self._loaded.get(partition)
        now_ms = ms(now)
        if end is not None and (end == FOREVER or now_ms + self.lookahead_ms // 2 < end):
            return None
        return (end or 0), min(FOREVER, max(end or 0, now_ms + self.lookahead_ms))

    def loaded(self, partition: int, dues: Iterable[Due], end: int) -> None:
        """A window of a partition was read from the table: remember its deadlines."""
        heap = self._heaps.setdefault(partition, [])
        for due in dues:
            heapq.heappush(heap, due)
        self._loaded[partition] = end

    def forget(self, partitions: Iterable[int]) -> None:
        """Drop the deadlines and windows of partitions this worker no longer owns."""
        for p in partitions:
            self._heaps.pop(p, None)
            self._loaded.pop(p, None)

    def pop_due(self, now: float, limit: int = 10_000,
                horizon: Callable[[int, float], float] | None = None) -> list[Due]:
        """Remove and return deadlines due by now, earliest first, at most limit; with a
        horizon, a partition's deadlines only up to `horizon(partition, now)`."""
        cut = {p: horizon(p, now) if horizon else now for p, h in self._heaps.items() if h}
        heads = [(h[0], p) for p, h in self._heaps.items() if h and h[0].due_at <= cut[p]]
        heapq.heapify(heads)
        due: list[Due] = []
        while heads and len(due) < limit:
            entry, partition = heapq.heappop(heads)
            heap = self._heaps[partition]
            due.append(heapq.heappop(heap))
            if heap and heap[0].due_at <= cut[partition]:
                heapq.heappush(heads, (heap[0], partition))
        return due

    def next_due(self) -> float | None:
        """The earliest due time in the index, if any."""
        heads = [h[0].due_at for h in self._heaps.values() if h]
        return min(heads) if heads else None

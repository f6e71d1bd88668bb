"""Pure deadline index: which pending deadlines are due, at a cost proportional to those due."""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field


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


class DeadlineIndex:
    """A min-heap of deadlines per partition; the state tables stay the truth.

    The index only says what *may* be due: entries for deadlines that were cancelled
    (a READ arrived) are dropped when the owner of the state checks them. Partitions that
    move to another worker are forgotten; when they come back the index is rebuilt from state.
    """

    def __init__(self) -> None:
        self._heaps: dict[int, list[Due]] = {}

    def __len__(self) -> int:
        return sum(len(h) for h in self._heaps.values())

    def add(self, due: Due) -> None:
        """Remember a deadline (O(log n))."""
        heapq.heappush(self._heaps.setdefault(due.partition, []), due)

    def forget(self, partitions: Iterable[int]) -> None:
        """Drop the deadlines of partitions this worker no longer owns."""
        for p in partitions:
            self._heaps.pop(p, None)

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

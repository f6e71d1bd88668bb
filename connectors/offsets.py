"""Which offsets a consumer may commit: only past records whose work is done (pure logic)."""

from __future__ import annotations


class OffsetTracker:
    """Per partition, the offsets taken and the ones done; commits stop at the first not done.

    Records finish out of order (a slow provider, a retry); committing past an unfinished one
    would lose it on a crash, so the commit point is the lowest offset still open."""

    def __init__(self) -> None:
        self._open: dict[int, set[int]] = {}
        self._next: dict[int, int] = {}  # one past the highest offset taken, per partition

    def take(self, partition: int, offset: int) -> None:
        """A record was received and its work started."""
        self._open.setdefault(partition, set()).add(offset)
        self._next[partition] = max(self._next.get(partition, 0), offset + 1)

    def done(self, partition: int, offset: int) -> None:
        """The record's work is durable (its outcome acknowledged by the broker)."""
        self._open.get(partition, set()).discard(offset)

    def pending(self, partition: int | None = None) -> int:
        """Records taken and not done (in one partition, or all)."""
        if partition is not None:
            return len(self._open.get(partition, ()))
        return sum(len(v) for v in self._open.values())

    def committable(self) -> dict[int, int]:
        """Partition -> the offset to commit (the next record to read after a restart)."""
        return {p: min(self._open[p]) if self._open.get(p) else nxt
                for p, nxt in self._next.items()}

    def forget(self, partitions: set[int]) -> None:
        """Partitions revoked: their open work is no longer this consumer's."""
        for p in partitions:
            self._open.pop(p, None)
            self._next.pop(p, None)

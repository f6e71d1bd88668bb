"""Deadline timers for Faust: an index over a state table,, re-indexed when partitions move."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

import faust

from streams.domain.deadlines import DeadlineIndex, Due
from streams.metrics import OVERDUE, PENDING
from streams.state import StateTables

log = logging.getLogger(__name__)

#: Values indexed, or deadlines fired, between two yields to the event loop.
CHUNK = 2000
FIRE_CHUNK = 500


class DeadlineTimer:
    """Calls `fire(due)` for every due deadline of the partitions this worker owns.

    The table is the truth; the index only remembers what may come due, and `fire` checks the
    state again (a READ may have come first), in this worker, which owns the partition: no hop
    through Kafka. Its outputs and state go out in the same batches as the agents'. On every
    tick it pops what is due, at a cost proportional to that: by the wall clock once the
    partition's inputs are handled as far as they were read, else by their stream time
    (`horizon`), so a backlog of acks is applied before the deadlines it may cancel.
    Partitions newly assigned (also one that left and came back) are indexed from the
    recovered table in chunks, yielding to the event loop between them, so a million pending
    deadlines never stall heartbeats or processing.
    """

    def __init__(self, app: faust.App, topic: str, state: StateTables, table: str,
                 index: Callable[[dict[str, Any]], None], fire: Callable[[Due], None],
                 interval: float, horizon: Callable[[int, float], float] | None = None) -> None:
        self.app, self.topic, self.state, self.table = app, topic, state, table
        self.horizon = horizon
        self.index_value, self.fire = index, fire
        self.index = DeadlineIndex()
        self.indexed: frozenset[int] = frozenset()
        self.revoked: set[int] = set()
        self.fired = 0
        self.indexing: asyncio.Task[None] | None = None
        app.timer(interval)(self.tick)
        app.on_partitions_revoked.connect(self._on_revoked)  # type: ignore[arg-type]

    async def _on_revoked(self, sender: Any, revoked: Any, **kwargs: Any) -> None:
        """Remember partitions that left (they are re-indexed if they come back)."""
        self.revoked.update(tp.partition for tp in revoked if tp.topic == self.topic)

    def add(self, due: Due) -> None:
        """Remember a new deadline (called by the handler that wrote it to the table)."""
        self.index.add(due)

    async def tick(self) -> None:
        """Re-index after a rebalance, then fire what is due."""
        app = self.app
        recovered = app.tables.recovery.completed.is_set()  # type: ignore[attr-defined]
        if app.rebalancing or not recovered:
            return
        owned = frozenset(tp.partition for tp in app.assignor.assigned_actives()
                          if tp.topic == self.topic)
        if self.revoked or owned != self.indexed:
            kept = self.indexed - self.revoked
            self.revoked.clear()
            self.index.forget(set(self.indexed) - set(kept & owned))
            new = owned - kept
            self.indexed = owned
            if new:
                if self.indexing is not None:
                    self.indexing.cancel()
                self.indexing = asyncio.ensure_future(self._reindex(set(new)))
        fired = 0
        while not app.rebalancing:
            batch = self.index.pop_due(time.time(), FIRE_CHUNK, self.horizon)
            for due in batch:
                self.fire(due)
            fired += len(batch)
            if len(batch) < FIRE_CHUNK:
                break
            await asyncio.sleep(0)
        if fired:
            self.fired += fired
            await self.state.try_flush()  # also while no input arrives
        next_due = self.index.next_due()
        PENDING.labels(self.table).set(len(self.index))
        OVERDUE.labels(self.table).set(max(0.0, time.time() - next_due) if next_due else 0.0)

    async def _reindex(self, partitions: set[int]) -> None:
        """Index the stored values of these partitions, a chunk at a time."""
        started, count = time.monotonic(), 0
        for value in self.state.values(self.table):
            if value.get("partition") in partitions:
                self.index_value(value)
            count += 1
            if count % CHUNK == 0:
                await asyncio.sleep(0)
        log.info("deadline index: %s re-indexed from %d %s values in %.1fs (%d pending)",
                 sorted(partitions), count, self.table, time.monotonic() - started,
                 len(self.index))

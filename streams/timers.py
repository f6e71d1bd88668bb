"""Deadline timers for Faust: a per-worker index over a table, rebuilt when partitions move."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

import faust

from streams.domain.deadlines import DeadlineIndex, Due

log = logging.getLogger(__name__)


class DeadlineTimer:
    """Fires `fire(due)` for every due deadline of the partitions this worker owns.

    The table is the truth; the index only remembers what may come due. On every tick
    (wall clock) it pops what is due — cost proportional to that, not to what is pending.
    When the worker's assignment changes, the index is rebuilt from the recovered table,
    so deadlines survive crashes and rebalances; `fire` must check the table and the
    consumer of its event must be idempotent (it is: it checks the state in the stream).
    """

    def __init__(self, app: faust.App, table: Any, topic: str,
                 pending: Callable[[dict[str, Any]], Iterable[Due]],
                 fire: Callable[[Due], None], interval: float) -> None:
        self.app, self.table, self.topic = app, table, topic
        self.pending, self.fire = pending, fire
        self.index = DeadlineIndex()
        self.indexed: frozenset[int] | None = None
        self.fired = 0
        app.timer(interval)(self.tick)

    def add(self, due: Due) -> None:
        """Remember a new deadline (called from the agent that wrote it to the table)."""
        self.index.add(due)

    async def tick(self) -> None:
        """Rebuild after a rebalance, then fire what is due."""
        app = self.app
        recovered = app.tables.recovery.completed.is_set()  # type: ignore[attr-defined]
        if app.rebalancing or not recovered:
            return
        owned = frozenset(tp.partition for tp in app.assignor.assigned_actives()
                          if tp.topic == self.topic)
        if owned != self.indexed:
            self.index.replace(owned, (d for v in self.table.values() for d in self.pending(v)))
            self.indexed = owned
            log.info("deadline index rebuilt for %s: %d pending in partitions %s",
                     self.table.name, len(self.index), sorted(owned))
        for due in self.index.pop_due(time.time()):
            self.fired += 1
            self.fire(due)

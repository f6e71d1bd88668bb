"""Deadline timers for Faust: pending deadlines in the timers table, a window of them in memory."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import faust

from streams.domain.deadlines import (
    LOOKAHEAD,
    DeadlineIndex,
    Due,
    due_of,
    keyed,
    time_bound,
    timer_changes,
    timer_key,
)
from streams.domain.state import TIMERS
from streams.metrics import OVERDUE, PENDING
from streams.state import StateTables

log = logging.getLogger(__name__)

#: Keys read from the store, or deadlines fired, between two yields to the event loop.
CHUNK = 2000
FIRE_CHUNK = 500


class DeadlineTimer:
    """Calls `fire(due)` for every due deadline of the partitions this worker owns.

    A table's pending deadlines (`dues(value)`) are kept in the timers table by the state
    itself: every write of the table writes, in the same batch, its deadlines that are new and
    deletes those it no longer has (a READ deletes the read deadline it cancels). The timers
    table is keyed by due time; the index holds the deadlines due within the next window,
    read from the table a window at a time (a range read with RocksDB), so a million pending
    deadlines, or a day of message expiries, cost memory only while they are near.

    On every tick the index pops what is due, at a cost proportional to that: by the wall
    clock once the partition's inputs are handled as far as they were read, else by their
    stream time (`horizon`), so a backlog of acks is applied before the deadlines it may
    cancel. Each deadline fires in an event of its own that also deletes its timer, unless the
    table no longer holds it. Partitions newly assigned (also one that left and came back) load
    their first window from the start of time: what fell due while nobody owned them fires.
    """

    def __init__(self, app: faust.App, topic: str, state: StateTables, table: str,
                 kinds: frozenset[str], dues: Callable[[dict[str, Any]], list[Due]],
                 fire: Callable[[Due], None], interval: float,
                 horizon: Callable[[int, float], float] | None = None,
                 on_assigned: Callable[[set[int]], Awaitable[None]] | None = None) -> None:
        self.app, self.topic, self.state, self.table = app, topic, state, table
        self.horizon, self.on_assigned = horizon, on_assigned
        self.kinds, self.dues, self.fire = kinds, dues, fire
        # a window of deadlines in memory where the store reads ranges (RocksDB); all of them
        # where the whole state is in memory anyway (memory://: its keys are not ordered)
        self.index = DeadlineIndex(LOOKAHEAD if state.ordered else None)
        self.indexed: frozenset[int] = frozenset()
        self.revoked: set[int] = set()
        self.fired = 0
        state.derive(table, self._timers)
        app.timer(interval)(self.tick)
        app.on_partitions_revoked.connect(self._on_revoked)  # type: ignore[arg-type]

    def _timers(self, old: dict[str, Any] | None,
                new: dict[str, Any] | None) -> list[tuple[str, bytes, Any]]:
        """The timers-table writes of one write to the table; new deadlines due inside the
        loaded window join the index (one whose event is then discarded is skipped when
        popped: the table does not hold it)."""
        before = keyed(self.dues(old)) if old is not None else {}
        after = keyed(self.dues(new)) if new is not None else {}
        writes = timer_changes(before, after)
        for key, value in writes.items():
            if value is not None:
                self.index.add(after[key])
        return [(TIMERS, k, v) for k, v in writes.items()]

    async def _on_revoked(self, sender: Any, revoked: Any, **kwargs: Any) -> None:
        """Remember partitions that left (their windows are loaded again if they come back)."""
        self.revoked.update(tp.partition for tp in revoked if tp.topic == self.topic)

    async def tick(self) -> None:
        """Follow the assignment, load the windows due, then fire what is due."""
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
            if new and self.on_assigned is not None:
                await self.on_assigned(set(new))
        now = time.time()
        for p in sorted(owned):
            window = self.index.window(p, now)
            if window is not None and not app.rebalancing:
                await self._load(p, *window)
        fired = 0
        while not app.rebalancing:
            batch = self.index.pop_due(time.time(), FIRE_CHUNK, self.horizon)
            for due in batch:
                fired += self._fire(due)
            if len(batch) < FIRE_CHUNK:
                break
            await asyncio.sleep(0)
        if fired:
            self.fired += fired
            await self.state.try_flush()  # also while no input arrives
        next_due = self.index.next_due()
        PENDING.labels(self.table).set(len(self.index))
        OVERDUE.labels(self.table).set(max(0.0, time.time() - next_due) if next_due else 0.0)

    async def _load(self, partition: int, start: int, end: int) -> None:
        """Read the partition's deadlines due in [start, end) ms from the timers table."""
        started, dues = time.monotonic(), []
        for i, (key, value) in enumerate(self.state.scan(
                TIMERS, partition, time_bound(start), time_bound(end)), 1):
            due = due_of(key, value)
            if due.kind in self.kinds:  # the timers table holds every timer's deadlines
                dues.append(due)
            if i % CHUNK == 0:
                await asyncio.sleep(0)
        if partition in self.indexed:  # not revoked meanwhile
            self.index.loaded(partition, dues, end)
        took = time.monotonic() - started
        if took > 1 or (start == 0 and dues):
            log.info("deadlines of %s partition %d: %d loaded, due before %.0f, in %.2fs",
                     self.table, partition, len(dues), end / 1000, took)

    def _fire(self, due: Due) -> int:
        """Fire one deadline in an event of its own that deletes its timer (1), unless the
        timers table no longer holds it (0: cancelled, or fired already)."""
        p, key = due.partition, timer_key(due)
        if self.state.get(TIMERS, key, p) is None:
            return 0
        self.state.begin(p)
        try:
            self.fire(due)
        except Exception:
            self.state.discard()
            self.state.begin(p)
            log.exception("deadline %s failed; nothing of it was kept", due)
        self.state.at(p).delete(TIMERS, key)
        self.state.done(timestamp=due.due_at)
        return 1

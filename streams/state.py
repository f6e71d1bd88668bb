"""The router's state in one Faust table whose changelog is the state journal (streams.journal).

A handler's writes and outputs for one event are held apart until it completes (an exception
leaves nothing behind), then join the batch of the event's partition, with the event's input
position. Every flush (Faust's pre-commit producer flush, and the deadline timer's) writes,
for each partition with a batch:

1. one journal record (chunks when large) with every table's writes, the input positions,
   the outputs and the stream time, acknowledged by the broker;
2. a read-back of the journal since this worker's previous record of the partition: a newer
   claim or batch there means another worker owns the partition now (this one was frozen past
   its session, say), and the batch is discarded, unapplied and unsent;
3. the writes to the local store, with the record's offset (RocksDB resumes recovery there);
4. the outputs, acknowledged; the committed input offsets are then the journal's positions.

A crash before 1 completes leaves no trace: the events are read again from the journal's
positions. A crash after 1 finds the batch whole in the journal; its outputs are sent again
on recovery with the same ids (dropped downstream). Recovery applies whole, unfenced batches
only; Faust's own changelog producer is not used.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import faust
from confluent_kafka import KafkaError, Message, TopicPartition
from faust.types import TP, EventT

from streams import journal
from streams.app import memory_store_apply
from streams.journal import Batch, Fold, Output
from streams.metrics import CHANGELOG, FENCED, LARGEST, Counts, Flow
from streams.outbox import Outbox, OutboxError, ProducerFenced

log = logging.getLogger(__name__)

JOURNAL = "journal"
#: A table of the state itself: which version of the derived indexes a partition's state has
#: (state journaled before they existed is indexed once, on recovery).
INDEXES = "indexes"
INDEX_VERSION = 1
#: Store key of a partition's recovery point: epoch, seq, positions and clock.
META = b"\xff"
#: Seconds the read-back of a batch may take before the flush fails (and is tried again).
READ_BACK_TIMEOUT = 15.0
#: Fault injection for the crash tests: "journal:N" ends the process right after the N-th
#: flush's journal records are acknowledged (before the store and the outputs); "chunk:N" after
#: the first chunk of the N-th batch written in several chunks.
CRASH_AT = os.environ.get("PUSHCASCADE_CRASH_AT", "")


def _crash_point(kind: str, count: int) -> None:
    """End the process here if the crash tests asked for it (see CRASH_AT)."""
    if f"{kind}:{count}" == CRASH_AT:
        log.critical("crash point %s reached: exiting", CRASH_AT)
        logging.shutdown()
        os._exit(86)


def _exit_fenced(exc: ProducerFenced) -> None:
    """Another process took this worker's transactional.id: it owns the work now, stop here."""
    log.critical("%s: another process runs as this worker; exiting", exc)
    logging.shutdown()
    os._exit(70)


def copied(value: Any) -> Any:
    """A copy of a JSON-compatible value, nested dicts and lists included."""
    if isinstance(value, dict):
        return {k: copied(v) for k, v in value.items()}
    if isinstance(value, list):
        return [copied(v) for v in value]
    return value


def changelog_bytes(value: dict[str, Any]) -> bytes:
    """A table value as written to the store: JSON in UTF-8, text unescaped (a CJK character
    is 3 bytes, not a 6-byte \\uXXXX escape), as in the journal."""
    return journal.dump(value)


class _Changelog(NamedTuple):
    """The parts of a changelog message a Faust store's apply_changelog_batch reads."""

    tp: TP
    offset: int
    partition: int
    key: bytes
    value: bytes | None


class _Event(NamedTuple):
    """A changelog event as Faust's recovery hands it to a store."""

    key: bytes
    value: dict[str, Any] | None
    message: _Changelog


#: A derived index: (old value, new value) -> the writes it derives, as (table, key, value).
Derive = Callable[[dict[str, Any] | None, dict[str, Any] | None],
                  Iterable[tuple[str, bytes, Any]]]


@dataclass
class Pending:
    """One partition's batch being built: writes, outputs, input positions, stream time."""

    writes: dict[tuple[str, bytes], dict[str, Any] | None] = field(default_factory=dict)
    outputs: list[Output] = field(default_factory=list)
    positions: dict[str, int] = field(default_factory=dict)
    clock: float = 0.0

    def merge(self, later: Pending) -> Pending:
        """This batch followed by a later one, as one."""
        return Pending({**self.writes, **later.writes}, self.outputs + later.outputs,
                       {**self.positions, **later.positions}, max(self.clock, later.clock))

    def absorb(self, later: Pending) -> None:
        """Take a later batch into this one, in place (an event joining its partition's batch:
        merge would copy the whole batch for every event)."""
        self.writes.update(later.writes)
        self.outputs += later.outputs
        self.positions.update(later.positions)
        self.clock = max(self.clock, later.clock)

    def empty(self) -> bool:
        """Whether the batch changes nothing."""
        return not (self.writes or self.outputs or self.positions)


class PartitionTables:
    """The `Tables` of one partition: what a handler reads and writes, and where it emits."""

    __slots__ = ("state", "partition")

    def __init__(self, state: StateTables, partition: int) -> None:
        self.state, self.partition = state, partition

    def get(self, table: str, key: bytes) -> dict[str, Any] | None:
        """The current value of key: written in this event or batch, being flushed, or stored."""
        return self.state.get(table, key, self.partition)

    def put(self, table: str, key: bytes, value: dict[str, Any]) -> None:
        """Write value under key, owned by this partition (and what derives from it)."""
        self._write(table, key, value)

    def delete(self, table: str, key: bytes) -> None:
        """Delete key (and what derives from it)."""
        self._write(table, key, None)

    def _write(self, table: str, key: bytes, value: dict[str, Any] | None) -> None:
        state = self.state
        writes = state.unit(self.partition).writes
        derive = state.derived.get(table)
        if derive:
            # the value as this event last wrote it (a handler may have changed that object in
            # place since), else as it is outside the event (get gives a copy of it)
            k = (table, key)
            old = state.written[k] if k in state.written else self.get(table, key)
            for fn in derive:
                for name, dk, dv in fn(old, value):
                    writes[(name, dk)] = dv
            state.written[k] = copied(value)
        writes[(table, key)] = value

    def emit(self, output: Output) -> None:
        """Send an output record once this partition's batch is durable."""
        self.state.unit(self.partition).outputs.append(output)


class JournalTable(faust.Table):
    """A Faust table whose changelog is the state journal: recovered by whole batches."""

    _changelog_compacting = False
    _changelog_deleting = True
    owner: StateTables

    def apply_changelog_batch(self, batch: Iterable[Any]) -> None:
        """Journal records read by recovery or a standby: whole, unfenced batches are applied."""
        self.owner.recover(batch)

    async def on_recovery_completed(self, active_tps: set[TP], standby_tps: set[TP]) -> None:
        """Recovery done: positions known, the last batches' outputs sent again."""
        await super().on_recovery_completed(active_tps, standby_tps)
        await self.owner.recovered({tp.partition for tp in active_tps})


class StateTables:
    """The router's tables over one journal-backed Faust table, written in atomic batches."""

    def __init__(self, app: faust.App, names: tuple[str, ...], partitions: int, outbox: Outbox,
                 embedded: bool, options: dict[str, Any] | None = None,
                 reader: Callable[[], Any] | None = None,
                 chunk_bytes: int = journal.CHUNK_BYTES) -> None:
        self.app, self.outbox, self.names = app, outbox, names
        self.prefix = {name: bytes([i]) for i, name in enumerate((*names, INDEXES))}
        self.table = JournalTable(app, name=JOURNAL, beacon=app.tables.beacon,
                                  partitions=partitions, key_type=bytes,
                                  options=dict(options) if options else None,
                                  extra_topic_configs={"retention.ms": "-1"})
        self.table.owner = self
        app.tables.add(self.table)
        app.journal_state = self  # type: ignore[attr-defined]  # read by streams/app.py
        self.embedded = embedded
        #: whether the store reads key ranges in order (RocksDB), or filters every key (memory)
        self.ordered = app.conf.store.scheme == "rocksdb"
        self.partitions = partitions
        self.views = [PartitionTables(self, p) for p in range(partitions)]
        self.dirty: dict[int, Pending] = {}
        self.flushing: dict[int, Pending] = {}
        self.event: tuple[int, Pending] | None = None
        self.before_flush: list[Callable[[], None]] = []
        #: partition -> epoch this worker claimed it with, and its last journal offset there
        self.epoch: dict[int, int] = {}
        self.last_own: dict[int, int] = {}
        #: partition -> offsets of this worker's own journal records after last_own
        self.own: dict[int, set[int]] = {}
        self._own_lock = threading.Lock()  # delivery reports come on librdkafka's callers
        self.seq: dict[int, int] = {}
        self.folds: dict[int, Fold] = {}
        #: partition -> {input topic: next offset}, as durable in the journal
        self.durable: dict[int, dict[str, int]] = {}
        #: partition -> {input topic: next offset}, handled in this worker (durable or not)
        self.handled: dict[int, dict[str, int]] = {}
        #: partition -> its stream time (the latest time of what it handled); and per input
        self.clock: dict[int, float] = {}
        self.times: dict[tuple[str, int], float] = {}
        self.last_outputs: dict[int, tuple[int, list[Output]]] = {}
        #: inputs sought to the journal's positions since their partition was last claimed, each
        #: with the number of that seek: a record is handled only from its input's seek on
        self.sought: dict[TP, int] = {}
        self.seeks = 0
        #: sought inputs not yet in step with their seek: no record at the expected offset
        #: handled since (records fetched before the seek may still come, ahead of it)
        self.unsynced: set[TP] = set()
        #: sought inputs whose seek the consumer has applied, and the first offset fetched
        #: after it (offsets may skip there: compaction, transaction markers)
        self.landed: set[TP] = set()
        self.first_fetched: dict[TP, int] = {}
        self.sent_through: dict[int, int] = {}
        self.unsent: list[Output] = []
        self.largest = 0
        self.chunk_bytes = chunk_bytes
        self.flushes = self.chunked = 0
        self._reader_factory = reader
        self._reader: Any = None
        self._lock = asyncio.Lock()
        #: table -> functions of (old value, new value) giving the writes derived from a write
        self.derived: dict[str, list[Derive]] = {}
        #: (table, key) -> a copy of the value the open event last wrote, as derived from
        self.written: dict[tuple[str, bytes], Any] = {}

    @property
    def topic(self) -> str:
        """The journal topic."""
        return self.table.changelog_topic_name

    def derive(self, table: str, fn: Derive) -> None:
        """Keep an index of `table` in the same batches: every write to it also writes what
        `fn(old value, new value)` gives as (table, key, value or None for a delete)."""
        self.derived.setdefault(table, []).append(fn)

    def at(self, partition: int) -> PartitionTables:
        """The tables as seen by a handler of this partition."""
        return self.views[partition]

    # -- events --------------------------------------------------------------------------------

    def begin(self, partition: int) -> None:
        """Start an event of a partition: its writes and outputs are held apart until done."""
        self.event = (partition, Pending())
        self.written.clear()

    def unit(self, partition: int) -> Pending:
        """Where a write or output of this partition goes: the open event, else the batch."""
        if self.event is not None and self.event[0] == partition:
            return self.event[1]
        return self.dirty.setdefault(partition, Pending())

    def done(self, tp: TP | None = None, offset: int | None = None,
             timestamp: float | None = None) -> None:
        """The open event completed: its writes, outputs and input position join the batch."""
        if self.event is None:
            return
        partition, pending = self.event
        self.event = None
        self.written.clear()
        if tp is not None and offset is not None:
            self.unsynced.discard(tp)
            pending.positions[tp.topic] = offset + 1
            self.handled.setdefault(partition, {})[tp.topic] = offset + 1
        if timestamp is not None:
            pending.clock = max(pending.clock, timestamp)
            self.clock[partition] = max(self.clock.get(partition, 0.0), timestamp)
            if tp is not None:
                self.times[(tp.topic, partition)] = timestamp
        batch = self.dirty.get(partition)
        if batch is None:
            self.dirty[partition] = pending
        else:
            batch.absorb(pending)

    def discard(self) -> None:
        """The open event failed: nothing it wrote or emitted remains."""
        self.event = None
        self.written.clear()

    def resume(self, tp: TP, offset: int) -> None:
        """This input was sought to this offset (the journal's position, else the group's):
        handle it from there."""
        self.handled.setdefault(tp.partition, {})[tp.topic] = offset
        self.seeks += 1
        self.sought[tp] = self.seeks
        self.unsynced.add(tp)
        self.landed.discard(tp)
        self.first_fetched.pop(tp, None)

    def sought_landed(self, tp: TP) -> None:
        """The consumer applied the seek of this input: what it fetches now follows it."""
        self.landed.add(tp)

    def fetched(self, tp: TP, first: int) -> None:
        """The consumer returned records of this input from `first` on: the first such
        records after its seek landed mark where the seek's records begin."""
        if tp in self.landed and tp in self.unsynced:
            self.first_fetched.setdefault(tp, first)

    def seen(self, tp: TP, offset: int) -> bool:
        """Whether this record was handled already (read again after a seek or a takeover)."""
        return offset < self.handled.get(tp.partition, {}).get(tp.topic, -1)

    def ahead(self, tp: TP, offset: int) -> bool:
        """Whether this record lies beyond the next one expected from its input's seek, which
        has not come yet: it was fetched before the seek (handling it first would make the
        records the seek reads again look handled). The seek's records come in offset order,
        from the sought offset or, where offsets skip, from the first one fetched after it."""
        return (tp in self.unsynced and offset != self.first_fetched.get(tp)
                and offset > self.handled.get(tp.partition, {}).get(tp.topic, offset))

    def position(self, tp: TP) -> int | None:
        """The durable next offset of an input partition (what may be committed)."""
        return self.durable.get(tp.partition, {}).get(tp.topic)

    # -- reads ---------------------------------------------------------------------------------

    def get(self, table: str, key: bytes, partition: int | None = None) -> dict[str, Any] | None:
        """The current value of key in this worker: the open event's own object, else a copy
        (a handler changing what it read in place changes nothing outside its event)."""
        k = (table, key)
        parts: Iterable[int] = (partition,) if partition is not None else (
            set(self.dirty) | set(self.flushing))
        if self.event is not None and k in self.event[1].writes and (
                partition is None or self.event[0] == partition):
            return self.event[1].writes[k]
        for p in parts:
            for pending in (self.dirty.get(p), self.flushing.get(p)):
                if pending is not None and k in pending.writes:
                    return copied(pending.writes[k])
        value = self._lookup(self.prefix[table] + key)
        return copied(value) if isinstance(value, dict) else None

    def _lookup(self, key: bytes) -> Any:
        """A stored value straight from the store (Faust's table adds a sensor call and, for a
        missing key, an exception to every read): the memory store's dict, RocksDB's get."""
        store = self.table.data
        data = getattr(store, "data", None)
        return data.get(key) if isinstance(data, dict) else store.get(key)

    def scan(self, table: str, partition: int, start: bytes = b"",
             stop: bytes | None = None) -> Iterator[tuple[bytes, dict[str, Any]]]:
        """The current keys and values of a partition's table from `start` up to `stop`
        (excluded): a range read of the partition's store with RocksDB, a filter over the
        memory store's keys (values carry their `partition`), with this worker's unflushed
        writes over both. A snapshot of the keys is taken first."""
        prefix = self.prefix[table]
        lo = prefix + start
        hi = prefix + stop if stop is not None else bytes([prefix[0] + 1])
        store = self.table.data
        dbs = getattr(store, "_dbs", None)
        keys: set[bytes] = set()
        if dbs is not None:
            db = dbs.get(partition)
            if db is not None:
                it = db.iter()
                it.seek(lo)
                while it.valid() and it.key() < hi:
                    keys.add(it.key()[1:])
                    it.next()
        else:
            keys.update(k[1:] for k in list(getattr(store, "data", {})) if lo <= k < hi)
        for pending in (self.flushing.get(partition), self.dirty.get(partition)):
            if pending is not None:
                keys.update(k for name, k in pending.writes
                            if name == table and lo <= prefix + k < hi)
        for key in sorted(keys):
            value = self.get(table, key, partition)
            if value is not None and value.get("partition", partition) == partition:
                yield key, value

    # -- the flush -----------------------------------------------------------------------------

    def attach(self) -> None:
        """Run the batch flush inside Faust's pre-commit producer flush, and on revocation."""
        producer = self.app.producer
        flush_faust = producer.flush

        async def flush() -> None:
            await flush_faust()
            await self.try_flush()

        producer.flush = flush  # type: ignore[method-assign]
        self.app.on_partitions_revoked.connect(self._on_revoked)  # type: ignore[arg-type]
        # batches are flushed on their own clock: offsets are committed from the journal's
        # positions, so Faust's commit (and its flush) only follows a batch that landed
        self.app.timer(self.app.conf.broker_commit_interval)(self._flush_due)

    async def _flush_due(self) -> None:
        """Flush the batches handled since the last flush, if any."""
        if any(not pending.empty() for pending in self.dirty.values()) or self.unsent:
            await self.try_flush()

    async def try_flush(self) -> bool:
        """Flush; a failure (the broker away, say) is logged and the batches are kept for the
        next attempt. Offsets only ever follow what landed, so nothing needs to stop."""
        try:
            await self.flush()
        except ProducerFenced as exc:
            _exit_fenced(exc)
        except Exception as exc:
            log.warning("flush failed, batches kept for the next attempt: %s", exc)
            return False
        return True

    async def _on_revoked(self, sender: Any, revoked: Any, **kwargs: Any) -> None:
        """Forget the revoked partitions' claims and unflushed batches: whoever owns them next
        reads their inputs again from the journal's positions. (Nothing is awaited here: the
        signal may come from the consumer's own thread.)"""
        gone = {tp.partition for tp in revoked if tp.topic == self.topic}
        for p in gone:
            self.epoch.pop(p, None)
            self.dirty.pop(p, None)
        self.sought = {tp: n for tp, n in self.sought.items() if tp.partition not in gone}

    async def flush(self) -> None:
        """Journal, read-back, store, outputs (see the module docstring)."""
        async with self._lock:
            for hook in self.before_flush:
                hook()
            loop = asyncio.get_running_loop()
            if self.unsent:
                await loop.run_in_executor(None, self._send, self.unsent)
                self.unsent = []
            self.flushing, self.dirty = self.dirty, {}
            try:
                batches = self._batches()
                if not batches:
                    return
                if self.outbox.transactional:
                    offsets, fenced = await loop.run_in_executor(None, self._transact, batches)
                else:
                    offsets = await loop.run_in_executor(None, self._write, batches)
                    self.flushes += 1
                    _crash_point("journal", self.flushes)
                    fenced = await loop.run_in_executor(None, self._read_back, offsets)
            except BaseException:
                for p, pending in self.flushing.items():  # keep them for the next attempt
                    later = self.dirty.get(p)
                    self.dirty[p] = pending if later is None else pending.merge(later)
                raise
            finally:
                self.flushing = {}
            outputs: list[Output] = []
            for p, batch in batches.items():
                if p in fenced:
                    self._fenced(p, fenced[p])
                    continue
                if self.epoch.get(p) != batch.epoch:
                    # the partition was revoked, or claimed again, while this batch was being
                    # written: it landed after the claim, so recovery ignores it; so does this
                    # worker (its inputs are read again from the journal's positions)
                    fenced[p] = self.epoch.get(p, -1)
                    log.warning("partition %d: claimed again (epoch %d -> %s) while a batch "
                                "was written; the batch was discarded, its inputs are read "
                                "again", p, batch.epoch, self.epoch.get(p))
                    continue
                self._store(p, batch, offsets[p][1])
                self.last_own[p] = offsets[p][1]
                outputs += batch.outputs
            if self.outbox.transactional:  # the outputs went with the journal records
                for p, batch in batches.items():
                    if p not in fenced:
                        self.sent_through[p] = batch.seq
                return
            try:
                await loop.run_in_executor(None, self._send, outputs)
            except OutboxError:
                self.unsent = outputs  # durable in the journal: sent at the next flush
                raise
            for p, batch in batches.items():
                if p not in fenced:
                    self.sent_through[p] = batch.seq
                    # not waited for: without it, recovery only sends these outputs again
                    self.outbox.produce(self.topic, b"%d" % p, journal.sent(
                        batch.epoch, batch.seq), p, on_delivery=self._mine)

    def _batches(self) -> dict[int, Batch]:
        """The flushing partitions' batches, for partitions this worker has claimed."""
        batches = {}
        for p, pending in self.flushing.items():
            if pending.empty():
                continue
            if p not in self.epoch:
                log.warning("partition %d: a batch of a partition this worker does not own "
                            "was dropped (%d writes, %d outputs)", p, len(pending.writes),
                            len(pending.outputs))
                continue
            self.seq[p] = self.seq.get(p, -1) + 1
            writes = [(t, k, v) for (t, k), v in pending.writes.items()]
            batches[p] = Batch(self.epoch[p], self.seq[p], writes, pending.positions,
                               pending.outputs, pending.clock)
            CHANGELOG.labels(JOURNAL).inc(len(writes))
        return batches

    def _write(self, batches: dict[int, Batch]) -> dict[int, tuple[int, int]]:
        """Produce each batch's records and wait for all: partition -> (first, last) offset."""
        topic = self.topic
        offsets: dict[int, tuple[int, int]] = {}
        failures: list[str] = []

        def delivered(err: KafkaError | None, msg: Message) -> None:
            if err is not None:
                failures.append(f"{msg.topic()}: {err.str()}")
                return
            p, o = msg.partition() or 0, msg.offset() or 0
            first, last = offsets.get(p, (o, o))
            offsets[p] = (min(first, o), max(last, o))
            with self._own_lock:
                self.own.setdefault(p, set()).add(o)

        for p, batch in batches.items():
            records = journal.encode(batch, self.chunk_bytes)
            for i, record in enumerate(records):
                if len(record) > self.largest:
                    self.largest = len(record)
                    LARGEST.labels(JOURNAL).set(len(record))
                self.outbox.produce(topic, b"%d" % p, record, partition=p,
                                    on_delivery=delivered)
                if i == 0 and len(records) > 1:
                    self.chunked += 1
                    if f"chunk:{self.chunked}" == CRASH_AT:
                        self._wait(failures)
                        _crash_point("chunk", self.chunked)
        self._wait(failures)
        return offsets

    def _transact(self, batches: dict[int, Batch]
                  ) -> tuple[dict[int, tuple[int, int]], dict[int, int]]:
        """The flush in one Kafka transaction (transactional workers): journal records,
        read-back (of records not yet committed: the reader reads uncommitted), then the
        outputs and `sent` records of the batches not fenced, all committed together, so a
        read_committed reader (recovery included) sees a batch with its outputs or neither."""
        with self.outbox.transaction():
            offsets = self._write(batches)
            self.flushes += 1
            _crash_point("journal", self.flushes)
            fenced = self._read_back(offsets)
            for p, batch in batches.items():
                if p in fenced or self.epoch.get(p) != batch.epoch:
                    continue
                for topic, key, value, partition, headers in batch.outputs:
                    self.outbox.produce(topic, key, value, partition=partition, headers=headers)
                self.outbox.produce(self.topic, b"%d" % p, journal.sent(batch.epoch, batch.seq),
                                    p, on_delivery=self._mine)
        return offsets, fenced

    def _mine(self, err: KafkaError | None, msg: Message) -> None:
        """Delivery report of one of this worker's own journal records: remember its offset."""
        if err is None:
            with self._own_lock:
                self.own.setdefault(msg.partition() or 0, set()).add(msg.offset() or 0)

    def _read_back(self, offsets: dict[int, tuple[int, int]]) -> dict[int, int]:
        """Whether another worker wrote to a partition since this worker's previous record:
        when every offset in between is one of its own records, nobody did (no read); else
        the journal is read there; partition -> the newer epoch found (this worker was
        fenced)."""
        ranges = {p: (self.last_own.get(p, first - 1) + 1, last)
                  for p, (first, last) in offsets.items()}
        with self._own_lock:
            for p, (start, end) in list(ranges.items()):
                mine = self.own.get(p, set())
                if all(o in mine for o in range(start, end + 1)):
                    del ranges[p]  # only its own records: not fenced
                self.own[p] = {o for o in mine if o > end}
        if not ranges:
            return {}
        records = self.read(ranges)
        fenced = {}
        for p, values in records.items():
            newer = journal.fenced_by(values, self.epoch[p])
            if newer is not None:
                fenced[p] = newer
        return fenced

    def read(self, ranges: dict[int, tuple[int, int]]
             ) -> dict[int, list[tuple[int, bytes | None]]]:
        """The journal's (offset, record) pairs in [start, end] of each partition."""
        if self._reader is None:
            assert self._reader_factory is not None, "no journal reader configured"
            self._reader = self._reader_factory()
        reader = self._reader
        reader.assign([TopicPartition(self.topic, p, start) for p, (start, _) in ranges.items()])
        found: dict[int, list[tuple[int, bytes | None]]] = {p: [] for p in ranges}
        left = {p for p, (start, end) in ranges.items() if start <= end}
        deadline = time.monotonic() + READ_BACK_TIMEOUT
        try:
            while left and time.monotonic() < deadline:
                for msg in reader.consume(1000, 0.05):
                    if msg.error() is not None:
                        continue
                    p, o = msg.partition(), msg.offset()
                    if p in left and o <= ranges[p][1]:
                        found[p].append((o, msg.value()))
                        if o >= ranges[p][1]:
                            left.discard(p)
        finally:
            reader.unassign()
        if left:
            raise OutboxError(f"journal partitions {sorted(left)} not read back within "
                              f"{READ_BACK_TIMEOUT:g}s")
        return found

    def _fenced(self, p: int, newer: int) -> None:
        """Another worker claimed partition p: forget it here until it is assigned again."""
        FENCED.inc()
        log.error("partition %d: claimed by a newer owner (epoch %d > %d); this worker's batch "
                  "was discarded and the partition is left to it", p, newer, self.epoch[p])
        self.epoch.pop(p, None)
        self.dirty.pop(p, None)
        self.handled[p] = dict(self.durable.get(p, {}))

    def _send(self, outputs: list[Output]) -> None:
        """Produce the outputs and wait for them (in one transaction when transactional)."""
        with self.outbox.transaction():
            for topic, key, value, partition, headers in outputs:
                self.outbox.produce(topic, key, value, partition=partition, headers=headers)
            self.outbox.flush()

    def _wait(self, failures: list[str]) -> None:
        left = self.outbox.producer.flush(30.0)
        if left or failures:
            raise OutboxError(f"journal: {left} records unconfirmed, {len(failures)} failed: "
                              f"{'; '.join(failures[:3])}")

    # -- the store -----------------------------------------------------------------------------

    def _store(self, p: int, batch: Batch, offset: int) -> None:
        """Apply a whole batch to the local store, with its journal offset and the new
        recovery point (positions, epoch, seq, clock)."""
        positions = self.durable.setdefault(p, {})
        positions.update(batch.positions)
        handled = self.handled.setdefault(p, {})
        for topic, o in batch.positions.items():
            handled[topic] = max(handled.get(topic, 0), o)
        self.clock[p] = max(self.clock.get(p, 0.0), batch.clock)
        self.seq[p] = max(self.seq.get(p, -1), batch.seq)
        meta = {"epoch": batch.epoch, "seq": batch.seq, "positions": positions,
                "clock": self.clock[p]}
        if not self.ordered and memory_store_apply(self.table.data, p, [
                *((self.prefix[t] + k, v) for t, k, v in batch.writes),
                (META + b"%d" % p, meta)]):
            return
        tp = TP(self.topic, p)
        events = [self._event(tp, offset, p, self.prefix[t] + k, v) for t, k, v in batch.writes]
        events.append(self._event(tp, offset, p, META + b"%d" % p, meta))
        self.table.data.apply_changelog_batch(
            events, self.table._to_key, self.table._to_value)  # type: ignore[arg-type]

    def _event(self, tp: TP, offset: int, p: int, key: bytes,
               value: dict[str, Any] | None) -> _Event:
        # RocksDB stores the bytes; the memory store keeps the value itself (and reads the
        # bytes only to tell a delete)
        data = None if value is None else changelog_bytes(value) if self.ordered else b"-"
        return _Event(key, value, _Changelog(tp, offset, p, key, data))

    # -- claims and recovery -------------------------------------------------------------------

    def claim(self, actives: list[TP], standbys: list[TP], generation: int) -> dict[TP, int]:
        """Append a claim to each active partition (a mark to each standby) and start their
        recovery; the journal's end offsets, through these records. A claim's offset is this
        worker's epoch on the partition."""
        producer = self.outbox.producer
        ends: dict[TP, int] = {}
        failures: list[str] = []

        def delivered(err: KafkaError | None, msg: Message) -> None:
            if err is not None:
                failures.append(f"{msg.topic()}: {err.str()}")
            else:
                ends[TP(msg.topic() or "", msg.partition() or 0)] = (msg.offset() or 0) + 1

        try:
            with self.outbox.transaction():
                for tp in (*actives, *standbys):
                    record = journal.claim(generation) if tp in actives else journal.mark()
                    producer.produce(tp.topic, record, b"%d" % tp.partition,
                                     partition=tp.partition, on_delivery=delivered)
                self._wait(failures)
        except ProducerFenced as exc:
            _exit_fenced(exc)
        for tp in (*actives, *standbys):
            self.folds[tp.partition] = self._fold(tp)
        claimed = {tp.partition for tp in actives}
        for p in claimed:
            self.epoch[p] = self.last_own[p] = ends[TP(self.topic, p)] - 1
            self.own[p] = set()
            self.dirty.pop(p, None)
        self.sought = {tp: n for tp, n in self.sought.items() if tp.partition not in claimed}
        return ends

    def _fold(self, tp: TP) -> Fold:
        """Where recovery of a partition starts: from the store's recovery point when it holds
        the partition (RocksDB after its persisted offset; a memory store that kept it, which
        Faust then reads only from where its last recovery ended), else from nothing."""
        meta = self.table.get(META + b"%d" % tp.partition)
        if isinstance(meta, dict):
            self.durable[tp.partition] = dict(meta["positions"])
            self.clock[tp.partition] = meta["clock"]
            return Fold(epoch=meta["epoch"], seq=meta["seq"])
        self.durable.pop(tp.partition, None)
        self.last_outputs.pop(tp.partition, None)
        return Fold()

    def recover(self, events: Iterable[Any]) -> None:
        """Feed journal records (in offset order per partition) to their partitions' folds."""
        for event in events:
            msg = event.message
            p = msg.partition
            fold = self.folds.setdefault(p, Fold())
            try:
                batch = fold.feed(msg.value, msg.offset)
            except journal.JournalError as exc:
                log.warning("journal %s offset %d skipped: %s", msg.tp, msg.offset, exc)
                continue
            if batch is not None:
                self._store(p, batch, msg.offset)
                self.last_outputs[p] = (batch.seq, batch.outputs)

    async def recovered(self, actives: set[int]) -> None:
        """Active partitions recovered: send the outputs of each one's last batch again (its
        writer may have died before sending them)."""
        again: list[Output] = []
        for p in actives:
            seq, outputs = self.last_outputs.pop(p, (-1, []))
            fold = self.folds.get(p)
            if seq > max(self.sent_through.get(p, -1), fold.sent if fold else -1):
                again += outputs
                self.sent_through[p] = seq
        if again:
            log.info("recovery: %d outputs of the partitions' last batches sent again",
                     len(again))
            loop = asyncio.get_running_loop()
            async with self._lock:
                try:
                    await loop.run_in_executor(None, self._send, again)
                except ProducerFenced as exc:
                    _exit_fenced(exc)
        for p in sorted(actives):
            self._index(p)

    def _index(self, p: int) -> None:
        """Write the derived indexes of a partition whose state was journaled before them (or
        by an older version of them), in one batch."""
        mark = {"version": INDEX_VERSION, "partition": p}
        if not self.derived or self.get(INDEXES, b"%d" % p, p) == mark:
            return
        started, count = time.monotonic(), 0
        self.begin(p)
        writes = self.unit(p).writes
        for table, fns in self.derived.items():
            for _, value in self.scan(table, p):
                count += 1
                for fn in fns:
                    writes.update(((name, k), v) for name, k, v in fn(None, value))
        writes[(INDEXES, b"%d" % p)] = mark
        self.done()
        if count:
            log.info("partition %d: derived indexes written for %d values in %.1fs", p, count,
                     time.monotonic() - started)


def event_time(msg: Any) -> float:
    """The time of an input record: its timestamp (wall clock only when it has none)."""
    stamp = msg.timestamp
    return float(stamp) if stamp and stamp > 0 else time.time()


async def handle_events(stream: faust.StreamT, state: StateTables, flow: Flow | None,
                        handle: Callable[[EventT], Awaitable[None]],
                        dead_letter: Callable[[EventT, str], None], counts: Counts) -> None:
    """Each event of a stream once and all or nothing: a record already handled (read again
    after a seek or a takeover) is skipped; a handler that raises leaves no write and no output
    behind, and the record goes to push.dlq with the reason.

    A record is handled only once its input has been sought to the journal's position since
    its partition was claimed (the seek comes after the partition's state is recovered), only
    in offset order from the seek until the record at the sought offset came, and its event
    counts only if no seek of the input came meanwhile. A record fetched before the seek and
    handled first would shadow the recovered state, or leave a position past records that the
    seek reads again, which would then look handled and be lost."""
    event: EventT
    clock = time.perf_counter
    async for event in stream.events():
        msg = event.message
        seek = state.sought.get(msg.tp)
        if seek is None:  # read before its input was sought: read again from the seek
            counts.add("before_seek")
            continue
        if state.seen(msg.tp, msg.offset):
            counts.add("read_again")
            continue
        if state.ahead(msg.tp, msg.offset):  # fetched before the seek: read again from it
            counts.add("before_seek")
            continue
        started = clock()
        state.begin(msg.partition)
        try:
            await handle(event)
        except Exception as exc:  # a bad record must never stop the partition
            log.exception("failed on %s offset %d", msg.tp, msg.offset)
            state.discard()
            state.begin(msg.partition)
            dead_letter(event, f"processing failed: {exc!r}")
        if state.sought.get(msg.tp) != seek:  # sought again (or revoked) meanwhile
            state.discard()
            counts.add("before_seek")
            continue
        state.done(msg.tp, msg.offset, event_time(msg))
        if flow is not None:
            flow.received(msg.topic)
            flow.took(msg.topic, clock() - started)

"""Faust tables written in batches: outputs, then one changelog record per key, then the store.

A handler's write is visible at once to every later read in this worker. At Faust's pre-commit
flush the batch goes out in an order that loses nothing when a worker dies at any point:

1. the batch's output records are delivered (the outbox is flushed);
2. one changelog record per written key goes out through confluent-kafka, to the partition
   that owns the key, and is acknowledged;
3. the values are applied to the local store with their changelog offsets (Faust's
   persisted-offset bookkeeping, so a RocksDB store resumes recovery after them).

A crash before 2 completes leaves the changelog (and so the recovered state) without the
batch: the events are processed again and emit the same outputs with the same ids (a repeat,
dropped downstream by send_id). A crash after 2 finds the state applied and the outputs already
delivered. Faust's own changelog producer (aiokafka, ~130 µs a record) is not used.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import faust
from confluent_kafka import KafkaError, Message
from faust.types import TP

from streams.metrics import CHANGELOG, LARGEST
from streams.outbox import Outbox, OutboxError

log = logging.getLogger(__name__)

#: Key of the record written to a changelog partition on the embedded broker when Faust asks
#: for its end before recovering it: that broker's ListOffsets answers the last *batch's* base
#: offset + 1 (INFRA.md), the marker's own offset + 1 is the true end, whoever wrote last and
#: however the last writer stopped. Read back as an absent value, like a delete.
MARKER = b"\x00"
#: What a delete writes to the changelog on the embedded broker, which does not return records
#: with a null value: JSON null, read back as an absent value (a deleted message that comes
#: back this way after a restart is deleted again when its expiry is indexed).
NULL = b"null"

Write = tuple[int, dict[str, Any] | None]  # (partition, value or None for a delete)


def changelog_bytes(value: dict[str, Any]) -> bytes:
    """A table value as written to its changelog and store: JSON in UTF-8, text unescaped (a
    CJK character is 3 bytes, not a 6-byte \\uXXXX escape)."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


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


class PartitionTables:
    """The `Tables` of one partition: what a handler reads and writes."""

    __slots__ = ("state", "partition")

    def __init__(self, state: StateTables, partition: int) -> None:
        self.state, self.partition = state, partition

    def get(self, table: str, key: bytes) -> dict[str, Any] | None:
        """The current value of key: written in this batch, being flushed, or stored."""
        return self.state.get(table, key)

    def put(self, table: str, key: bytes, value: dict[str, Any]) -> None:
        """Write value under key, owned by this partition."""
        self.state.dirty[table][key] = (self.partition, value)

    def delete(self, table: str, key: bytes) -> None:
        """Delete key (a tombstone in the changelog)."""
        self.state.dirty[table][key] = (self.partition, None)


class StateTables:
    """The app's Faust tables, written through batches flushed after the outputs."""

    def __init__(self, app: faust.App, names: tuple[str, ...], partitions: int, outbox: Outbox,
                 embedded: bool, options: dict[str, Any] | None = None) -> None:
        self.app, self.outbox = app, outbox
        # bytes keys are raw; values (dicts) JSON, in the changelog and the store
        self.tables: dict[str, Any] = {
            name: app.Table(name, partitions=partitions, key_type=bytes,
                            options=dict(options) if options else None)
            for name in names}
        self.dirty: dict[str, dict[bytes, Write]] = {name: {} for name in names}
        self.flushing: dict[str, dict[bytes, Write]] = {name: {} for name in names}
        self.embedded = embedded
        if embedded:  # read by the consumer (streams/app.py) before a changelog is recovered
            app.changelog_ends = self.ends  # type: ignore[attr-defined]
        self.views = [PartitionTables(self, p) for p in range(partitions)]
        self.before_flush: list[Callable[[], None]] = []
        self.largest: dict[str, int] = dict.fromkeys(names, 0)
        self._lock = asyncio.Lock()

    def at(self, partition: int) -> PartitionTables:
        """The tables as seen by a handler of this partition."""
        return self.views[partition]

    def get(self, table: str, key: bytes) -> dict[str, Any] | None:
        """The current value of key in this worker."""
        hit = self.dirty[table].get(key) or self.flushing[table].get(key)
        if hit is not None:
            return hit[1]
        value = self.tables[table].get(key)
        return value if isinstance(value, dict) else None

    def values(self, table: str) -> Iterator[dict[str, Any]]:
        """Current values of a table: stored, being flushed or written in this batch (a
        snapshot of the keys is taken first; a value written later is read as it is then)."""
        keys = {*self.tables[table].keys(), *self.flushing[table], *self.dirty[table]}
        for key in keys:
            value = self.get(table, key)
            if value is not None:
                yield value

    # -- the flush ---------------------------------------------------------------------------

    def attach(self) -> None:
        """Run the batch flush inside Faust's pre-commit producer flush."""
        producer = self.app.producer
        flush_faust = producer.flush

        async def flush() -> None:
            await flush_faust()
            await self.flush()

        producer.flush = flush  # type: ignore[method-assign]

    async def flush(self) -> None:
        """Outputs, then changelog, then store (see the module docstring)."""
        async with self._lock:
            for hook in self.before_flush:
                hook()
            self.flushing, self.dirty = self.dirty, {name: {} for name in self.tables}
            loop = asyncio.get_running_loop()
            try:
                await loop.run_in_executor(None, self.outbox.flush)
                if any(self.flushing.values()):
                    batch = self._encode()
                    offsets = await loop.run_in_executor(None, self._write_changelog, batch)
                    self._apply(batch, offsets)
            except BaseException:
                for name, writes in self.flushing.items():  # keep them for the next attempt
                    self.dirty[name] = {**writes, **self.dirty[name]}
                raise
            finally:
                self.flushing = {name: {} for name in self.tables}

    def _encode(self) -> list[tuple[str, bytes, int, dict[str, Any] | None, bytes | None]]:
        """The flushing writes as (table, key, partition, value, changelog bytes)."""
        batch = []
        for name, writes in self.flushing.items():
            for key, (partition, value) in writes.items():
                data = (NULL if self.embedded else None) if value is None else \
                    changelog_bytes(value)
                batch.append((name, key, partition, value, data))
                if data is not None and len(data) > self.largest[name]:
                    self.largest[name] = len(data)
                    LARGEST.labels(name).set(len(data))
            CHANGELOG.labels(name).inc(len(writes))
        return batch

    def _write_changelog(self, batch: list[tuple[str, bytes, int, dict[str, Any] | None,
                                                 bytes | None]]) -> dict[tuple[str, int], int]:
        """Produce one record per written key and wait for all; the last offset per partition."""
        producer = self.outbox.producer
        offsets: dict[tuple[str, int], int] = {}
        failures: list[str] = []

        def delivered(err: KafkaError | None, msg: Message) -> None:
            if err is not None:
                failures.append(f"{msg.topic()}: {err.str()}")
                return
            tp = (msg.topic() or "", msg.partition() or 0)
            offsets[tp] = max(offsets.get(tp, -1), msg.offset() or 0)

        for name, key, partition, _, data in batch:
            topic = self.tables[name].changelog_topic_name
            self.outbox.produce(topic, key, data, partition=partition, on_delivery=delivered)
        self._wait(producer, failures)
        return offsets

    def ends(self, partitions: list[TP]) -> dict[TP, int]:
        """The true end offsets of changelog partitions on the embedded broker (see MARKER)."""
        producer = self.outbox.producer
        marks: dict[TP, int] = {}
        failures: list[str] = []

        def delivered(err: KafkaError | None, msg: Message) -> None:
            if err is not None:
                failures.append(f"{msg.topic()}: {err.str()}")
            else:
                marks[TP(msg.topic() or "", msg.partition() or 0)] = msg.offset() or 0

        for tp in partitions:
            producer.produce(tp.topic, NULL, MARKER, partition=tp.partition,
                             on_delivery=delivered)
        self._wait(producer, failures)
        return {tp: marks[tp] + 1 for tp in partitions}

    @staticmethod
    def _wait(producer: Any, failures: list[str]) -> None:
        left = producer.flush(30.0)
        if left or failures:
            raise OutboxError(f"changelog: {left} records unconfirmed, {len(failures)} failed: "
                              f"{'; '.join(failures[:3])}")

    def _apply(self, batch: list[tuple[str, bytes, int, dict[str, Any] | None, bytes | None]],
               offsets: dict[tuple[str, int], int]) -> None:
        """Write the flushed values into the stores, with their changelog offsets."""
        events: dict[str, list[_Event]] = {}
        for name, key, partition, value, data in batch:
            topic = self.tables[name].changelog_topic_name
            message = _Changelog(TP(topic, partition), offsets.get((topic, partition), 0),
                                 partition, key, None if value is None else data)
            events.setdefault(name, []).append(_Event(key, value, message))
        for name, applied in events.items():
            table = self.tables[name]
            table.data.apply_changelog_batch(applied, table._to_key, table._to_value)

"""The sink: event topics into their ClickHouse tables, in batches, at least once.

A confluent-kafka consumer in group `pushcascade.sink` buffers the records per table and
inserts them when a table holds `sink_batch_rows` rows or the oldest row waited
`sink_flush_interval`. Records are not decoded here: each goes to ClickHouse as an Avro datum
with its Kafka coordinates in front (connectors/clickhouse/avro.py), and ClickHouse decodes.
Offsets are committed only after every buffered row is inserted. While
ClickHouse fails, the sink pauses its partitions (staying in the group), retries with a
doubling backoff and resumes without loss; the tables' keys make a repeat count once.
Undecodable records go to push.dlq (a dead letter that is itself undecodable is only counted)."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from confluent_kafka import KafkaError, Message, TopicPartition

from connectors.clickhouse.avro import Container, coordinates, string
from connectors.clickhouse.tables import TABLES, Table
from connectors.metrics import SINK_FAILURES, SINK_INSERT, SINK_LAG, SINK_PAUSED, SINK_ROWS
from connectors.settings import ConnectorSettings
from schemas import Codec, SchemaError
from streams.domain.records import dead_letter
from streams.kafka import consumer, producer
from streams.privacy import masked
from streams.settings import Settings

log = logging.getLogger(__name__)

GROUP = "pushcascade.sink"
DLQ = "push.dlq"
#: A buffered record: its schema id, its Avro datum with the coordinates, its message.
Entry = tuple[int, bytes, Message]


class Sink:
    """Consumes every event topic and keeps the delivery tables filled."""

    def __init__(self, settings: Settings, config: ConnectorSettings, ch: Any,
                 codec: Codec | None = None, group: str = GROUP) -> None:
        self.settings, self.config, self.ch = settings, config, ch
        self.codec = codec or Codec(settings.connections.schema_registry_url or None)
        self.prefix = prefix = settings.tuning.topic_prefix
        self.tables: dict[str, Table] = {prefix + topic: t for topic, t in TABLES.items()}
        bootstrap = settings.connections.kafka_bootstrap_servers
        self.consumer = consumer(bootstrap, prefix + group)
        self.producer = producer(bootstrap)
        self.by_name = {t.name: t for t in TABLES.values()}
        self.topic_bytes = {topic: string(topic) for topic in self.tables}
        self.containers: dict[tuple[str, int], Container] = {}
        self.buffers: dict[str, list[Entry]] = {}
        self.offsets: dict[tuple[str, int], int] = {}
        self.oldest: float | None = None
        self.failures = 0
        self.retry_at = 0.0
        self.inserted = 0
        self.dead_letters = 0
        self.first_at = 0.0  # when the first record was taken (monotonic; benchmarks)

    # -- the loop ----------------------------------------------------------------------------

    def run(self, stop: threading.Event, on_tick: Any = None) -> None:
        """Consume, buffer and insert until stop is set; a last flush and commit at the end."""
        self.consumer.subscribe(list(self.tables), on_assign=self._assigned,
                                on_revoke=self._revoked)
        lag_at = 0.0
        try:
            while not stop.is_set():
                batch = [m for m in self.consumer.consume(5000, 0.2) if self._usable(m)]
                if batch:
                    self.absorb(batch)
                now = time.monotonic()
                if self._due(now):
                    self.flush()
                if now - lag_at > 5:
                    self._measure_lag()
                    lag_at = now
                if on_tick is not None:
                    on_tick()
            self.flush()
        finally:
            self.consumer.close()
            self.producer.flush(10)

    def _due(self, now: float) -> bool:
        if not (self.buffers or self.offsets) or now < self.retry_at:
            return False
        full = any(len(rows) >= self.config.sink_batch_rows for rows in self.buffers.values())
        waited = self.oldest is not None and now - self.oldest >= self.config.sink_flush_interval
        return full or waited or self.failures > 0

    @staticmethod
    def _usable(msg: Message) -> bool:
        err = msg.error()
        if err is not None and err.code() != KafkaError._PARTITION_EOF:
            log.warning("sink: consumer error %s", err)
        return err is None

    def absorb(self, batch: list[Message]) -> None:
        """Buffer a batch's records as Avro datums for ClickHouse (a record whose header is
        bad goes to push.dlq at once); the batch's offsets commit after the insert."""
        identify, buffers, offsets = self.codec.identify, self.buffers, self.offsets
        for msg in batch:
            topic, partition, offset = msg.topic() or "", msg.partition() or 0, msg.offset() or 0
            value = msg.value()
            table = self.tables[topic]
            offsets[(topic, partition)] = offset + 1
            try:
                name, schema_id = identify(value, topic)
                if name != table.record:
                    raise SchemaError(topic, f"expected {table.record}, got {name}")
            except SchemaError as exc:
                self._dead_letter(msg, table, str(exc))
                continue
            datum = coordinates(self.topic_bytes[topic], partition, offset) + (value or b"")[5:]
            buffers.setdefault(table.name, []).append((schema_id, datum, msg))
        if self.oldest is None:  # dead letters' offsets, too, commit within the interval
            self.oldest = time.monotonic()
            self.first_at = self.first_at or self.oldest

    def flush(self) -> bool:
        """Insert every buffered table, then commit; on failure keep the rows and pause."""
        for name in list(self.buffers):
            table = self.by_name[name]
            while True:
                entries = self.buffers[name]
                started = time.monotonic()
                try:
                    self._insert(table, entries)
                    break
                except Exception as exc:
                    if not self._drop_undecodable(table, entries):
                        self._failed(exc)
                        return False
            SINK_INSERT.labels(name).observe(time.monotonic() - started)
            SINK_ROWS.labels(name).inc(len(entries))
            self.inserted += len(entries)
            del self.buffers[name]
        self.oldest = None
        if self.failures:
            log.info("sink: ClickHouse inserts work again after %d failures; resuming",
                     self.failures)
            self.failures, self.retry_at = 0, 0.0
            SINK_PAUSED.set(0)
            self.consumer.resume(self.consumer.assignment())
        self._commit()
        return True

    def _insert(self, table: Table, entries: list[Entry]) -> None:
        """One Avro container per writer schema, decoded by ClickHouse into the table."""
        by_schema: dict[int, list[bytes]] = {}
        for schema_id, datum, _ in entries:
            by_schema.setdefault(schema_id, []).append(datum)
        for schema_id, datums in by_schema.items():
            container = self.containers.get((table.name, schema_id))
            if container is None:
                container = Container(self.codec.writer_json(schema_id), table.rename)
                self.containers[(table.name, schema_id)] = container
            self.ch.raw_insert(table.name, table.insert_columns,
                               insert_block=container.file(datums), fmt="Avro")

    def _drop_undecodable(self, table: Table, entries: list[Entry]) -> bool:
        """After a failed insert: dead-letter the records that do not decode (in Python) and
        keep the rest buffered; False when every record decodes (ClickHouse failed)."""
        good: list[Entry] = []
        for entry in entries:
            msg = entry[2]
            try:
                self.codec.decode(msg.value(), topic=msg.topic() or "", expected=table.record)
            except SchemaError as exc:
                self._dead_letter(msg, table, str(exc))
            else:
                good.append(entry)
        if len(good) == len(entries):
            return False
        self.buffers[table.name] = good
        return True

    def _failed(self, exc: Exception) -> None:
        """An insert failed: pause consuming and retry later, doubling the wait."""
        self.failures += 1
        SINK_FAILURES.inc()
        wait = min(self.config.sink_backoff_max,
                   self.config.sink_backoff * 2 ** (self.failures - 1))
        self.retry_at = time.monotonic() + wait
        if self.failures == 1:
            SINK_PAUSED.set(1)
            self.consumer.pause(self.consumer.assignment())
        log.warning("sink: insert failed (%s: %s); paused, retry %d in %.1fs",
                    type(exc).__name__, str(exc).splitlines()[0][:200], self.failures, wait)

    def _commit(self) -> None:
        """Commit what is inserted, after the dead letters among it are on the broker."""
        if not self.offsets:
            return
        if self.dead_letters and self.producer.flush(30) > 0:
            raise RuntimeError("dead letters not acknowledged by the broker within 30s")
        tps = [TopicPartition(t, p, o) for (t, p), o in self.offsets.items()]
        self.consumer.commit(offsets=tps, asynchronous=False)
        self.offsets.clear()

    def _dead_letter(self, msg: Message, table: Table, error: str) -> None:
        """An undecodable record: to push.dlq with the reason (never a dead letter's own)."""
        self.dead_letters += 1
        topic = msg.topic() or ""
        log.warning("sink: undecodable record %s[%s]@%s: %s", msg.topic(), msg.partition(),
                    msg.offset(), error)
        if table.record == "DeadLetter":
            return
        value = masked(self.codec, msg.value(), topic[len(self.prefix):])
        letter = dead_letter(msg.key(), value, topic, msg.partition() or 0, msg.offset() or 0,
                             error, time.time())
        self.producer.produce(self.settings.topic(DLQ), key=msg.key() or b"",
                              value=self.codec.encode("DeadLetter", letter))
        self.producer.poll(0)

    # -- rebalances and lag ------------------------------------------------------------------

    def _assigned(self, c: Any, partitions: list[TopicPartition]) -> None:
        log.info("sink: assigned %d partitions", len(partitions))
        if self.failures:
            c.pause(partitions)

    def _revoked(self, _: Any, partitions: list[TopicPartition]) -> None:
        """Insert and commit what was read before the partitions go; if ClickHouse fails the
        rows are dropped and read again by the next owner from the committed offsets."""
        if self.buffers and not self.flush():
            log.warning("sink: %d buffered rows dropped at revoke (ClickHouse failing); the "
                        "next owner reads them again", sum(map(len, self.buffers.values())))
        self.buffers.clear()
        self.offsets.clear()
        self.oldest, self.failures, self.retry_at = None, 0, 0.0
        SINK_PAUSED.set(0)

    def _measure_lag(self) -> None:
        """Records behind the high watermark, per partition (the last fetch's watermark)."""
        try:
            assigned = self.consumer.assignment()
            for tp in self.consumer.position(assigned):
                _, high = self.consumer.get_watermark_offsets(tp, cached=True)
                if high >= 0 and tp.offset >= 0:
                    SINK_LAG.labels(tp.topic, str(tp.partition)).set(max(0, high - tp.offset))
        except Exception as exc:  # a metric must never stop the sink
            log.debug("sink: lag not measured: %s", exc)

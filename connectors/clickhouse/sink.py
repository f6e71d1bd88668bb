"""The sink: event topics into their ClickHouse tables, in batches, at least once.

A confluent-kafka consumer in group `pushcascade.sink` buffers the records per table and
inserts them when a table holds `sink_batch_rows` rows or the oldest row waited
`sink_flush_interval`. Every record is decoded once by the codec (schemas/codec.py, as the
router does): one that does not decode goes to push.dlq at once with the codec's reason, since
ClickHouse's Avro input stores some such records (trailing bytes, a string not UTF-8, a union
branch out of range). The rows go to ClickHouse as the Avro datums, each with its Kafka
coordinates in front (connectors/clickhouse/avro.py), and ClickHouse decodes them again into
the table. Offsets are committed only after every buffered row is inserted or dead-lettered
(and the broker acknowledged the letters). While ClickHouse fails, the sink pauses its
partitions (staying in the group), retries with a doubling backoff and resumes without loss;
the tables' keys make a repeat count once. Rows ClickHouse refuses are not retried
(refusals.py): a batch spanning too many day partitions is split by partition, any other
refused batch is halved until the refused rows are found, and those go to push.dlq with
ClickHouse's reason (a dead letter that is itself refused or undecodable is only counted)."""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from confluent_kafka import KafkaError, Message, TopicPartition

from connectors.clickhouse.avro import SYNC, Container, string, varint, zigzag
from connectors.clickhouse.refusals import Refusal, by_partition, day, halves, reason, refusal
from connectors.clickhouse.tables import TABLES, Table
from connectors.metrics import SINK_FAILURES, SINK_INSERT, SINK_PAUSED, SINK_ROWS
from connectors.settings import ConnectorSettings
from schemas import Codec, SchemaError
from streams.domain.records import dead_letter, personal_error
from streams.kafka import consumer, producer
from streams.metrics import Flow, confluent_lag
from streams.privacy import masked
from streams.settings import Settings

log = logging.getLogger(__name__)

GROUP = "pushcascade.sink"
DLQ = "push.dlq"
#: A buffered record: its schema id, its container block (coordinates and datum), its message.
Entry = tuple[int, bytes, Message]
#: Every insert: a time outside DateTime's range (1970 to 2106; the tables' TTL takes
#: toDateTime) is refused rather than stored wrapped around.
INSERT_SETTINGS = {"date_time_overflow_behavior": "throw"}


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
        self.flow = Flow("sink")
        self.by_name = {t.name: t for t in TABLES.values()}
        self.coordinates: dict[tuple[str, int], bytes] = {}  # topic and partition, encoded
        self.containers: dict[tuple[str, int], Container] = {}
        self.buffers: dict[str, list[Entry]] = {}
        self.offsets: dict[tuple[str, int], int] = {}
        self.oldest: float | None = None
        self.failures = 0
        self.retry_at = 0.0
        self.inserted = 0
        self.dead_letters = 0
        self.undelivered: list[str] = []  # why the broker refused dead letters
        self.first_at = 0.0  # when the first record was taken (monotonic; benchmarks)
        self.assigned: set[tuple[str, int]] = set()  # kept by the rebalance callbacks
        #: one insert job at a time runs in this thread while the next batch is read
        self.inserter = ThreadPoolExecutor(1, thread_name_prefix="sink-insert")
        self.job: Future[None] | None = None
        self.job_buffers: dict[str, list[Entry]] = {}
        self.job_offsets: dict[tuple[str, int], int] = {}

    # -- the loop ----------------------------------------------------------------------------

    def run(self, stop: threading.Event, on_tick: Any = None) -> None:
        """Consume, buffer and insert until stop is set; a last flush and commit at the end."""
        self.consumer.subscribe(list(self.tables), on_assign=self._assigned,
                                on_revoke=self._revoked)
        lag_at = 0.0
        try:
            while not stop.is_set():
                batch = [m for m in self.consumer.consume(20000, 0.2) if self._usable(m)]
                if batch:
                    self.absorb(batch)
                self._finish(block=False)
                now = time.monotonic()
                if self.job is None and self._due(now):
                    self._start()
                if now - lag_at > 5:
                    self._measure_lag()
                    lag_at = now
                if on_tick is not None:
                    on_tick()
            self.flush()
        finally:
            self.consumer.close()
            self.producer.flush(10)
            self.inserter.shutdown()

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
        """Buffer a batch's records as Avro datums for ClickHouse (a record that does not
        decode goes to push.dlq at once); the batch's offsets commit after the insert."""
        decode, buffers, offsets = self.codec.decode, self.buffers, self.offsets
        received: dict[str, int] = {}
        for msg in batch:
            topic, partition, offset = msg.topic() or "", msg.partition() or 0, msg.offset() or 0
            received[topic] = received.get(topic, 0) + 1
            value = msg.value() or b""
            table = self.tables[topic]
            offsets[(topic, partition)] = offset + 1
            try:
                decode(value, topic, table.record)
            except SchemaError as exc:
                self._dead_letter(msg, table, str(exc))
                continue
            schema_id = int.from_bytes(value[1:5])
            where = self.coordinates.get((topic, partition))
            if where is None:
                where = self.coordinates[(topic, partition)] = (
                    string(topic) + zigzag(partition))
            body = where + varint(offset << 1) + value[5:]  # offset >= 0: zigzag is << 1
            buffers.setdefault(table.name, []).append(
                (schema_id, b"\x02" + varint(len(body) << 1) + body + SYNC, msg))
        for topic, n in received.items():
            self.flow.received(topic, n)
        if self.oldest is None:  # dead letters' offsets, too, commit within the interval
            self.oldest = time.monotonic()
            self.first_at = self.first_at or self.oldest

    def flush(self) -> bool:
        """Insert everything buffered and commit it, waiting; False if ClickHouse failed."""
        if self._finish(block=True) is False:
            return False
        if self.buffers or self.offsets:
            self._start()
        return self._finish(block=True) is not False

    def _start(self) -> None:
        """Hand the buffered tables to the insert thread; the next rows buffer meanwhile."""
        self.job_buffers, self.job_offsets = self.buffers, self.offsets
        self.buffers, self.offsets, self.oldest = {}, {}, None
        self.job = self.inserter.submit(self._insert_all, self.job_buffers)

    def _finish(self, block: bool) -> bool | None:
        """If the insert job is done (or, with block, once it is): commit its offsets, or on
        failure put its rows back in front and pause. None while it runs."""
        job = self.job
        if job is None:
            return True
        if not block and not job.done():
            return None
        self.job = None
        exc = job.exception()
        if exc is not None:
            for name, entries in self.job_buffers.items():
                self.buffers[name] = entries + self.buffers.get(name, [])
            for tp, offset in self.job_offsets.items():
                self.offsets[tp] = max(offset, self.offsets.get(tp, 0))
            self.oldest = self.oldest or time.monotonic()
            self._failed(exc)
            return False
        if self.failures:
            log.info("sink: ClickHouse inserts work again after %d failures; resuming",
                     self.failures)
            self.failures, self.retry_at = 0, 0.0
            SINK_PAUSED.set(0)
            self.consumer.resume(self.consumer.assignment())
        self._commit(self.job_offsets)
        return True

    def _insert_all(self, buffers: dict[str, list[Entry]]) -> None:
        """Store every table of a job (in the insert thread); rows stored or dead-lettered
        leave `buffers`, so after a failure only the rest is tried again."""
        for name in list(buffers):
            todo = [buffers[name]]
            try:
                self._store(self.by_name[name], todo)
            finally:
                buffers[name] = [entry for chunk in reversed(todo) for entry in chunk]
            del buffers[name]

    def _store(self, table: Table, todo: list[list[Entry]]) -> None:
        """Insert the chunks of `todo` (a stack, the next on top) until none is left (every
        record in them decodes): a chunk ClickHouse refuses is replaced by its parts; any other
        failure leaves it on top and raises."""
        while todo:
            chunk = todo[-1]
            started = time.monotonic()
            try:
                self._insert(table, chunk)
            except Exception as exc:
                todo[-1:] = reversed(self._parts(table, chunk, exc))
                continue
            todo.pop()
            SINK_INSERT.labels(table.name).observe(time.monotonic() - started)
            SINK_ROWS.labels(table.name).inc(len(chunk))
            self.inserted += len(chunk)

    def _parts(self, table: Table, chunk: list[Entry], exc: Exception) -> list[list[Entry]]:
        """The parts to insert instead of a chunk ClickHouse refused: its day partitions in
        groups, or its halves; none for a single refused row, which goes to push.dlq.
        Re-raises `exc` when ClickHouse failed rather than the rows."""
        refused = refusal(getattr(exc, "code", None), str(exc))
        if refused is None:
            raise exc
        if refused is Refusal.PARTITIONS and table.day is not None:
            groups = by_partition((self._day(table, entry), entry) for entry in chunk)
            if len(groups) > 1:
                log.info("sink: %d %s rows span too many day partitions for one insert; "
                         "inserting them in %d groups", len(chunk), table.name, len(groups))
                return groups
        if len(chunk) > 1:
            return halves(chunk)
        self._dead_letter(chunk[0][2], table, f"ClickHouse refused the row: {reason(str(exc))}")
        return []

    def _day(self, table: Table, entry: Entry) -> int:
        """The day partition of a buffered record (decoded in Python)."""
        msg = entry[2]
        record = self.codec.decode(msg.value(), topic=msg.topic() or "", expected=table.record)
        return day(record[table.day or ""])

    def _insert(self, table: Table, entries: list[Entry]) -> None:
        """One Avro container per writer schema, decoded by ClickHouse into the table."""
        by_schema: dict[int, list[bytes]] = {}
        for schema_id, one, _ in entries:
            by_schema.setdefault(schema_id, []).append(one)
        for schema_id, blocks in by_schema.items():
            container = self.containers.get((table.name, schema_id))
            if container is None:
                container = Container(self.codec.writer_json(schema_id), table.rename)
                self.containers[(table.name, schema_id)] = container
            self.ch.raw_insert(table.name, table.insert_columns, settings=INSERT_SETTINGS,
                               insert_block=container.file(blocks), fmt="Avro")

    def _failed(self, exc: BaseException) -> None:
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

    def _commit(self, offsets: dict[tuple[str, int], int]) -> None:
        """Commit what is inserted, after the dead letters among it are on the broker."""
        if not offsets:
            return
        if self.dead_letters and self.producer.flush(30) > 0:
            raise RuntimeError("dead letters not acknowledged by the broker within 30s")
        if self.undelivered:
            raise RuntimeError(f"the broker refused {len(self.undelivered)} dead letters "
                               f"({self.undelivered[0]}); offsets not committed")
        tps = [TopicPartition(t, p, o) for (t, p), o in offsets.items()]
        self.consumer.commit(offsets=tps, asynchronous=False)

    def _dead_letter(self, msg: Message, table: Table, error: str) -> None:
        """A record that does not decode or that ClickHouse refused: to push.dlq with the
        reason (never a dead letter's own)."""
        self.dead_letters += 1
        topic = msg.topic() or ""
        error = personal_error(topic, error)  # the log line too
        log.warning("sink: record %s[%s]@%s to %s: %s", msg.topic(), msg.partition(),
                    msg.offset(), DLQ, error)
        if table.record == "DeadLetter":
            return
        value = masked(self.codec, msg.value(), topic[len(self.prefix):])
        letter = dead_letter(msg.key(), value, topic, msg.partition() or 0, msg.offset() or 0,
                             error, time.time())
        self.flow.sent(self.settings.topic(DLQ))
        self.producer.produce(self.settings.topic(DLQ), key=msg.key() or b"",
                              value=self.codec.encode("DeadLetter", letter),
                              on_delivery=self._delivered)
        self.producer.poll(0)

    def _delivered(self, err: KafkaError | None, _: Message) -> None:
        """A dead letter's delivery report: a refusal keeps the offsets from being committed."""
        if err is not None:
            self.undelivered.append(str(err))

    # -- rebalances and lag ------------------------------------------------------------------

    def ready(self) -> bool:
        """Partitions assigned and ClickHouse taking inserts (read from any thread)."""
        return bool(self.assigned) and not self.failures

    def _assigned(self, c: Any, partitions: list[TopicPartition]) -> None:
        log.info("sink: assigned %d partitions", len(partitions))
        self.assigned = {(tp.topic, tp.partition) for tp in partitions}
        if self.failures:
            c.pause(partitions)

    def _revoked(self, _: Any, partitions: list[TopicPartition]) -> None:
        """Insert and commit what was read before the partitions go; if ClickHouse fails the
        rows are dropped and read again by the next owner from the committed offsets."""
        self.assigned = set()
        if (self.buffers or self.job) and not self.flush():
            log.warning("sink: %d buffered rows dropped at revoke (ClickHouse failing); the "
                        "next owner reads them again", sum(map(len, self.buffers.values())))
        self.buffers.clear()
        self.offsets.clear()
        self.oldest, self.failures, self.retry_at = None, 0, 0.0
        SINK_PAUSED.set(0)

    def _measure_lag(self) -> None:
        """Records behind the high watermark, per partition (the last fetch's watermark)."""
        confluent_lag(self.flow, self.consumer)

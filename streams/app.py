"""The Faust application: topics, tables and the settings that suit the broker profile."""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import aiokafka
import faust
import faust.streams as faust_streams
from confluent_kafka import KafkaError, TopicPartition
from faust.transport.drivers import aiokafka as driver
from faust.types import TP, Message
from faust.types.tuples import ack_lock
from mode import Service

from streams.settings import Connections, Settings

log = logging.getLogger(__name__)

# Faust's compiled stream iterator acknowledges inline, past Consumer.ack (below), and skips a
# message of an earlier consumer generation without handling or acknowledging it; the Python
# iterator acknowledges through Consumer.ack, where such a message is refused.
faust_streams._CStreamIterator = None


#: The group session timeout (s) on the embedded broker, where a worker must be replaced fast.
TANSU_SESSION_TIMEOUT = 6.0


def create_app(settings: Settings, bootstrap: str) -> faust.App:
    """A Faust app for these settings; its id (and so its group and changelogs) has the prefix."""
    tuning = settings.tuning
    profile: dict[str, Any] = {}
    if tuning.broker_profile == "tansu":
        profile = {
            "broker_session_timeout": TANSU_SESSION_TIMEOUT,
            "broker_heartbeat_interval": 1.0,
            "producer_max_batch_size": 1,  # table recovery drops a batch's last record otherwise
        }
    Path(tuning.data_dir).mkdir(parents=True, exist_ok=True)
    app = faust.App(
        f"{tuning.topic_prefix}pushcascade",
        broker=f"kafka://{bootstrap}",
        store=tuning.store,
        datadir=str(Path(tuning.data_dir)),
        topic_partitions=tuning.partitions,
        topic_allow_declare=True,
        topic_disable_leader=True,
        consumer_auto_offset_reset="earliest",
        web_enabled=False,
        table_standby_replicas=tuning.standby_replicas,
        topic_replication_factor=tuning.replication_factor or 1,
        broker_credentials=credentials(settings.connections),
        key_serializer="raw",
        value_serializer="raw",
        stream_wait_empty=False,
        broker_commit_interval=0.5,
        **profile,
    )
    app.transport.Consumer = _consumer_class(  # type: ignore[misc]
        round(tuning.fetch_wait * 1000))
    return app


def credentials(connections: Connections) -> Any:
    """Faust's broker credentials for KAFKA_SECURITY_PROTOCOL (None for PLAINTEXT)."""
    protocol = connections.kafka_security_protocol
    context = None
    if protocol.endswith("SSL"):
        context = ssl.create_default_context(cafile=connections.kafka_ssl_ca_location or None)
        if connections.kafka_ssl_certificate_location:
            context.load_cert_chain(connections.kafka_ssl_certificate_location,
                                    keyfile=connections.kafka_ssl_key_location or None)
    if protocol.startswith("SASL"):
        return faust.SASLCredentials(
            username=connections.kafka_sasl_username,
            password=connections.kafka_sasl_password.get_secret_value(),
            mechanism=connections.kafka_sasl_mechanism, ssl_context=context)
    if protocol == "SSL":
        return faust.SSLCredentials(context)
    return None


def store_options(settings: Settings) -> dict[str, Any] | None:
    """The options of every table store: RocksDB's cache and buffer sizes (None in memory)."""
    t = settings.tuning
    if not t.store.startswith("rocksdb"):
        return None
    return {"block_cache_size": t.rocksdb_block_cache_mb << 20,
            "write_buffer_size": t.rocksdb_write_buffer_mb << 20,
            "max_open_files": t.rocksdb_max_open_files}


#: Seconds between two looks at the same hole in the handled offsets.
HOLE_RECHECK = 5.0
#: Seconds a partition read again from a hole may take to deliver the hole's first record
#: before it is sought again (a busy worker may take long to finish the batch it holds).
REREAD_TIMEOUT = 60.0
#: A partition with records after its committed offset and none handled for WATCH_IDLE
#: seconds (checked every WATCH_INTERVAL) is read again from its committed offset.
WATCH_INTERVAL, WATCH_IDLE = 1.0, 5.0


def hole(acked: Iterable[int], committed: int | None,
         covered: Callable[[int], bool]) -> tuple[int, int] | None:
    """The offsets [start, end) before the first acknowledged one that were never handled, when
    committing the acknowledged offsets would skip them; None when nothing would be skipped.

    `committed` is the next offset to read; `covered(offset)` says the log has no record there
    (a gap Faust knows: compaction, a transaction marker)."""
    first = min(acked, default=None)
    if first is None or committed is None or first <= committed or covered(committed):
        return None
    return committed, first


class ReadOffsets(defaultdict):
    """Faust's last read offset per partition, which never makes it drop a record.

    Faust's fetch loop drops a record whose offset is below the partition's read offset. After
    a seek (ours, or its own to the committed offsets at a rebalance) the rest of a batch
    fetched before it still raises the read offset, so the records read again from the seek
    were dropped unhandled: a hole that no re-read could fill. The loop reads the offset by
    indexing, so indexing answers None (never drop, as for a fresh partition) while `get` tells
    the offset last read. A record handled twice this way is a redelivery, which every
    consumer here tolerates (at-least-once)."""

    def __getitem__(self, tp: TP) -> None:
        return None


def _consumer_class(fetch_wait_ms: int) -> type[driver.Consumer]:
    """Faust's aiokafka consumer with our fetch wait instead of its hard-coded 1500 ms, which
    leaves an idle worker ~0.5 s behind on the embedded broker (INFRA.md), and a commit that
    never skips a record it did not handle."""

    class ConsumerThread(driver.AIOKafkaConsumerThread):
        def _create_worker_consumer(self, transport: Any) -> aiokafka.AIOKafkaConsumer:
            consumer = super()._create_worker_consumer(transport)
            consumer._fetch_max_wait_ms = fetch_wait_ms
            return consumer

    class Consumer(driver.Consumer):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._read_offset = ReadOffsets(lambda: None)
            #: partition -> (offset it is read again from, when): one re-read at a time
            self._rereads: dict[TP, tuple[int, float]] = {}
            #: partition -> when its hole was last looked at
            self._hole_checks: dict[TP, float] = {}

        def _new_consumer_thread(self) -> driver.AIOKafkaConsumerThread:
            return ConsumerThread(self, loop=self.loop, beacon=self.beacon)

        async def highwaters(self, *partitions: TP) -> Mapping[TP, int]:
            """End offsets; a changelog's from a marker record where the app asks for it (the
            embedded broker's ListOffsets is short of the end: streams/state.py MARKER)."""
            ends = dict(await super().highwaters(*partitions))
            marker_ends = getattr(self.app, "changelog_ends", None)
            changelogs = [tp for tp in partitions if tp.topic.endswith("-changelog")]
            if marker_ends is not None and changelogs:
                loop = asyncio.get_running_loop()
                ends.update(await loop.run_in_executor(None, marker_ends, changelogs))
            return ends

        def ack(self, message: Message) -> bool:
            """Acknowledge a handled message, except one read before the latest rebalance.

            A Faust stream acknowledges, without handling it, a message that reaches it from an
            earlier consumer generation or while flow is suspended; the rebalance has already
            cleared the partition's acknowledgements, so such an ack either covered a record
            never handled (lost when committed) or, for a partition now owned elsewhere, later
            committed a stale offset over the new owner's progress. Refused, the message is
            read again from the committed offset by whoever owns the partition."""
            app = self.app
            if (message.generation_id == app.consumer_generation_id
                    and app.flow_control.is_active()):
                return bool(super().ack(message))
            with ack_lock:
                message.acked = True
                self._unacked_messages.discard(message)
            return False

        def _new_offset(self, tp: TP) -> int | None:
            """Faust's next offset to commit, except over records never handled.

            Faust commits the first run of acknowledged offsets when it starts within one of
            the committed offset, so a record read past without being handled (seen under
            restarts and rebalances) was committed over: lost. Such a hole is never committed
            over unless the broker shows it holds no record there (a compacted log) or the
            group has committed past it already; otherwise the partition is read again from
            the hole, once at a time."""
            found = hole(self._acked[tp], self._committed_offset[tp],
                         lambda offset: bool(self._gap[tp].at(offset)))
            checks = self._hole_checks
            now = time.monotonic()
            if found is None:
                checks.pop(tp, None)
                self._rereads.pop(tp, None)
                return super()._new_offset(tp)
            if self._rereading(tp):
                return None  # read again from the hole, not yet delivered
            if now - checks.get(tp, -HOLE_RECHECK) >= HOLE_RECHECK:
                checks[tp] = now
                asyncio.ensure_future(self._mend(tp, *found))
            return None

        async def getmany(self, timeout: float) -> AsyncIterator[tuple[TP, Any]]:
            """Faust's fetched messages; a partition read again is delivered once its first
            record comes back (a new seek before would discard the fetch under way)."""
            rereads = self._rereads
            async for tp, message in super().getmany(timeout):
                if rereads and tp in rereads and message.offset == rereads[tp][0]:
                    del rereads[tp]
                yield tp, message

        def _rereading(self, tp: TP) -> bool:
            """Whether the partition was sought back and has not delivered that record yet."""
            reread = self._rereads.get(tp)
            return reread is not None and time.monotonic() - reread[1] < REREAD_TIMEOUT

        async def _read_again(self, tp: TP, offset: int) -> None:
            """Seek a partition back to `offset` (in the consumer's thread)."""
            self._rereads[tp] = (offset, time.monotonic())
            await self._thread.seek_wait({tp: offset})

        async def _mend(self, tp: TP, start: int, end: int) -> None:
            """Read a hole again from its start, unless the group committed past it already
            (the partition's previous owner handled it) or the broker's first record at or
            after `start` lies beyond it (a gap of the log)."""
            loop = asyncio.get_running_loop()
            try:
                committed, first = await loop.run_in_executor(None, self._look, tp, start)
            except Exception as exc:  # the broker did not say: read again, check later
                log.warning("%s: could not look up offset %d (%s)", tp, start, exc)
                committed, first = None, None
            if committed is not None and committed > start:
                log.info("%s: the group committed offset %d already; offsets %d..%d were "
                         "handled before this worker held the partition", tp, committed,
                         start, min(end, committed) - 1)
                if tp in self.assignment() and (self._committed_offset[tp] or 0) < committed:
                    self._committed_offset[tp] = committed
                return
            if first is not None and first > start:
                log.warning("%s: the log has no record at offsets %d..%d; committing past "
                            "them", tp, start, first - 1)
                self._gap[tp].addi(start, first)
                return
            log.warning("%s: offsets %d..%d were read past without being handled; reading "
                        "the partition again from %d", tp, start, end - 1, start)
            await self._read_again(tp, start)

        def _look(self, tp: TP, start: int) -> tuple[int | None, int | None]:
            """The group's committed offset on the broker, and the offset of the first record
            at or after `start` (None: none within 10 s)."""
            from streams.kafka import consumer

            servers = ",".join(f"{u.host}:{u.port}" for u in self.app.conf.broker)
            reader = consumer(servers, self.app.conf.id, **{"enable.partition.eof": True})
            try:
                part = TopicPartition(tp.topic, tp.partition)
                offset = reader.committed([part], timeout=10)[0].offset
                committed = offset if offset >= 0 else None
                reader.assign([TopicPartition(tp.topic, tp.partition, start)])
                deadline = time.monotonic() + 10
                while time.monotonic() < deadline:
                    msg = reader.poll(0.5)
                    if msg is None:
                        continue
                    error = msg.error()
                    if error is None:
                        return committed, msg.offset()
                    if error.code() == KafkaError._PARTITION_EOF:
                        break
                return committed, None
            finally:
                reader.close()

        @Service.timer(WATCH_INTERVAL)
        async def _watch_unhandled(self) -> None:
            """Read a partition again when it has records after its committed offset but has
            handled none of them for WATCH_IDLE seconds: they were read past (at a start or a
            rebalance) and, with nothing acknowledged, nothing else would notice."""
            if self.app.rebalancing or not self.flow_active:
                return
            idle: dict[TP, tuple[float, Any]] = self.__dict__.setdefault("_idle", {})
            now = time.monotonic()
            for tp in self._get_active_partitions():
                if tp.topic.endswith("-changelog"):
                    continue  # table state, read by recovery, not handled by an agent
                committed = max(0, self._committed_offset.get(tp) or 0)
                high = self.highwater(tp)
                if (high is None or high <= committed or self._acked.get(tp)
                        or self._rereading(tp)):
                    idle.pop(tp, None)  # nothing to read, or handling goes on
                    continue
                read = self._read_offset.get(tp)
                since, seen = idle.get(tp, (now, read))
                if seen != read:
                    since = now
                idle[tp] = (since, read)
                if now - since >= WATCH_IDLE:
                    log.warning("%s: records from offset %d on were not handled for %.0f s; "
                                "reading the partition again from there", tp, committed,
                                now - since)
                    idle.pop(tp)
                    await self._read_again(tp, committed)

    return Consumer

"""The Faust application: topics, tables and the settings that suit the broker profile."""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections import defaultdict
from collections.abc import Iterable, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

import aiokafka
import faust
from faust.transport.drivers import aiokafka as driver
from faust.types import TP

from streams.settings import Connections, Settings

log = logging.getLogger(__name__)

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
        broker_commit_interval=tuning.flush_interval,
        **profile,
    )
    app.transport.Consumer = _consumer_class(  # type: ignore[misc]
        round(tuning.fetch_wait * 1000), tuning.transactional,
        leave_group=tuning.broker_profile != "tansu")
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


def memory_store_apply(store: Any, partition: int,
                       items: Iterable[tuple[bytes, dict[str, Any] | None]]) -> bool:
    """Write a batch of values (None: delete) straight into Faust's memory store, as its
    apply_changelog_batch would (its dict of values, and each key's partition, by which it
    drops the keys of partitions not assigned after a recovery), without building two
    changelog event objects per write; False for another store (nothing written)."""
    data = getattr(store, "data", None)
    parts = getattr(store, "_key_partition", None)
    if not isinstance(data, dict) or not isinstance(parts, dict):
        return False
    for key, value in items:
        if value is None:
            data.pop(key, None)
            parts.pop(key, None)
        else:
            data[key] = value
            parts[key] = partition
    return True


class ReadOffsets(defaultdict):
    """Faust's last read offset per partition, which never makes it drop a record.

    Faust's fetch loop drops a record whose offset is below the partition's read offset. After
    a seek (to the journal's positions at every assignment) the rest of a batch fetched before
    it still raises the read offset, so the records read again from the seek would be dropped
    unhandled. The loop reads the offset by indexing, so indexing answers None (never drop, as
    for a fresh partition) while `get` tells the offset last read. A record delivered twice
    this way is skipped by the router (`StateTables.seen`)."""

    def __getitem__(self, tp: TP) -> None:
        return None


def time_fetches(fetcher: Any) -> dict[tuple[str, int], float]:
    """Record, per partition, when the latest fetch whose answer aiokafka took was sent.

    aiokafka stamps a partition's fetch when its answer is read, which may be long after the
    broker answered (a process frozen, or starved of CPU, with the answer in its socket): a
    READ appended meanwhile would look seen. The time the fetch was sent is a safe bound."""
    sent_at: dict[tuple[str, int], float] = {}
    answer = fetcher._proc_fetch_request

    async def timed(assignment: Any, node_id: int, request: Any) -> Any:
        sent = time.time()
        states = {}
        for topic, partitions in request.topics:
            for part in partitions:
                tp = aiokafka.TopicPartition(topic, part[0])
                state = assignment.state_value(tp)
                states[tp] = (state, state.timestamp if state is not None else None)
        try:
            return await answer(assignment, node_id, request)
        finally:
            for tp, (state, before) in states.items():
                if state is not None and state.timestamp not in (None, before):
                    sent_at[tp.topic, tp.partition] = sent  # its answer was taken

    fetcher._proc_fetch_request = timed
    return sent_at


def evicted_not_left(coordinator: Any) -> None:
    """Make an aiokafka group coordinator leave its group by missing heartbeats, never by a
    LeaveGroup request (on stop, or after a poll interval without polling).

    For the embedded broker: Tansu keeps a leader that leaves a group *while it forms* (another
    worker has just asked to join) as the group's leader, answers every member's SyncGroup
    with REBALANCE_IN_PROGRESS, and the group never forms again until the broker restarts (its
    coordinator clears the leader on a leave from a formed group and on eviction, not on a
    leave from a forming one). Eviction after the session timeout it handles."""

    async def stay() -> None:
        coordinator.reset_generation()

    coordinator._maybe_leave_group = stay


def _consumer_class(fetch_wait_ms: int, read_committed: bool = False,
                    leave_group: bool = True) -> type[driver.Consumer]:
    """Faust's aiokafka consumer, reading and committing where the state journal says.

    Every correction to Faust's private names lives here (faust-streaming pinned exactly;
    tests/unit/test_consumer.py fails if an upgrade changes what is relied on):
    - the fetch wait instead of its hard-coded 1500 ms, which leaves an idle worker ~0.5 s
      behind on the embedded broker (INFRA.md);
    - read_committed for transactional workers (Faust asks for it only with its own
      exactly-once mode): inputs and journal recovery skip aborted batches;
    - `ReadOffsets`, so a record read again after a seek is delivered;
    - the offsets committed and sought are the journal's durable input positions
      (streams/state.py), never Faust's acknowledgements: what a batch handled and what it
      changed land in one journal record, so state and offsets cannot disagree;
    - without `leave_group` (the embedded broker), a stopping worker does not leave its group:
      it is evicted after the session timeout (`evicted_not_left`);
    - a journal partition's end is learnt by appending this worker's claim (active) or a mark
      (standby): the claim fences the partition's previous owner, and the record's own offset
      is the true end on the embedded broker, whose ListOffsets is short of it;
    - each fetch tells the journal where an input's records begin after its seek landed: Faust
      keeps delivering records fetched before a seek after it, and those ahead of the sought
      offset are dropped (StateTables.ahead)."""

    class ConsumerThread(driver.AIOKafkaConsumerThread):
        fetch_sent: Mapping[tuple[str, int], float] = MappingProxyType({})  # until started

        async def on_start(self) -> None:
            await super().on_start()
            consumer = self._ensure_consumer()
            self.fetch_sent = time_fetches(consumer._fetcher)
            if not leave_group:
                evicted_not_left(consumer._coordinator)

        def _create_worker_consumer(self, transport: Any) -> aiokafka.AIOKafkaConsumer:
            consumer = super()._create_worker_consumer(transport)
            consumer._fetch_max_wait_ms = fetch_wait_ms
            if read_committed:
                consumer._isolation_level = "read_committed"  # read by start()'s Fetcher
            return consumer

    class Consumer(driver.Consumer):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._read_offset = ReadOffsets(lambda: None)

        def _new_consumer_thread(self) -> driver.AIOKafkaConsumerThread:
            return ConsumerThread(self, loop=self.loop, beacon=self.beacon)

        @property
        def _journal(self) -> Any:
            return getattr(self.app, "journal_state", None)

        async def highwaters(self, *partitions: TP) -> Mapping[TP, int]:
            """End offsets; a journal partition's through the claim or mark appended now."""
            state = self._journal
            journal = [tp for tp in partitions if state is not None and tp.topic == state.topic]
            rest = [tp for tp in partitions if tp not in journal]
            ends = dict(await super().highwaters(*rest)) if rest else {}
            if journal:
                actives = {tp.partition for tp in self.app.assignor.assigned_actives()}
                mine = [tp for tp in journal if tp.partition in actives]
                epoch = self.app.consumer_generation_id
                loop = asyncio.get_running_loop()
                async with state._lock:
                    ends.update(await loop.run_in_executor(
                        None, state.claim, mine, [tp for tp in journal if tp not in actives],
                        epoch))
            return ends

        def fetched_at(self, tp: TP) -> float | None:
            """When the latest answered fetch of this input partition was sent (s), if any:
            the broker had then every record appended before."""
            thread: ConsumerThread = self._thread  # type: ignore[assignment]
            return thread.fetch_sent.get((tp.topic, tp.partition))

        async def _wait_next_records(self, timeout: float) -> Any:
            """Records fetched; the journal learns where each input's first fetch after its
            seek begins (records fetched before the seek may still be delivered after it)."""
            records, active = await super()._wait_next_records(timeout)
            state = self._journal
            if state is not None and records:
                for tp, batch in records.items():
                    if batch:
                        state.fetched(tp, batch[0].offset)
            return records, active

        def _new_offset(self, tp: TP) -> int | None:
            """The journal's durable position of the partition, when past the committed one."""
            state = self._journal
            if state is None:  # an app without the journal (the bench's bare agent)
                return super()._new_offset(tp)
            position = state.position(tp)
            acked = self._acked[tp]
            if position is None:
                return None
            if acked:  # Faust's acknowledgements only grow this list; keep what is ahead
                acked[:] = [o for o in acked if o >= position]
                self._acked_index[tp] = set(acked)
            committed = self._committed_offset[tp]
            return position if committed is None or position > committed else None

        async def seek_to_committed(self) -> Mapping[TP, int]:
            """Seek every assigned partition to its journal position (else its committed
            offset): the records handled there are in the state already. Answers the group's
            committed offsets (what Faust believes committed)."""
            offsets = dict(await super().seek_to_committed())
            state = self._journal
            if state is None:
                return offsets
            inputs = [tp for tp in self.assignment() if tp.topic != state.topic]
            for tp in inputs:  # (the journal itself is read by recovery)
                position = state.position(tp)
                if position is None:
                    # nothing of it in the journal: from the group's commit, else from the
                    # start, even if records were fetched (and handled against a state not
                    # yet recovered, then dropped by the claim) since the assignment
                    committed = offsets.get(tp)
                    position = committed if committed is not None and committed >= 0 else 0
                # handled from here on, not before (and so before the seek: a record the seek
                # fetches must not find its input unsought and be dropped)
                state.resume(tp, position)
                await self.seek(tp, position)
                state.sought_landed(tp)
                # answered as still committed where the group had it, so the position is
                # committed even if nothing more is read there (Faust commits only the
                # partitions in its acknowledgement lists)
                self._acked[tp]
            return offsets

    return Consumer

"""Observing a pipeline through Kafka: topic taps, end offsets, the workers' committed offsets.

Tansu under-reports ListOffsets(latest) (INFRA.md), so every end offset here is the one a
Fetch reports: a consumer reads to each partition's end and takes the partition-EOF offset.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Self

from confluent_kafka import OFFSET_BEGINNING, TopicPartition

from connectors.producer import RecordProducer
from schemas import CATALOG, WRITABLE, Codec
from streams.harness.processes import Process
from streams.journal import Fold
from streams.kafka import consumer
from streams.lag import Ends, end_offsets
from streams.lag import committed as group_committed
from streams.settings import Settings
from streams.state import JOURNAL

#: The topics a pushcascade worker's consumer group reads: what outside users write, and the
#: internal topics the workers write to themselves (not the dispatcher's intents, which only
#: the dispatcher reads).
WORKER_INPUTS = tuple(s.name for s in CATALOG
                      if (s.internal or s.name in WRITABLE) and s.writers != "dispatcher")


def group_id(settings: Settings) -> str:
    """The consumer group (= Faust app id) of the workers on these settings."""
    return f"{settings.tuning.topic_prefix}pushcascade"


def _wait_for_topic(reader: Any, full: str, timeout: float) -> list[int]:
    """The partitions of a topic, once it exists (a worker creates its changelogs itself)."""
    deadline = time.monotonic() + timeout
    while full not in reader.list_topics(timeout=10).topics:
        if time.monotonic() > deadline:
            raise AssertionError(f"{full} never appeared (did the worker start?)")
        time.sleep(0.2)
    return sorted(reader.list_topics(full, timeout=10).topics[full].partitions)


class Tap:
    """Reads a topic from the beginning, incrementally, keeping every decoded record.

    `records[i]` was seen at `seen_at[i]` (time.time()) and stamped `created[i]` (its
    CreateTime, ms) by the producer that wrote it."""

    def __init__(self, settings: Settings, name: str, decode: Callable[[Any], Any] | None = None,
                 full: str | None = None, topic_timeout: float = 30.0, fetch_wait_ms: int = 50,
                 explode: Callable[[int, int, bytes | None], list[Any]] | None = None
                 ) -> None:
        self.bootstrap = settings.connections.kafka_bootstrap_servers
        self.name, self.full = name, full or settings.topic(name)
        codec = Codec(settings.connections.schema_registry_url or None)
        decode = decode or (lambda value: codec.decode(value, topic=name))
        #: (partition, offset, value) -> the records one message holds (one, unless `explode`)
        self.explode = explode or (lambda _, __, value: [decode(value)])
        self.records: list[Any] = []
        self.seen_at: list[float] = []
        self.created: list[int] = []
        self.record_partitions: list[int] = []  # the partition each record was read from
        self.next_offsets: dict[int, int] = {}  # partition -> offset after the last record read
        # a short fetch wait: on Tansu an idle consumer otherwise sees new records ~0.5 s late,
        # which would be the instrument's lateness, not the pipeline's
        self.reader = consumer(self.bootstrap, f"tap-{uuid.uuid4().hex}",
                               **{"fetch.wait.max.ms": fetch_wait_ms})
        self.partitions = _wait_for_topic(self.reader, self.full, topic_timeout)
        self.reader.assign([TopicPartition(self.full, p, OFFSET_BEGINNING)
                            for p in self.partitions])

    def poll(self, seconds: float = 0.2) -> list[Any]:
        """Read what arrives within `seconds`; returns the records new in this call."""
        first = len(self.records)
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            # poll() returns with the first record (consume(n, t) would wait for n): seen_at
            # is when a record arrived, not when a batch filled up
            msg = self.reader.poll(min(left, 0.05))
            if msg is None:
                continue
            seen = time.time()
            for m in [msg, *self.reader.consume(num_messages=5000, timeout=0)]:
                partition, offset = m.partition(), m.offset()
                if m.error() or partition is None or offset is None:
                    continue
                for record in self.explode(partition, offset, m.value()):
                    self.records.append(record)
                    self.seen_at.append(seen)
                    self.created.append(m.timestamp()[1])
                    self.record_partitions.append(partition)
                self.next_offsets[partition] = offset + 1
        return self.records[first:]

    def wait_for(self, predicate: Callable[[list[Any]], bool], timeout: float = 30.0,
                 workers: Sequence[Process] = ()) -> list[Any]:
        """Poll until predicate(records) is true; returns the records (fails on timeout).

        Fails at once, with the log, when one of `workers` has exited."""
        end = time.monotonic() + timeout
        while not predicate(self.records):
            for worker in workers:
                worker.check()
            if time.monotonic() > end:
                raise AssertionError(f"{self.name}: condition not met in {timeout}s; "
                                     f"have {len(self.records)} records: {self.records[-5:]}")
            self.poll(0.2)
        return self.records

    def drain(self, timeout: float = 30.0) -> list[Any]:
        """Read up to what the topic holds now (its Fetch-reported end); returns all records."""
        drain([self], timeout)
        return self.records

    def read_to(self, ends: Ends, timeout: float = 30.0) -> list[Any]:
        """Read until every partition of this topic in `ends` is read up to its end offset."""
        mine = {p: end for (topic, p), end in ends.items() if topic == self.full}
        return self.wait_for(lambda _: all(self.position(p) >= end
                                           for p, end in mine.items()), timeout)

    def position(self, partition: int) -> int:
        """The offset after what was read of a partition: after its last record, or after a
        transaction's commit marker that follows it (never handed to a reader)."""
        (tp,) = self.reader.position([TopicPartition(self.full, partition)])
        return max(self.next_offsets.get(partition, 0), tp.offset)

    def where(self, **fields: Any) -> list[Any]:
        """Records whose fields equal the given values."""
        return [r for r in self.records if all(r.get(k) == v for k, v in fields.items())]

    def close(self) -> None:
        """Close the consumer."""
        self.reader.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def drain(taps: Sequence[Tap], timeout: float = 30.0) -> None:
    """Read every tap up to what its topic holds now (one look at the ends for all of them)."""
    if taps:
        ends = end_offsets(taps[0].bootstrap, [tap.full for tap in taps], timeout)
        for tap in taps:
            tap.read_to(ends, timeout)


def producer_for(settings: Settings) -> RecordProducer:
    """The producer SDK on these settings' broker, topics and schema registry."""
    return RecordProducer(settings.connections.kafka_bootstrap_servers,
                          topic_prefix=settings.tuning.topic_prefix,
                          schema_registry_url=settings.connections.schema_registry_url)


def journal_topic(settings: Settings) -> str:
    """The workers' state journal (streams/state.py), which a worker creates itself."""
    return f"{settings.tuning.topic_prefix}pushcascade-{JOURNAL}-changelog"


def changelog_tap(settings: Settings, table: str, timeout: float = 30.0) -> Tap:
    """A tap on one table's values, written in order, as the workers' state journal holds
    them: whole batches that were not fenced, as recovery reads them (None for a delete)."""
    folds: dict[int, Fold] = {}

    def values(partition: int, offset: int, value: bytes | None) -> list[Any]:
        batch = folds.setdefault(partition, Fold()).feed(value, offset)
        return [] if batch is None else [v for t, _, v in batch.writes if t == table]

    return Tap(settings, table, full=journal_topic(settings), topic_timeout=timeout,
               explode=values)


def committed(settings: Settings, tps: Iterable[tuple[str, int]]) -> Ends:
    """What the workers' consumer group has committed on these partitions (0 for nothing)."""
    return group_committed(settings.connections.kafka_bootstrap_servers, group_id(settings), tps)


def wait_committed(settings: Settings, ends: Ends, timeout: float = 60.0,
                   workers: Sequence[Process] = ()) -> float:
    """Wait until the workers' group has committed every offset in `ends`; seconds it took.

    Faust flushes its producers (and the outbox) before it commits, so every output of those
    inputs is in Kafka by then."""
    start = time.monotonic()
    wanted = {tp: end for tp, end in ends.items() if end > 0}
    while True:
        for worker in workers:
            worker.check()
        have = committed(settings, wanted) if wanted else {}
        behind = sum(max(0, end - have[tp]) for tp, end in wanted.items())
        if not behind:
            return time.monotonic() - start
        if time.monotonic() - start > timeout:
            lagging = ", ".join(f"{tp[0]}[{tp[1]}] at {have[tp]} of {end}"
                                for tp, end in sorted(wanted.items()) if have[tp] < end)
            tails = "".join(f"\n{w.name}:\n{w.tail()}" for w in workers)
            raise TimeoutError(f"{behind} records not committed within {timeout}s "
                               f"({lagging}){tails}")
        time.sleep(0.25)


def wait_idle(settings: Settings, timeout: float = 60.0, workers: Sequence[Process] = ()) -> None:
    """Wait until the workers have processed and committed everything in their input topics,
    including what they wrote to their own internal topics meanwhile."""
    topics = [settings.topic(name) for name in WORKER_INPUTS]
    bootstrap = settings.connections.kafka_bootstrap_servers
    deadline = time.monotonic() + timeout
    ends = end_offsets(bootstrap, topics, timeout)
    while True:
        wait_committed(settings, ends, max(1.0, deadline - time.monotonic()), workers)
        now = end_offsets(bootstrap, topics, max(1.0, deadline - time.monotonic()))
        if now == ends:
            return
        ends = now


# -- table state: every read of a changelog value is here (the keys will change) ------------


def latest(tap: Tap, field: str) -> dict[str, Any]:
    """The newest value of each entity in a changelog tap, by the value's `field`."""
    return {r[field]: r for r in tap.records if r}


def table_state(settings: Settings, table: str, field: str,
                timeout: float = 30.0) -> dict[str, Any]:
    """The newest value of each entity of a table, by the value's `field`, as its changelog
    holds it now (after wait_idle: as the workers left it)."""
    with changelog_tap(settings, table, timeout) as tap:
        tap.drain(timeout)
        return latest(tap, field)


def registered(states: Mapping[str, Mapping[str, Any]],
               expected: Mapping[str, tuple[int, int]]) -> bool:
    """Whether each account's state shows its expected number of devices and of addresses
    (an account expecting neither is not waited for: it may have no state at all)."""
    for account, want in expected.items():
        state = states.get(account)
        if want != (0, 0) and (state is None or (len(state["devices"]),
                                                 len(state["addresses"])) != want):
            return False
    return True


def wait_accounts(settings: Settings, accounts: Iterable[str], timeout: float = 60.0,
                  workers: Sequence[Process] = (),
                  counts: Mapping[str, tuple[int, int]] | None = None) -> None:
    """Wait until the accounts table shows each account with a device and an address, or,
    with `counts` ((devices, addresses) per account), with that many of each (registered)."""
    wanted = set(accounts)

    def ready(_: list[Any]) -> bool:
        states = latest(tap, "account_id")
        if counts is not None:
            return registered(states, {a: counts[a] for a in wanted})
        return {a for a, state in states.items()
                if state["devices"] and state["addresses"]} >= wanted

    with changelog_tap(settings, "accounts", timeout) as tap:
        tap.wait_for(ready, timeout, workers)


def wait_devices(settings: Settings, device_ids: Iterable[str], timeout: float = 60.0,
                 workers: Sequence[Process] = ()) -> None:
    """Wait until the devices table holds every one of these devices."""
    wanted = set(device_ids)
    with changelog_tap(settings, "devices", timeout) as tap:
        tap.wait_for(lambda _: set(latest(tap, "device_id")) >= wanted, timeout, workers)

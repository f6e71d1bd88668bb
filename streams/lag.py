"""Consumer-group lag of the pipeline: what each group committed against each partition's end.

On the embedded broker ListOffsets can report less than a partition's end (INFRA.md), so the
end is read the way a Fetch reports it: from what ListOffsets says, forward to end-of-partition.
On Kafka both agree."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass

from confluent_kafka import KafkaError, TopicPartition

from streams.kafka import consumer
from streams.settings import Settings

Ends = dict[tuple[str, int], int]  # (full topic, partition) -> offset after its last record

#: The sink's topics: every event stream (kept in step with connectors/clickhouse/tables.py,
#: which a test checks).
SINK_TOPICS = ("push.requests", "push.sends", "push.acks", "push.results", "push.escalations",
               "device.route-changes", "campaign.decisions", "account.lifecycle",
               "push.outcomes", "device.registry", "account.settings", "push.dlq")


@dataclass(frozen=True)
class Group:
    """A consumer group of the pipeline: its short name, group id suffix and topics."""

    name: str
    suffix: str
    topics: tuple[str, ...]

    def group_id(self, settings: Settings) -> str:
        """The group id under these settings' topic prefix."""
        return settings.tuning.topic_prefix + self.suffix


def groups() -> tuple[Group, ...]:
    """The stream processors (one Faust app), the dispatcher and the sink."""
    from streams.campaigns import TOPIC as CAMPAIGN_EVENTS
    from streams.router import INPUTS

    return (Group("workers", "pushcascade", (*INPUTS, CAMPAIGN_EVENTS)),
            Group("dispatcher", "pushcascade-dispatch", ("push.sends",)),
            Group("sink", "pushcascade.sink", SINK_TOPICS))


def end_offsets(bootstrap: str, topics: Iterable[str], timeout: float = 30.0) -> Ends:
    """The end of every partition of these (full-named) topics, as a Fetch reports it now."""
    reader = consumer(bootstrap, f"ends-{uuid.uuid4().hex}",
                      **{"enable.partition.eof": True, "fetch.wait.max.ms": 50})
    try:
        meta = reader.list_topics(timeout=10).topics
        # ListOffsets may under-report the end on the embedded broker, never over-report it:
        # read forward from what it says (not from the beginning) to the end a Fetch reports
        tps = [TopicPartition(t, p, max(0, reader.get_watermark_offsets(
                   TopicPartition(t, p), timeout=10)[1] - 1))
               for t in topics if t in meta for p in meta[t].partitions]
        reader.assign(tps)
        ends: Ends = {}
        deadline = time.monotonic() + timeout
        while len(ends) < len(tps):
            if time.monotonic() > deadline:
                raise TimeoutError(f"no end offsets for {len(tps) - len(ends)} partitions "
                                   f"within {timeout}s")
            for msg in reader.consume(num_messages=5000, timeout=0.2):
                err, topic, partition = msg.error(), msg.topic(), msg.partition()
                if (err is not None and err.code() == KafkaError._PARTITION_EOF
                        and topic is not None and partition is not None):
                    ends.setdefault((topic, partition), msg.offset() or 0)
        return ends
    finally:
        reader.close()


def committed(bootstrap: str, group_id: str, tps: Iterable[tuple[str, int]]) -> Ends:
    """What a consumer group has committed on these partitions (0 for nothing)."""
    reader = consumer(bootstrap, group_id)
    try:
        got = reader.committed([TopicPartition(t, p) for t, p in tps], timeout=10)
        return {(tp.topic, tp.partition): max(tp.offset, 0) for tp in got}
    finally:
        reader.close()


@dataclass(frozen=True)
class Lag:
    """One partition's lag for one group."""

    group: str
    group_id: str
    topic: str
    partition: int
    committed: int
    end: int

    @property
    def lag(self) -> int:
        """Records after the committed offset."""
        return max(0, self.end - self.committed)


def lag(settings: Settings, only: Iterable[str] = ()) -> list[Lag]:
    """Every pipeline group's lag per topic and partition (`only`: these group names)."""
    bootstrap = settings.connections.kafka_bootstrap_servers
    chosen = [g for g in groups() if not only or g.name in set(only)]
    ends = end_offsets(bootstrap, {settings.topic(t) for g in chosen for t in g.topics})
    rows: list[Lag] = []
    for g in chosen:
        tps = sorted(tp for tp in ends if tp[0] in {settings.topic(t) for t in g.topics})
        have = committed(bootstrap, g.group_id(settings), tps)
        rows += [Lag(g.name, g.group_id(settings), t[len(settings.tuning.topic_prefix):], p,
                     have[(t, p)], ends[(t, p)]) for t, p in tps]
    return rows

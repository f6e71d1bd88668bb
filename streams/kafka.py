"""confluent-kafka client configuration and the account partitioner, shared by every process."""

from __future__ import annotations

from typing import Any

from confluent_kafka import Consumer, Producer

# Tansu answers JoinGroup after session.timeout.ms / 2: keep it short (INFRA.md).
CONSUMER_DEFAULTS: dict[str, Any] = {
    "session.timeout.ms": 6000,
    "heartbeat.interval.ms": 1000,
    "partition.assignment.strategy": "range",
    "enable.auto.commit": False,
    "auto.offset.reset": "earliest",
}

PRODUCER_DEFAULTS: dict[str, Any] = {
    "partitioner": "murmur2_random",
    "enable.idempotence": True,
    "linger.ms": 5,
}


def producer(bootstrap: str, **overrides: Any) -> Producer:
    """An idempotent producer with the murmur2 partitioner (the one Java and Faust use)."""
    return Producer({"bootstrap.servers": bootstrap, **PRODUCER_DEFAULTS, **overrides})


def consumer(bootstrap: str, group_id: str, **overrides: Any) -> Consumer:
    """A manually committing consumer with the short group timeouts this broker needs."""
    return Consumer(
        {"bootstrap.servers": bootstrap, "group.id": group_id, **CONSUMER_DEFAULTS, **overrides}
    )


def murmur2(data: bytes) -> int:
    """Kafka's murmur2 hash (the Java client's), as a signed 32-bit int."""
    length = len(data)
    seed, m, r = 0x9747B28C, 0x5BD1E995, 24
    h = (seed ^ length) & 0xFFFFFFFF
    end = length & ~3
    for i in range(0, end, 4):
        k = int.from_bytes(data[i : i + 4], "little")
        k = (k * m) & 0xFFFFFFFF
        k ^= k >> r
        k = (k * m) & 0xFFFFFFFF
        h = ((h * m) & 0xFFFFFFFF) ^ k
    rest = length & 3
    if rest == 3:
        h ^= data[end + 2] << 16
    if rest >= 2:
        h ^= data[end + 1] << 8
    if rest >= 1:
        h ^= data[end]
        h = (h * m) & 0xFFFFFFFF
    h ^= h >> 13
    h = (h * m) & 0xFFFFFFFF
    h ^= h >> 15
    return h - (1 << 32) if h & 0x80000000 else h


def key_partition(key: str, partitions: int) -> int:
    """The partition the Java/murmur2 partitioner puts this key on; the owner of its state."""
    return (murmur2(key.encode()) & 0x7FFFFFFF) % partitions

"""confluent-kafka client configuration shared by every process of the stream processors."""

from __future__ import annotations

from typing import Any

from confluent_kafka import Consumer, Producer

from schemas import PRODUCER_CONFIG

# Tansu answers JoinGroup after session.timeout.ms / 2: keep it short (INFRA.md).
CONSUMER_DEFAULTS: dict[str, Any] = {
    "session.timeout.ms": 6000,
    "heartbeat.interval.ms": 1000,
    "partition.assignment.strategy": "range",
    "enable.auto.commit": False,
    "auto.offset.reset": "earliest",
}

PRODUCER_DEFAULTS: dict[str, Any] = {**PRODUCER_CONFIG, "linger.ms": 5}


def producer(bootstrap: str, **overrides: Any) -> Producer:
    """An idempotent producer with the murmur2 partitioner (the one Java and Faust use)."""
    return Producer({"bootstrap.servers": bootstrap, **PRODUCER_DEFAULTS, **overrides})


def consumer(bootstrap: str, group_id: str, **overrides: Any) -> Consumer:
    """A manually committing consumer with the short group timeouts this broker needs."""
    return Consumer(
        {"bootstrap.servers": bootstrap, "group.id": group_id, **CONSUMER_DEFAULTS, **overrides}
    )

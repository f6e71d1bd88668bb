"""confluent-kafka client configuration shared by every process of the stream processors."""

from __future__ import annotations

import logging
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from schemas import PRODUCER_CONFIG
from streams.settings import Unreachable, get_settings

#: librdkafka's own log lines (connection refused, every retry) go here, silenced by default.
LIBRDKAFKA_LOG = logging.getLogger("librdkafka")
LIBRDKAFKA_LOG.setLevel(logging.CRITICAL)

# Tansu answers JoinGroup after session.timeout.ms / 2: keep it short (INFRA.md).
CONSUMER_DEFAULTS: dict[str, Any] = {
    "session.timeout.ms": 6000,
    "heartbeat.interval.ms": 1000,
    "partition.assignment.strategy": "range",
    "enable.auto.commit": False,
    "auto.offset.reset": "earliest",
}

PRODUCER_DEFAULTS: dict[str, Any] = {**PRODUCER_CONFIG, "linger.ms": 5}


def client_config(bootstrap: str) -> dict[str, Any]:
    """What every client needs: the servers and the security settings of the environment
    (KAFKA_SECURITY_PROTOCOL and its companions; nothing for PLAINTEXT)."""
    return {"bootstrap.servers": bootstrap, **get_settings().connections.kafka_security()}


#: Errors after which a producer writes nothing more: the broker fenced its epoch (Tansu does,
#: once a freeze outlasted the producer's message timeout), or librdkafka failed it.
DEAD_PRODUCER = frozenset({KafkaError.PRODUCER_FENCED, KafkaError.INVALID_PRODUCER_EPOCH,
                           KafkaError._FENCED, KafkaError._FATAL})


def dead_producer(err: KafkaError) -> bool:
    """Whether a delivery error means its producer must be replaced (DEAD_PRODUCER)."""
    return err.code() in DEAD_PRODUCER or err.fatal()


def producer(bootstrap: str, **overrides: Any) -> Producer:
    """An idempotent producer with the murmur2 partitioner (the one Java and Faust use)."""
    return Producer({**client_config(bootstrap), **PRODUCER_DEFAULTS, **overrides})


def consumer(bootstrap: str, group_id: str, **overrides: Any) -> Consumer:
    """A manually committing consumer with the short group timeouts this broker needs."""
    return Consumer(
        {**client_config(bootstrap), "group.id": group_id, **CONSUMER_DEFAULTS, **overrides}
    )


def commit_as(member: str | None, client: Consumer, offsets: list[TopicPartition]) -> bool:
    """Commit `offsets` synchronously: True when the group took them from `member` (the id the
    client had when its partitions were assigned), False when the client has since become
    another member. A coordinator that replaced `member` refuses (KafkaException); but once
    librdkafka has seen the loss it commits as a new member or as none, and Tansu accepts that
    (measured: a member thawed 3 s after its successor took over was accepted under a new id)."""
    client.commit(offsets=offsets, asynchronous=False)
    return member is not None and client.memberid() == member


def admin(bootstrap: str, **overrides: Any) -> AdminClient:
    """An AdminClient for the cluster."""
    return AdminClient({**client_config(bootstrap), **overrides})


def check_kafka(bootstrap: str, timeout: float = 5.0) -> None:
    """Raise Unreachable, in one line, when no broker of `bootstrap` answers within timeout."""
    client = admin(bootstrap, logger=LIBRDKAFKA_LOG)
    try:
        client.list_topics(timeout=timeout)
    except KafkaException as exc:
        reason = exc.args[0].str() if exc.args and hasattr(exc.args[0], "str") else str(exc)
        raise Unreachable(f"Kafka at {bootstrap} did not answer within {timeout:g}s "
                          f"({reason}); check KAFKA_BOOTSTRAP_SERVERS") from None

"""The producer SDK: validate, encode and produce records of the contract, keyed as it says."""

from __future__ import annotations

import os
import time
from typing import Any, Self

from confluent_kafka import KafkaError, Message, Producer

from schemas import PRODUCER_CONFIG, WRITABLE, Codec, check_caps, spec


class DeliveryError(RuntimeError):
    """Some records were not acknowledged by the broker."""


class RecordProducer:
    """Produces contract records to the topics outside users write (push.requests, ...)."""

    def __init__(self, bootstrap: str | None = None, *, topic_prefix: str | None = None,
                 codec: Codec | None = None, schema_registry_url: str | None = None,
                 **config: Any) -> None:
        """Connect to `bootstrap` (else $KAFKA_BOOTSTRAP_SERVERS); extra librdkafka `config`.

        `topic_prefix` defaults to $PUSHCASCADE_TOPIC_PREFIX; without `codec`, schema ids come
        from `schema_registry_url` (else $SCHEMA_REGISTRY_URL), or the pinned ones when empty.
        """
        servers = bootstrap or os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "")
        if not servers:
            raise ValueError("no Kafka: pass bootstrap= or set KAFKA_BOOTSTRAP_SERVERS")
        if topic_prefix is None:
            topic_prefix = os.environ.get("PUSHCASCADE_TOPIC_PREFIX", "")
        if codec is None:
            if schema_registry_url is None:
                schema_registry_url = os.environ.get("SCHEMA_REGISTRY_URL", "")
            codec = Codec(schema_registry_url or None)
        self.topic_prefix, self.codec = topic_prefix, codec
        self._producer = Producer({"bootstrap.servers": servers, **PRODUCER_CONFIG,
                                   "linger.ms": 5, **config})
        self.delivered = 0
        self.failures: list[str] = []

    def validate(self, topic: str, record: dict[str, Any],
                 now: float | None = None) -> tuple[str, dict[str, Any]]:
        """Check a record for a writable topic and its caps (schemas/validation.py) at `now`
        (epoch seconds, default the clock); return (key, normalized record) or raise
        RecordError naming the field."""
        if topic not in WRITABLE:
            raise ValueError(f"topic {topic!r} is not written by producers; use one of "
                             f"{', '.join(WRITABLE)}")
        name = spec(topic).record
        normalized = self.codec.validate(name, record)
        check_caps(name, normalized, time.time() if now is None else now)
        return normalized[WRITABLE[topic]], normalized

    def send(self, topic: str, record: dict[str, Any]) -> None:
        """Validate and produce one record; delivery is confirmed by flush()."""
        key, normalized = self.validate(topic, record)
        value = self.codec.encode(spec(topic).record, normalized)
        self._producer.produce(self.topic_prefix + topic, value=value, key=key.encode(),
                               on_delivery=self._on_delivery)
        self._producer.poll(0)

    def _on_delivery(self, err: KafkaError | None, msg: Message) -> None:
        """Delivery report: count successes, remember failures."""
        if err is None:
            self.delivered += 1
        else:
            self.failures.append(f"{msg.topic()}: {err.str()}")

    def flush(self, timeout: float = 30.0) -> int:
        """Wait for every record to be acknowledged; return how many were; raise on failures."""
        left = self._producer.flush(timeout)
        if left or self.failures:
            raise DeliveryError(f"{left} records unconfirmed, {len(self.failures)} failed: "
                                f"{'; '.join(self.failures[:5])}")
        return self.delivered

    def close(self) -> None:
        """Flush what is pending."""
        self.flush()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        if exc[0] is None:
            self.close()


class PushProducer(RecordProducer):
    """Publishes push requests to push.requests, keyed by account_id."""

    def push(self, request: dict[str, Any]) -> None:
        """Validate and produce one PushRequest."""
        self.send("push.requests", request)

"""The outbox: a worker's output records through confluent-kafka, delivered before commits."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from confluent_kafka import KafkaError, Message

from streams.kafka import producer
from streams.metrics import Flow

Delivered = Callable[[KafkaError | None, Message], None]
POLL_EVERY = 128


class OutboxError(RuntimeError):
    """Records could not be delivered; offsets must not be committed."""


class Outbox:
    """Produces records cheaply (~1 µs each, batched by librdkafka); `flush` confirms them.

    At-least-once: the state tables flush the outbox inside Faust's pre-commit producer flush
    (streams.state), so a failed delivery fails the commit and the events are processed again;
    their outputs carry deterministic ids."""

    def __init__(self, bootstrap: str, flow: Flow | None = None, **config: Any) -> None:
        self.producer = producer(bootstrap, **{"linger.ms": 2, **config})
        self.flow = flow
        self._failures: list[str] = []
        self._queued = 0

    def produce(self, topic: str, key: bytes, value: bytes | None, partition: int | None = None,
                headers: list[tuple[str, bytes]] | None = None,
                on_delivery: Delivered | None = None) -> None:
        """Queue one record (to the key's murmur2 partition unless a partition is given)."""
        kwargs: dict[str, Any] = {"headers": headers} if headers else {}
        if partition is not None:
            kwargs["partition"] = partition
        while True:
            try:
                self.producer.produce(topic, value=value, key=key,
                                      on_delivery=on_delivery or self._delivered, **kwargs)
                break
            except BufferError:  # local queue full: let librdkafka drain it
                self.producer.poll(0.05)
        self._queued += 1
        if self.flow is not None:
            self.flow.sent(topic)
        if self._queued % POLL_EVERY == 0:  # serve delivery reports now and then (flush does too)
            self.producer.poll(0)

    def _delivered(self, err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            self._failures.append(f"{msg.topic()}: {err.str()}")

    def flush(self, timeout: float = 30.0) -> None:
        """Block until every queued record is acknowledged; raise OutboxError otherwise."""
        left = self.producer.flush(timeout)
        failures, self._failures = self._failures, []
        if left or failures:
            raise OutboxError(f"{left} records unconfirmed, {len(failures)} failed: "
                              f"{'; '.join(failures[:3])}")

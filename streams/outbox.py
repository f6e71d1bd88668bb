"""The outbox: a worker's output records through confluent-kafka, delivered before commits."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message

from streams.kafka import producer
from streams.metrics import Flow

Delivered = Callable[[KafkaError | None, Message], None]
POLL_EVERY = 128
#: Seconds a transaction's commit (or abort) may take.
TRANSACTION_TIMEOUT = 30.0


class OutboxError(RuntimeError):
    """Records could not be delivered; offsets must not be committed."""


class ProducerFenced(OutboxError):
    """A newer producer with this transactional.id exists: this process must stop."""


def _fatal(exc: BaseException) -> str | None:
    """The reason when a producer error leaves the producer unusable (fenced), else None."""
    error = exc.args[0] if isinstance(exc, KafkaException) and exc.args else None
    return error.str() if isinstance(error, KafkaError) and error.fatal() else None


class Outbox:
    """Produces records cheaply (~1 µs each, batched by librdkafka); `flush` confirms them.

    At-least-once: the state tables flush the outbox inside Faust's pre-commit producer flush
    (streams.state), so a failed delivery fails the commit and the events are processed again;
    their outputs carry deterministic ids."""

    def __init__(self, bootstrap: str, flow: Flow | None = None,
                 transactional_id: str | None = None, **config: Any) -> None:
        if transactional_id:
            # an aborted transaction's records stay invisible; an open one blocks read_committed
            # readers of its partitions until it ends, so a dead worker's must end soon
            config = {"transactional.id": transactional_id, "transaction.timeout.ms": 15000,
                      **config}
        self.producer = producer(bootstrap, **{"linger.ms": 2, **config})
        self.transactional = bool(transactional_id)
        if self.transactional:
            self.producer.init_transactions(TRANSACTION_TIMEOUT)  # fences an older self
        self.flow = flow
        self._failures: list[str] = []
        self._queued = 0

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """Records produced inside become visible to read_committed readers together when it
        ends, or never (aborted on any error: OutboxError; ProducerFenced when a newer
        producer took the transactional.id). Without a transactional.id it only runs them."""
        if not self.transactional:
            yield
            return
        p = self.producer
        try:
            p.begin_transaction()
        except KafkaException as exc:
            fatal = _fatal(exc)
            if fatal is not None:
                raise ProducerFenced(f"transaction not begun: {fatal}") from None
            raise OutboxError(f"transaction not begun: {exc.args[0]}") from None
        try:
            yield
            p.commit_transaction(TRANSACTION_TIMEOUT)
        except BaseException as exc:
            fatal = _fatal(exc)
            if fatal is None:
                try:
                    p.abort_transaction(TRANSACTION_TIMEOUT)
                except KafkaException as failed:
                    fatal = _fatal(failed) or f"abort failed: {failed}"
            if fatal is not None:
                raise ProducerFenced(f"transaction failed for good: {fatal}") from None
            if isinstance(exc, KafkaException):
                raise OutboxError(f"transaction aborted: {exc.args[0]}") from None
            raise
        finally:
            self._failures = []  # a transaction's failed deliveries fail its commit

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

"""Reading topics outside a consumer group: to their end, or following them as they grow."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, Message, TopicPartition

log = logging.getLogger(__name__)


def all_partitions(consumer: Consumer, topics: Iterable[str],
                   timeout: float = 30.0) -> list[TopicPartition]:
    """Every partition of these topics, from the beginning (the topics must exist)."""
    meta = consumer.list_topics(timeout=timeout)
    found = []
    for topic in topics:
        info = meta.topics.get(topic)
        if info is None or info.error is not None:
            raise KafkaException(f"topic {topic} not found: run `pushcascade topics create`")
        found += [TopicPartition(topic, p, OFFSET_BEGINNING) for p in sorted(info.partitions)]
    return found


def caught_up(consumer: Consumer, partitions: list[TopicPartition]) -> bool:
    """Whether every partition's position reached the high watermark its last fetch reported
    (the embedded broker's ListOffsets is short of the end: INFRA.md, so fetch's is used)."""
    positions = {(tp.topic, tp.partition): tp.offset for tp in consumer.position(partitions)}
    for tp in partitions:
        _, high = consumer.get_watermark_offsets(tp, cached=True)
        if high < 0:
            return False  # no fetch answered yet
        position = positions[(tp.topic, tp.partition)]
        if high > 0 and position < high:
            return False
    return True


def read_to_end(consumer: Consumer, partitions: list[TopicPartition],
                handle: Callable[[Message], None], timeout: float = 120.0) -> int:
    """Assign these partitions and hand every record to `handle` until each is at its end;
    returns how many records were read. TimeoutError when the end is not reached in time."""
    consumer.assign(partitions)
    count, deadline = 0, time.monotonic() + timeout
    while True:
        batch = consumer.consume(500, 0.2)
        for msg in batch:
            if msg.error() is None:
                handle(msg)
                count += 1
        if not batch and caught_up(consumer, partitions):
            return count
        if time.monotonic() > deadline:
            raise TimeoutError(f"not at the end of {len(partitions)} partitions in {timeout}s")


class Follower:
    """Reads topics to their end in a background thread, then keeps following them, handing
    every record to `apply`; `ready` is set once the end was reached."""

    def __init__(self, bootstrap: str, group: str, topics: list[str],
                 apply: Callable[[Message], None], name: str) -> None:
        self.bootstrap, self.group, self.topics = bootstrap, group, topics
        self.apply, self.name = apply, name
        self.ready = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._follow, name=name, daemon=True)

    def start(self) -> Follower:
        """Start following."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop following."""
        self._stop.set()
        self._thread.join(timeout=5)

    def _follow(self) -> None:
        from streams.kafka import consumer

        c = consumer(self.bootstrap, self.group, **{"enable.partition.eof": False})
        try:
            read_to_end(c, all_partitions(c, self.topics), self.apply, timeout=600)
            self.ready.set()
            log.info("%s: caught up", self.name)
            while not self._stop.is_set():
                for msg in c.consume(500, 0.5):
                    if msg.error() is None:
                        self.apply(msg)
        except Exception:
            log.exception("%s stopped", self.name)
            raise
        finally:
            c.close()

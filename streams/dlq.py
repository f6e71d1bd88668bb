"""Replaying dead letters: each one's original key and bytes back to the topic it came from."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import Message

from schemas import BY_NAME, Codec, RecordError, SchemaError, check_caps
from streams.follow import all_partitions, read_to_end
from streams.kafka import consumer, producer
from streams.settings import Settings

DLQ = "push.dlq"


@dataclass
class Replay:
    """What a replay found: replayed (or, in a dry run, replayable) letters per source topic
    and reason, and those it could not replay and why."""

    replayable: Counter[tuple[str, str]] = field(default_factory=Counter)
    skipped: Counter[str] = field(default_factory=Counter)


def replay(settings: Settings, topic: str | None = None, since_ms: int = 0,
           dry_run: bool = True, codec: Codec | None = None) -> Replay:
    """Read push.dlq to its end; send each letter of `topic` (unprefixed; None: every topic)
    failed at or after `since_ms` back to its source topic, unless dry_run."""
    codec = codec or Codec(settings.connections.schema_registry_url or None)
    bootstrap, prefix = settings.connections.kafka_bootstrap_servers, settings.tuning.topic_prefix
    result = Replay()
    out = None if dry_run else producer(bootstrap)

    def letter(msg: Message) -> None:
        try:
            d = codec.decode(msg.value(), topic=settings.topic(DLQ), expected="DeadLetter")
        except SchemaError:
            result.skipped["undecodable dead letter"] += 1
            return
        source = str(d["topic"])
        name = source[len(prefix):] if source.startswith(prefix) else source
        if (topic is not None and name != topic) or d["failed_at"] < since_ms:
            return
        if d["omitted_value_bytes"] is not None:
            result.skipped["value left out (the letter would be over the message size limit)"] += 1
            return
        if d["value"] is None:
            result.skipped["value dropped (personal data)"] += 1
            return
        if _over_cap(codec, d["value"], name):
            result.skipped["over a cap (schemas/validation.py): refused again"] += 1
            return
        result.replayable[(name, _reason(d["error"]))] += 1
        if out is not None:
            out.produce(source, key=d["key"], value=d["value"])
            out.poll(0)

    reader: Any = consumer(bootstrap, f"{prefix}pushcascade-dlq-replay",
                           **{"enable.partition.eof": False})
    try:
        read_to_end(reader, all_partitions(reader, [settings.topic(DLQ)]), letter)
    finally:
        reader.close()
    if out is not None and out.flush(30) > 0:
        raise RuntimeError("replayed records not acknowledged by the broker within 30s")
    return result


def _reason(error: str) -> str:
    """The kind of a dead letter's error, without the topic in front or detail in brackets."""
    return error.split(": ", 1)[-1].split(" (", 1)[0][:80]


def _over_cap(codec: Codec, value: bytes, topic: str) -> bool:
    """Whether a letter's value decodes to a record over a cap (the router refuses it again)."""
    try:
        record_name, record = codec.decode_named(value, topic=topic)
    except SchemaError:
        return False
    if topic in BY_NAME and BY_NAME[topic].record != record_name:
        return False
    try:
        check_caps(record_name, record, time.time())
    except RecordError:
        return True
    return False

"""`pushcascade tail`: decode any topic to JSON lines, for users debugging and for operators."""

from __future__ import annotations

import base64
import json
import time
import uuid

import click
from confluent_kafka import OFFSET_BEGINNING, OFFSET_END, TopicPartition

from schemas import BY_NAME, Codec, SchemaError
from streams.cli import cli
from streams.kafka import check_kafka, consumer
from streams.settings import get_settings


def to_json(value: object) -> str:
    """One JSON line; bytes become base64 strings."""
    return json.dumps(value, separators=(",", ":"), sort_keys=False,
                      default=lambda b: base64.b64encode(b).decode())


@cli.command()
@click.argument("topic", type=click.Choice(sorted(BY_NAME)))
@click.option("--from-beginning", is_flag=True, help="start at the oldest record")
@click.option("--max", "max_records", type=int, default=None, help="stop after N records")
@click.option("--timeout", type=float, default=None, help="stop after S seconds with no record")
@click.option("--meta", is_flag=True, help="wrap each value with partition, offset and key")
@click.option("--bootstrap", envvar="KAFKA_BOOTSTRAP_SERVERS", required=True,
              help="Kafka bootstrap servers (default: $KAFKA_BOOTSTRAP_SERVERS)")
def tail(topic: str, from_beginning: bool, max_records: int | None, timeout: float | None,
         meta: bool, bootstrap: str) -> None:
    """Print TOPIC's records as JSON lines; undecodable ones are reported on stderr."""
    settings = get_settings()
    check_kafka(bootstrap)
    codec = Codec(settings.connections.schema_registry_url or None)
    name = settings.topic(topic)
    reader = consumer(bootstrap, f"pushcascade-tail-{uuid.uuid4().hex[:8]}")
    partitions = reader.list_topics(name, timeout=10).topics[name].partitions
    start = OFFSET_BEGINNING if from_beginning else OFFSET_END
    reader.assign([TopicPartition(name, p, start) for p in partitions])
    seen, last = 0, time.monotonic()
    try:
        while max_records is None or seen < max_records:
            if timeout is not None and time.monotonic() - last > timeout:
                break
            msg = reader.poll(0.2)
            if msg is None or msg.error():
                continue
            last = time.monotonic()
            seen += 1
            try:
                value = codec.decode(msg.value(), topic=topic)
            except SchemaError as exc:
                click.echo(f"offset {msg.partition()}:{msg.offset()}: {exc}", err=True)
                continue
            if meta:
                raw_key = msg.key()
                key = raw_key.decode(errors="replace") if raw_key else None
                value = {"partition": msg.partition(), "offset": msg.offset(), "key": key,
                         "value": value}
            click.echo(to_json(value))
    finally:
        reader.close()

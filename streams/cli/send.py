"""`pushcascade send`: validate JSON lines and produce them to a topic of the contract."""

from __future__ import annotations

import json
import sys
from typing import IO

import click

from connectors.producer import RecordProducer
from schemas import WRITABLE, RecordError
from streams.cli import cli
from streams.kafka import check_kafka
from streams.settings import get_settings


def read_records(source: IO[str]) -> list[dict]:
    """Parse JSON lines (blank lines skipped); a bad line raises ClickException naming it."""
    records = []
    for number, line in enumerate(source, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise click.ClickException(f"line {number}: not JSON: {exc}") from None
        if not isinstance(record, dict):
            raise click.ClickException(f"line {number}: expected a JSON object")
        records.append(record)
    return records


@cli.command()
@click.option("--topic", "topic", default="push.requests", show_default=True,
              type=click.Choice(sorted(WRITABLE)), help="the topic to write")
@click.option("--bootstrap", envvar="KAFKA_BOOTSTRAP_SERVERS", required=True,
              help="Kafka bootstrap servers (default: $KAFKA_BOOTSTRAP_SERVERS)")
@click.argument("source", type=click.File("r"), default="-")
def send(topic: str, bootstrap: str, source: IO[str]) -> None:
    """Produce JSON-lines records from SOURCE (a file, or - for stdin).

    Every line is validated before any is produced: one invalid line and nothing is sent.
    """
    records = read_records(source)
    settings = get_settings()
    check_kafka(bootstrap)
    with RecordProducer(bootstrap, topic_prefix=settings.tuning.topic_prefix,
                        schema_registry_url=settings.connections.schema_registry_url) as producer:
        for number, record in enumerate(records, 1):
            try:
                producer.validate(topic, record)
            except RecordError as exc:
                click.echo(f"error: line {number}: {exc}", err=True)
                sys.exit(2)
        for record in records:
            producer.send(topic, record)
        delivered = producer.flush()
    click.echo(f"sent {delivered} records to {topic}", err=True)

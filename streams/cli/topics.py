"""`pushcascade topics`: list the catalog and create its topics idempotently."""

from __future__ import annotations

import click
from rich.console import Console
from rich.table import Table

from schemas import CATALOG
from streams.cli import cli
from streams.kafka import check_kafka
from streams.settings import get_settings
from streams.topics import create_topics


@cli.group()
def topics() -> None:
    """The topic catalog."""


@topics.command("list")
def list_topics() -> None:
    """Print every topic of the catalog with its key, record and cleanup policy."""
    settings = get_settings()
    table = Table("topic", "key", "record", "written by", "partitions", "cleanup")
    for spec in CATALOG:
        table.add_row(settings.topic(spec.name), spec.key, spec.record, spec.writers,
                      str(settings.tuning.partitions), "compact" if spec.compact else "delete")
    Console().print(table)


@topics.command("create")
@click.option("--bootstrap", envvar="KAFKA_BOOTSTRAP_SERVERS", required=True,
              help="Kafka bootstrap servers (default: $KAFKA_BOOTSTRAP_SERVERS)")
def create(bootstrap: str) -> None:
    """Create every catalog topic that is missing; a second run changes nothing and says so."""
    check_kafka(bootstrap)
    created, present = create_topics(get_settings(), bootstrap)
    for name in created:
        click.echo(f"created {name}")
    if created:
        click.echo(f"{len(created)} topics created, {len(present)} already present")
    else:
        click.echo(f"nothing to do: all {len(present)} topics already present")

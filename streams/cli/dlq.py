"""`pushcascade dlq replay`: dead letters back to their source topics, after a fix."""

from __future__ import annotations

from datetime import datetime

import click
from rich.console import Console
from rich.table import Table

from streams.cli import cli
from streams.settings import get_settings


@cli.group()
def dlq() -> None:
    """The dead-letter topic push.dlq."""


@dlq.command()
@click.option("--topic", default=None, help="only letters of this source topic (unprefixed)")
@click.option("--since", type=click.DateTime(["%Y-%m-%dT%H:%M:%S%z", "%Y-%m-%d"]),
              default=None, help="only letters that failed at or after this time")
@click.option("--dry-run", is_flag=True, help="count what would be replayed, send nothing")
def replay(topic: str | None, since: datetime | None, dry_run: bool) -> None:
    """Send each dead letter's original key and bytes back to the topic it came from."""
    from streams.dlq import replay as run
    from streams.kafka import check_kafka

    settings = get_settings()
    check_kafka(settings.connections.kafka_bootstrap_servers)
    since_ms = round(since.timestamp() * 1000) if since else 0
    result = run(settings, topic, since_ms, dry_run)
    table = Table("source topic", "reason", "letters",
                  title="would be replayed (dry run)" if dry_run else "replayed")
    for (source, reason), n in sorted(result.replayable.items()):
        table.add_row(source, reason, str(n))
    Console().print(table)
    for why, n in result.skipped.items():
        click.echo(f"not replayable: {n} ({why})")
    click.echo(f"{'would replay' if dry_run else 'replayed'} "
               f"{sum(result.replayable.values())} records")

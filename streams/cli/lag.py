"""`pushcascade lag`: consumer-group lag per topic and partition, as a table or JSON."""

from __future__ import annotations

import json
from dataclasses import asdict

import click
from rich.console import Console
from rich.table import Table

from streams.cli import cli
from streams.settings import get_settings


@cli.command()
@click.option("--group", "names", multiple=True,
              type=click.Choice(["workers", "dispatcher", "sink"]),
              help="only these groups (repeatable; default: all)")
@click.option("--json", "as_json", is_flag=True, help="one JSON document instead of a table")
def lag(names: tuple[str, ...], as_json: bool) -> None:
    """What each group of the pipeline has committed against each partition's end."""
    from streams.kafka import check_kafka
    from streams.lag import lag as measure

    settings = get_settings()
    check_kafka(settings.connections.kafka_bootstrap_servers)
    rows = measure(settings, names)
    if as_json:
        totals: dict[str, int] = {}
        for r in rows:
            totals[r.group] = totals.get(r.group, 0) + r.lag
        click.echo(json.dumps({"groups": totals,
                               "partitions": [asdict(r) | {"lag": r.lag} for r in rows]}))
        return
    table = Table("group", "topic", "partition", "committed", "end", "lag",
                  title=f"consumer lag (topic prefix {settings.tuning.topic_prefix!r})")
    for r in rows:
        table.add_row(r.group, r.topic, str(r.partition), f"{r.committed:,}", f"{r.end:,}",
                      f"{r.lag:,}")
    Console().print(table)
    for group in dict.fromkeys(r.group for r in rows):
        click.echo(f"{group}: {sum(r.lag for r in rows if r.group == group):,} records behind")

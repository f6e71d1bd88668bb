"""`pushcascade up`: run the embedded stack (broker + topics) until interrupted."""

from __future__ import annotations

import signal
import threading

import click

from streams.cli import cli
from streams.harness import stack
from streams.settings import get_settings


@cli.command()
def up() -> None:
    """Start the Kafka broker (unless KAFKA_BOOTSTRAP_SERVERS is set) and create the topics."""
    settings = get_settings()
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    with stack(settings) as bootstrap:
        click.echo(f"KAFKA_BOOTSTRAP_SERVERS={bootstrap}")
        click.echo(f"CLICKHOUSE_DSN={settings.connections.clickhouse_dsn}")
        click.echo("topics created; Ctrl-C stops", err=True)
        stop.wait()
    click.echo("stopped", err=True)

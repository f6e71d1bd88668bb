"""`pushcascade up`: the embedded stack and every service of the loop, until interrupted."""

from __future__ import annotations

import signal
import threading
from pathlib import Path

import click

from connectors.clickhouse.client import shown
from streams.cli import cli
from streams.harness import ProcessExited, stack
from streams.harness.loop import Loop
from streams.settings import Settings, get_settings


@cli.command()
def up() -> None:
    """Start the Kafka broker (unless KAFKA_BOOTSTRAP_SERVERS is set), create the topics, and
    run the whole loop as supervised children (stream worker, dispatcher, ack gateway, sink into
    ClickHouse, provider simulator) with the settings of the environment; send your own
    requests with `pushcascade send` and watch them with `tail` and `sql`. Ctrl-C stops all."""
    settings = get_settings()
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    var_dir = Path("var")
    dsn = settings.connections.dsn
    with stack(settings, var_dir) as bootstrap:
        running = Settings(kafka_bootstrap_servers=bootstrap, clickhouse_dsn=dsn,
                           topic_prefix=settings.tuning.topic_prefix)
        try:
            with Loop(running, var_dir, "up", profile={}) as loop:
                assert loop.simulator is not None
                click.echo(f"KAFKA_BOOTSTRAP_SERVERS={bootstrap}")
                click.echo(f"CLICKHOUSE_DSN={shown(dsn)}")
                click.echo(f"provider simulator at {loop.simulator.url}, ack gateway at "
                           f"{loop.gateway_url}", err=True)
                click.echo(f"topics created; worker, dispatcher, gateway and sink running (logs: "
                           f"{var_dir}/up-*.log); send with `pushcascade send`, query with "
                           "`pushcascade sql \"SELECT ...\"`; Ctrl-C stops", err=True)
                while not stop.wait(1.0):
                    loop.check()
        except ProcessExited as exc:
            raise click.ClickException(f"a service stopped: {exc}") from None
    click.echo("stopped", err=True)

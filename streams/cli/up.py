"""`pushcascade up`: the embedded stack (broker + topics) and the sink, until interrupted."""

from __future__ import annotations

import signal
import threading
from pathlib import Path

import click

from connectors.clickhouse.client import shown
from streams.cli import cli
from streams.harness import ProcessExited, stack, start_python, worker_env
from streams.settings import Settings, get_settings


@cli.command()
def up() -> None:
    """Start the Kafka broker (unless KAFKA_BOOTSTRAP_SERVERS is set), create the topics, and
    run the sink into ClickHouse (it answers `pushcascade sql` for an embedded chDB)."""
    settings = get_settings()
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    var_dir = Path("var")
    with stack(settings, var_dir) as bootstrap:
        running = Settings(kafka_bootstrap_servers=bootstrap,
                           topic_prefix=settings.tuning.topic_prefix,
                           clickhouse_dsn=settings.connections.clickhouse_dsn)
        env = {**worker_env(running), "CLICKHOUSE_DSN": settings.connections.clickhouse_dsn}
        sink = start_python("streams.cli", "sink", env=env, workdir=var_dir, name="up-sink")
        click.echo(f"KAFKA_BOOTSTRAP_SERVERS={bootstrap}")
        click.echo(f"CLICKHOUSE_DSN={shown(settings.connections.clickhouse_dsn)}")
        click.echo(f"topics created; the sink writes every event to ClickHouse (log: "
                   f"{var_dir}/up-sink.log); query with pushcascade sql \"SELECT ...\"; "
                   "Ctrl-C stops", err=True)
        try:
            while not stop.wait(1.0):
                sink.check()
        except ProcessExited as exc:
            raise click.ClickException(f"the sink stopped: {exc}") from None
        finally:
            sink.stop()
    click.echo("stopped", err=True)

"""`pushcascade migrate|sink|sql|priors|report`: the ClickHouse side of the pipeline."""

from __future__ import annotations

import logging
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from streams.cli import cli, service_logging
from streams.settings import get_settings

console = Console()


def _connector_settings() -> Any:
    from connectors.settings import ConnectorSettings

    try:
        return ConnectorSettings.from_env()
    except ValueError as exc:
        raise click.ClickException(f"invalid configuration: {exc}") from None


def _owned_elsewhere(dsn: str) -> None:
    """Refuse to open an embedded store another process owns (chDB: one process per dir)."""
    from connectors.clickhouse.warehouse import owner_url

    url = owner_url(dsn)
    if url is not None:
        raise click.ClickException(
            f"the chDB store of CLICKHOUSE_DSN={dsn} is owned by a running sink ({url}); "
            "stop it first (the sink applies pending migrations when it starts)")


@cli.group()
def migrate() -> None:
    """Versioned ClickHouse migrations (list, up, sql)."""


def _migrator() -> Any:
    from connectors.clickhouse.migrate import Migrator

    dsn = get_settings().connections.dsn
    _owned_elsewhere(dsn)
    return Migrator(dsn)


@migrate.command("list")
def migrate_list() -> None:
    """Every migration and when it was applied."""
    table = Table("version", "file", "applied at (UTC)")
    for s in _migrator().status():
        table.add_row(str(s.migration.version), s.migration.name, s.applied_at or "pending")
    console.print(table)


@migrate.command("up")
@click.option("--dry-run", is_flag=True, help="print the SQL that would run, change nothing")
def migrate_up(dry_run: bool) -> None:
    """Apply the pending migrations in order (a second run does nothing)."""
    migrator = _migrator()
    if dry_run:
        _print_sql(migrator, migrator.pending())
        return
    done = migrator.up()
    for m in done:
        click.echo(f"applied {m.name}")
    click.echo(f"database {migrator.db} is at version {len(migrator.migrations)}"
               + ("" if done else " (nothing to do)"))


@migrate.command("sql")
@click.option("--all", "everything", is_flag=True, help="every migration, not only pending")
def migrate_sql(everything: bool) -> None:
    """Print the SQL of the pending (or all) migrations."""
    migrator = _migrator()
    _print_sql(migrator, migrator.migrations if everything else migrator.pending())


def _print_sql(migrator: Any, migrations: list[Any]) -> None:
    if not migrations:
        click.echo("-- nothing pending")
    for m in migrations:
        click.echo(f"-- {m.name}")
        for statement in migrator.statements(m):
            click.echo(statement + ";\n")


@cli.command()
def sink() -> None:
    """Insert every event topic into its ClickHouse table; serve read-only SQL on chDB."""
    from tenacity import retry, stop_after_delay, wait_exponential

    from connectors.clickhouse.client import chdb_dir, client, database, shown
    from connectors.clickhouse.migrate import Migrator
    from connectors.clickhouse.priors import TOPIC, refresh
    from connectors.clickhouse.sink import Sink
    from connectors.clickhouse.warehouse import Direct, announced, sql_app, sql_token
    from connectors.serving import ServerThread
    from streams.kafka import check_kafka
    from streams.metrics import serve

    service_logging()
    settings, config = get_settings(), _connector_settings()
    dsn = settings.connections.dsn
    check_kafka(settings.connections.kafka_bootstrap_servers)
    _owned_elsewhere(dsn)

    @retry(wait=wait_exponential(0.5, max=3), stop=stop_after_delay(10), reraise=True,
           before_sleep=lambda s: logging.warning(
               "sink: ClickHouse %s not open yet (%s); retrying", shown(dsn),
               s.outcome and str(s.outcome.exception()).splitlines()[0][:160]))
    def open_store() -> Any:  # a short `pushcascade sql` may hold an embedded store briefly
        for m in Migrator(dsn).up():
            logging.info("sink: applied migration %s", m.name)
        return client(dsn, database(dsn))

    ch = open_store()
    the_sink = Sink(settings, config, ch)
    warehouse = Direct(ch, shown(dsn))
    serve(config.sink_metrics_port, ready=the_sink.ready)
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    next_priors = [time.monotonic() + config.priors_interval]
    published: list[set[str]] = [set()]  # the last refresh's keys (this process's)

    def tick() -> None:
        if config.priors_interval and time.monotonic() >= next_priors[0]:
            next_priors[0] = time.monotonic() + config.priors_interval
            try:
                found = refresh(warehouse, the_sink.producer, the_sink.codec,
                                settings.topic(TOPIC), config.priors_min_samples,
                                config.priors_window, published[0],
                                settings.tuning.receipt_deadline, config.priors_half_life)
                published[0] = {p.key for p in found}
                logging.info("sink: published %d route priors", len(found))
            except Exception as exc:
                logging.warning("sink: route priors not refreshed: %s", exc)

    if chdb_dir(dsn) is None:
        the_sink.run(stop, tick)
        return
    token = sql_token()
    with ServerThread(sql_app(warehouse, token), config.sql_host, config.sql_port, "sql") as \
            server, announced(dsn, server.url, token):
        click.echo(f"read-only SQL: pushcascade sql \"SELECT ...\" (served on {server.url})",
                   err=True)
        the_sink.run(stop, tick)


@cli.command()
@click.argument("query")
@click.option("--format", "fmt", type=click.Choice(["pretty", "csv", "tsv", "json",
                                                    "markdown"]), default="pretty",
              show_default=True)
def sql(query: str, fmt: str) -> None:
    """Run a read-only query on the delivery tables (through the sink when it owns chDB)."""
    from connectors.clickhouse.warehouse import FORMATS, QueryError, open_warehouse

    try:
        click.echo(open_warehouse(get_settings().connections.analyst_dsn)
                   .text(query, FORMATS[fmt]), nl=False)
    except QueryError as exc:
        raise click.ClickException(str(exc)) from None


@cli.command()
@click.option("--min-samples", type=int, default=None,
              help="sends a route needs (default PUSHCASCADE_PRIORS_MIN_SAMPLES)")
@click.option("--dry-run", is_flag=True, help="compute and print, publish nothing")
def priors(min_samples: int | None, dry_run: bool) -> None:
    """Compute fleet route priors from ClickHouse and publish them to route.priors."""
    from connectors.clickhouse.priors import TOPIC, fleet_rates, publish
    from connectors.clickhouse.warehouse import QueryError, open_warehouse
    from schemas import Codec
    from streams.domain.priors import compute
    from streams.kafka import check_kafka, producer

    settings, config = get_settings(), _connector_settings()
    try:
        rates = fleet_rates(open_warehouse(settings.connections.dsn), config.priors_window,
                            settings.tuning.receipt_deadline, config.priors_half_life)
    except QueryError as exc:
        raise click.ClickException(str(exc)) from None
    found = compute(rates, min_samples or config.priors_min_samples, time.time(),
                    config.priors_half_life)
    table = Table("manufacturer", "model", "route", "success rate", "sends")
    for p in found:
        table.add_row(p.manufacturer, p.model or "*", p.route, f"{p.success_rate:.3f}",
                      str(p.samples))
    console.print(table)
    if not dry_run:
        check_kafka(settings.connections.kafka_bootstrap_servers)
        publish(found, producer(settings.connections.kafka_bootstrap_servers),
                Codec(settings.connections.schema_registry_url or None), settings.topic(TOPIC))
        click.echo(f"published {len(found)} priors to {settings.topic(TOPIC)}")


@cli.command()
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path),
              default=Path("var/report.html"), show_default=True, help="the HTML file")
@click.option("--screenshot", "png", type=click.Path(dir_okay=False, path_type=Path),
              default=None, help="also save a PNG of it (needs Debian's chromium)")
def report(out: Path, png: Path | None) -> None:
    """Success rates per channel and route, escalations, time to read, probe cost, campaigns:
    tables here, interactive charts in one HTML file."""
    from connectors.clickhouse.report import SECTIONS, collect, screenshot, write_html
    from connectors.clickhouse.warehouse import QueryError, open_warehouse

    try:
        warehouse = open_warehouse(get_settings().connections.analyst_dsn)
        data = collect(warehouse)
    except QueryError as exc:
        raise click.ClickException(str(exc)) from None
    for s in SECTIONS:
        rows = data[s.title]
        if s.title == "Time to first read":
            continue
        table = Table(*(rows[0] if rows else ["(no data yet)"]), title=f"{s.title}: {s.question}")
        for r in rows[:20]:
            table.add_row(*(str(v) for v in r.values()))
        console.print(table)
    write_html(data, out, warehouse.where)
    click.echo(f"report: {out.resolve()}")
    if png is not None:
        try:
            click.echo(f"screenshot: {screenshot(out, png).resolve()}")
        except (FileNotFoundError, subprocess.CalledProcessError) as exc:
            raise click.ClickException(f"no screenshot: {exc}") from None

"""`pushcascade verify`: check a run's promises from its topics, ClickHouse and the provider
simulator; one table (or JSON), exit 1 on any violation."""

from __future__ import annotations

import json
import sys

import click
from rich.console import Console
from rich.table import Table

from streams.cli import cli
from streams.settings import get_settings
from streams.verify import PROMISES, Check, violations
from streams.verify.model import EXAMPLES, LABELS


def table(checks: list[Check], title: str = "pushcascade verify") -> Table:
    """One row per check: promise, check, checked, pending, violations, first examples."""
    out = Table(title=f"{title}: {violations(checks)} violation(s)", show_lines=True,
                caption="  ".join(f"{n}: {text}." for n, text in PROMISES.items()))
    for name, justify in (("promise", "left"), ("check", "left"), ("checked", "right"),
                          ("pending", "right"), ("violations", "right"),
                          ("examples / note", "left")):
        out.add_column(name, justify=justify)  # type: ignore[arg-type]
    for c in checks:
        if c.skipped:
            counts, detail = ("–", "–", "–"), f"[yellow]not checked:[/] {c.skipped}"
        else:
            mark = "[green]0[/]" if c.ok else f"[bold red]{len(c.violations)}[/]"
            counts = (f"{c.checked:,}", f"{c.pending:,}", mark)
            detail = "\n".join(c.violations[:EXAMPLES]) or c.note
            if c.violations and c.note:
                detail += f"\n({c.note})"
        first = c is next(x for x in checks if x.promise == c.promise)
        out.add_row(LABELS[c.promise] if first else "", c.name, *counts, detail)
    return out


@cli.command()
@click.option("--settle", type=float, default=10.0, show_default=True,
              envvar="PUSHCASCADE_VERIFY_SETTLE",
              help="seconds after its last deadline before anything is judged (before that "
                   "it is pending, not a violation) [env PUSHCASCADE_VERIFY_SETTLE]")
@click.option("--simulator-url", default="", envvar="PUSHCASCADE_VERIFY_SIMULATOR_URL",
              help="the provider simulator whose record of calls to check (empty: not "
                   "checked) [env PUSHCASCADE_VERIFY_SIMULATOR_URL]")
@click.option("--json", "as_json", is_flag=True, help="one JSON document instead of a table")
def verify(settle: float, simulator_url: str, as_json: bool) -> None:
    """Check every promise after a run: terminal outcomes, one provider call and one outcome
    per send, every event in ClickHouse once, ClickHouse agreeing with the stream records,
    no forged ack, personal data in its place. Exit 1 on any violation."""
    from streams.kafka import check_kafka
    from streams.verify import run

    settings = get_settings()
    check_kafka(settings.connections.kafka_bootstrap_servers)
    checks = run(settings, settle=settle, simulator_url=simulator_url)
    found = violations(checks)
    if as_json:
        click.echo(json.dumps({"violations": found, "checks": [c.to_json() for c in checks]},
                              indent=2))
    else:
        Console(width=160).print(table(checks))
    sys.exit(1 if found else 0)

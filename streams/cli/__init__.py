"""The pushcascade command line: one program, one subcommand per module."""

from __future__ import annotations

import logging
import sys

import click

from streams.settings import SettingsError, Unreachable, get_settings


class Main(click.Group):
    """The top-level group: a configuration error is one clear line and exit code 2; a part
    that does not answer (Kafka, ClickHouse) one line and exit code 3."""

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except SettingsError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(2)
        except Unreachable as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(3)


@click.group(cls=Main)
@click.version_option(package_name="pushcascade")
def cli() -> None:
    """pushcascade: make an important push seen, and received once."""
    get_settings()  # validate the environment before any subcommand runs


def service_logging() -> None:
    """A long-running service's log: INFO lines with their time; the HTTP clients' own INFO
    lines (one per request: a line and ~3% of a dispatcher's CPU per provider call) left out."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    for noisy in ("httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def commands() -> click.Group:
    """The program with every subcommand registered."""
    from streams.cli import (  # noqa: F401  (registers)
        analytics,
        bench,
        bound,
        connectors,
        demo,
        dlq,
        lag,
        send,
        simulate,
        tail,
        topics,
        up,
        verify,
        worker,
    )

    return cli


def main() -> None:
    """Console-script entry point."""
    commands()()

"""`pushcascade worker`: run the stream processors (a Faust worker) against Kafka."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from streams.cli import cli
from streams.settings import get_settings

if TYPE_CHECKING:
    import faust


def ready(app: faust.App) -> bool:
    """The worker holds partitions and neither rebalances nor recovers. Called from the probe
    thread, it never builds Faust's consumer: one built there binds to that thread's loop and
    the worker's start then fails ("attached to a different loop")."""
    consumer = app._consumer  # None until the worker's own loop builds it
    return (consumer is not None and bool(consumer.assignment()) and not app.rebalancing
            and not app.in_recovery)


@cli.command()
@click.option("--bootstrap", envvar="KAFKA_BOOTSTRAP_SERVERS", required=True,
              help="Kafka bootstrap servers (default: $KAFKA_BOOTSTRAP_SERVERS)")
@click.option("--loglevel", default="warning", show_default=True, help="Faust log level")
def worker(bootstrap: str, loglevel: str) -> None:
    """Consume requests, acks, settings, profiles and devices; send, escalate, learn."""
    import faust

    from streams.kafka import check_kafka
    from streams.metrics import serve
    from streams.router import Router

    settings = get_settings()
    check_kafka(bootstrap)
    router = Router(settings, bootstrap)
    app = router.app
    serve(settings.tuning.metrics_port, ready=lambda: ready(app))
    runner = faust.Worker(router.app, loglevel=loglevel, quiet=True)
    runner.spinner = None  # with a spinner, Faust sets the root logger to DEBUG: ~10% of CPU
    runner.execute_from_commandline()

"""The benchmarks' baseline: a bare Faust agent doing one table write and one send per event."""

from __future__ import annotations

from typing import Any

from streams.settings import Settings


def baseline_app(settings: Settings, bootstrap: str) -> Any:
    """The bare agent: for each request, one table write and one send, in the router's style."""
    import faust

    from streams.app import create_app

    app = create_app(settings, bootstrap)
    source, out = (app.topic(settings.topic(n), key_type=bytes, value_type=bytes,
                             partitions=settings.tuning.partitions, internal=False)
                   for n in ("push.requests", "push.sends"))
    table = app.Table("baseline", partitions=settings.tuning.partitions,
                      schema=faust.Schema(key_serializer="raw", value_serializer="json"))

    async def run(stream: Any) -> None:
        """One table write and one send per event."""
        async for event in stream.events():
            msg = event.message
            table[msg.key] = {"offset": msg.offset, "size": len(msg.value)}
            await out.send(key=msg.key, value=msg.value, force=True)

    app.agent(source, name="baseline")(run)
    return app


def baseline_worker() -> None:
    """Run the baseline agent with the environment's settings until SIGTERM."""
    import faust

    settings = Settings()
    bootstrap = settings.connections.kafka_bootstrap_servers
    if not bootstrap:
        raise SystemExit("KAFKA_BOOTSTRAP_SERVERS is not set")
    app = baseline_app(settings, bootstrap)
    faust.Worker(app, loglevel="warning", quiet=True).execute_from_commandline()

"""`pushcascade dispatch` and `pushcascade acks-gateway`: the pipeline's HTTP edge."""

from __future__ import annotations

import asyncio
import gc
import signal

import click

from streams.cli import cli, service_logging
from streams.settings import get_settings


def _config(credentials: bool = False):  # type: ignore[no-untyped-def]
    """Connector and provider settings with the signing keys (and, for the dispatcher, every
    provider's credentials) checked; a configuration error as one line naming the setting."""
    from pydantic import ValidationError

    from connectors.adapters.config import ProviderConfig
    from connectors.adapters.registry import Registry
    from connectors.settings import ConnectorSettings

    try:
        config, registry = ConnectorSettings.from_env(), Registry(ProviderConfig.from_env())
        config.signing_key_id  # noqa: B018  (no built-in key: refuse to start without one)
        if credentials:
            registry.check_credentials()
    except ValidationError as exc:
        first = exc.errors()[0]
        raise click.ClickException("invalid configuration: "
                                   + first["msg"].removeprefix("Value error, ")) from None
    except ValueError as exc:
        raise click.ClickException(f"invalid configuration: {exc}") from None
    return config, registry


@cli.command()
def dispatch() -> None:
    """Hand every send on push.sends to its provider once; record each outcome."""
    from connectors.dispatcher import Dispatcher
    from streams.kafka import check_kafka
    from streams.metrics import serve

    service_logging()
    config, registry = _config(credentials=True)
    check_kafka(get_settings().connections.kafka_bootstrap_servers)
    dispatcher = Dispatcher(get_settings(), config, registry)
    serve(config.dispatch_metrics_port, ready=dispatcher.ready)

    async def main() -> None:
        stop = asyncio.Event()
        for signum in (signal.SIGINT, signal.SIGTERM):
            asyncio.get_running_loop().add_signal_handler(signum, stop.set)
        await dispatcher.run(stop)

    import uvloop

    uvloop.run(main())  # the HTTP edge: a faster event loop (aiohttp's and the sends' tasks)


@cli.command("acks-gateway")
def acks_gateway() -> None:
    """Serve receipt callbacks and read links; write their acks to push.acks."""
    import uvloop

    from connectors.gateway import admin_app, create_app
    from connectors.serving import Listener, public_listener, serve

    service_logging()
    config, registry = _config()
    app = create_app(get_settings(), config, registry)
    public = public_listener(config.gateway_host, config.gateway_port, config.gateway_read_timeout,
                             config.gateway_keep_alive)
    click.echo(f"ack gateway on http://{config.gateway_host}:{config.gateway_port}", err=True)

    async def main() -> None:
        stop = asyncio.Event()
        for signum in (signal.SIGINT, signal.SIGTERM):
            asyncio.get_running_loop().add_signal_handler(signum, stop.set)
        gc.freeze()  # what start-up made lives as long as the process: never walked again
        servers = [serve(app, public, stop)]
        if config.gateway_admin_port:
            private = Listener(config.gateway_admin_host, config.gateway_admin_port)
            servers.append(serve(admin_app(app), private, stop))
            click.echo(f"metrics and OpenAPI on http://{config.gateway_admin_host}:"
                       f"{config.gateway_admin_port}", err=True)
        await asyncio.gather(*servers)

    uvloop.run(main())  # the HTTP edge: a faster event loop

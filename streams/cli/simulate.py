"""`pushcascade simulate-providers`: the provider simulator on loopback (tests and the demo)."""

from __future__ import annotations

from typing import Any

import click

from streams.cli import cli


@cli.command("simulate-providers")
@click.option("--host", default=None, help="listen address [$PUSHCASCADE_SIMULATOR_HOST]")
@click.option("--port", type=int, default=None, help="listen port [$PUSHCASCADE_SIMULATOR_PORT]")
@click.option("--seed", type=int, default=None, help="seed of every random choice")
@click.option("--gateway-url", default=None, help="ack gateway base URL for receipt callbacks")
@click.option("--population", default=None, type=click.Path(exists=True, dir_okay=False),
              help="population file (JSON or YAML)")
@click.option("--behaviours", default=None, type=click.Path(exists=True, dir_okay=False),
              help="route/channel behaviours file (JSON or YAML)")
def simulate_providers(host: str | None, port: int | None, seed: int | None,
                       gateway_url: str | None, population: str | None,
                       behaviours: str | None) -> None:
    """Serve every provider's protocol (FCM, APNs, Huawei, ..., WeChat, SMS, e-mail) locally."""
    import uvloop

    from connectors.simulator.core import Simulator, SimulatorSettings
    from connectors.simulator.server import run

    overrides: dict[str, Any] = {k: v for k, v in {"host": host, "port": port, "seed": seed,
                                   "gateway_url": gateway_url, "population": population,
                                   "behaviours": behaviours}.items() if v is not None}
    try:
        sim = Simulator(SimulatorSettings(**overrides))
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"provider simulator on http://{sim.settings.host}:{sim.settings.port} "
               f"(seed {sim.seed})", err=True)
    uvloop.run(run(sim))  # a faster event loop: the simulator must never be the bottleneck

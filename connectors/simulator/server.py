"""Serving the simulator (HTTP/1.1 and h2c), in the foreground or a thread."""

from __future__ import annotations

import asyncio
import signal

from connectors.serving import Listener, ServerThread, free_port, serve
from connectors.simulator.app import create_app
from connectors.simulator.core import Simulator


async def run(sim: Simulator, stop: asyncio.Event | None = None) -> None:
    """Serve sim until stop is set (without one: until SIGINT or SIGTERM)."""
    listener = Listener(sim.settings.host, sim.settings.port, log_errors=sim.settings.log_errors)
    event = stop or asyncio.Event()
    if stop is None:
        for signum in (signal.SIGINT, signal.SIGTERM):
            asyncio.get_running_loop().add_signal_handler(signum, event.set)
    await serve(create_app(sim), listener, event)


class SimulatorThread(ServerThread):
    """The simulator on a free loopback port in a background thread (tests, benchmarks)."""

    def __init__(self, sim: Simulator) -> None:
        self.sim = sim
        if not sim.settings.port:  # port 0: pick a free one
            sim.settings.port = free_port(sim.settings.host)
        super().__init__(create_app(sim), sim.settings.host, sim.settings.port, "simulator",
                         sim.settings.log_errors)

    def idle(self, timeout: float = 60.0) -> None:
        """Wait until every receipt and read the population scheduled has been carried out."""
        asyncio.run_coroutine_threadsafe(self.sim.idle(), self.loop).result(timeout)


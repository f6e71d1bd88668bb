"""Serving the simulator with hypercorn (HTTP/1.1 and h2c), in the foreground or a thread."""

from __future__ import annotations

import asyncio
import signal
import socket
import threading
import time
from types import TracebackType

from hypercorn.asyncio import serve
from hypercorn.config import Config

from connectors.simulator.app import create_app
from connectors.simulator.core import Simulator


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on host right now."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def hypercorn_config(host: str, port: int, log_errors: bool = False) -> Config:
    """Hypercorn settings: one listener, no access log, errors to stderr when asked."""
    config = Config()
    config.bind = [f"{host}:{port}"]
    config.accesslog = None
    config.errorlog = "-" if log_errors else None
    config.graceful_timeout = 1.0
    config.backlog = 2048  # a dispatcher may open hundreds of connections at once
    config.h2_max_concurrent_streams = 1000  # as many streams per connection as APNs allows
    config.keep_alive_max_requests = 2**31  # never close a busy connection (default: 1000)
    config.keep_alive_timeout = 120.0  # longer than clients keep idle connections (httpx: 5 s)
    return config


async def run(sim: Simulator, stop: asyncio.Event | None = None) -> None:
    """Serve sim until stop is set (without one: until SIGINT or SIGTERM)."""
    config = hypercorn_config(sim.settings.host, sim.settings.port, sim.settings.log_errors)
    event = stop or asyncio.Event()
    if stop is None:
        for signum in (signal.SIGINT, signal.SIGTERM):
            asyncio.get_running_loop().add_signal_handler(signum, event.set)
    await serve(create_app(sim), config, shutdown_trigger=event.wait)  # type: ignore[arg-type]


class SimulatorThread:
    """The simulator on a free loopback port in a background thread (tests, benchmarks)."""

    def __init__(self, sim: Simulator) -> None:
        self.sim = sim
        if not sim.settings.port:  # port 0: pick a free one
            sim.settings.port = free_port(sim.settings.host)
        self.url = f"http://{sim.settings.host}:{sim.settings.port}"
        self._loop = asyncio.new_event_loop()
        self._stop = asyncio.Event()
        self._thread = threading.Thread(target=self._main, name="simulator", daemon=True)

    def _main(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(run(self.sim, self._stop))

    def start(self, timeout: float = 30.0) -> SimulatorThread:
        """Start serving and wait until the port accepts connections."""
        self._thread.start()
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            try:
                with socket.create_connection((self.sim.settings.host, self.sim.settings.port),
                                              timeout=0.5):
                    return self
            except OSError:
                if not self._thread.is_alive():
                    raise RuntimeError("the simulator thread ended at start") from None
                time.sleep(0.05)
        raise TimeoutError(f"the simulator did not listen on {self.url} within {timeout}s")

    def idle(self, timeout: float = 60.0) -> None:
        """Wait until every receipt and read the population scheduled has been carried out."""
        asyncio.run_coroutine_threadsafe(self.sim.idle(), self._loop).result(timeout)

    def stop(self) -> None:
        """Stop serving and join the thread."""
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)

    def __enter__(self) -> SimulatorThread:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

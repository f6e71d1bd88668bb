"""Serving a Starlette app with hypercorn: its settings, and a server in a background thread."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from types import TracebackType
from typing import Any, Self

from hypercorn.asyncio import serve
from hypercorn.config import Config


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on host right now."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def public_config(host: str, port: int, read_timeout: float, keep_alive: float) -> Config:
    """Hypercorn settings for a port the internet reaches: slow clients are cut off (a request
    must arrive within read_timeout, an idle connection closes after keep_alive), small headers."""
    config = hypercorn_config(host, port, log_errors=True)
    config.read_timeout = max(1, round(read_timeout))  # hypercorn takes whole seconds
    config.keep_alive_timeout = keep_alive
    config.keep_alive_max_requests = 1000
    config.h11_max_incomplete_size = 16 * 1024
    config.backlog = 1024
    return config


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


class ServerThread:
    """An ASGI app served on host:port (0: a free port) in a background thread."""

    def __init__(self, app: Any, host: str, port: int, name: str,
                 log_errors: bool = False) -> None:
        self.app, self.host, self.name = app, host, name
        self.port = port or free_port(host)
        self.url = f"http://{host}:{self.port}"
        self.config = hypercorn_config(host, self.port, log_errors)
        self.loop = asyncio.new_event_loop()
        self._stop = asyncio.Event()
        self._thread = threading.Thread(target=self._main, name=name, daemon=True)

    def _main(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(
            serve(self.app, self.config, shutdown_trigger=self._stop.wait))  # type: ignore[arg-type]

    def start(self, timeout: float = 30.0) -> Self:
        """Start serving and wait until the port accepts connections."""
        self._thread.start()
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            try:
                with socket.create_connection((self.host, self.port), timeout=0.5):
                    return self
            except OSError:
                if not self._thread.is_alive():
                    raise RuntimeError(f"the {self.name} thread ended at start") from None
                time.sleep(0.05)
        raise TimeoutError(f"the {self.name} did not listen on {self.url} within {timeout}s")

    def stop(self) -> None:
        """Stop serving and join the thread."""
        if self._thread.is_alive():
            self.loop.call_soon_threadsafe(self._stop.set)
            self._thread.join(10)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

"""Serving a Starlette app with hypercorn: its settings, and a server in a background thread."""

from __future__ import annotations

import asyncio
import os
import random
import socket
import tempfile
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from hypercorn.asyncio import serve
from hypercorn.config import Config

#: Ports free_port picks from: below Linux's ephemeral range (32768-60999), where outgoing
#: connections take their source ports, so none of them takes a port between its choice and
#: the server's bind (several test processes connecting to brokers at once did).
PORTS = range(20000, 32768)
#: Where a chosen port is claimed, one file each, so that two processes choosing at the same
#: moment never get the same port (two test stacks once sent to each other's servers); a claim
#: older than CLAIM_TTL seconds is from an earlier run and lapses.
CLAIMS = Path(tempfile.gettempdir()) / "pushcascade-ports"
CLAIM_TTL = 3600.0
_given: set[int] = set()


def _claim(port: int) -> bool:
    """Take port for this process, unless another process holds a live claim on it."""
    CLAIMS.mkdir(exist_ok=True)
    path = CLAIMS / str(port)
    for _ in range(2):
        try:
            os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
            return True
        except FileExistsError:
            try:
                if time.time() - path.stat().st_mtime < CLAIM_TTL:
                    return False
                path.unlink()  # lapsed: claim it anew
            except FileNotFoundError:
                pass
    return False


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on host (and every interface) now, chosen at random below the
    ephemeral range and claimed, so that no process on this machine is given it again soon."""
    for _ in range(1000):
        port = random.choice(PORTS)  # noqa: S311 (a port, not a secret)
        if port in _given or not _claim(port):
            continue
        _given.add(port)
        try:
            for address in {host, ""}:
                with socket.socket() as sock:
                    sock.bind((address, port))
        except OSError:
            continue
        return port
    raise OSError(f"no free port in {PORTS.start}-{PORTS.stop - 1}")


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

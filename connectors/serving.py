"""Serving an ASGI app with granian on the running loop, in the foreground or a background
thread; free ports for tests and embedded stacks."""

from __future__ import annotations

import asyncio
import os
import random
import socket
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import uvloop
from granian.constants import HTTPModes, Interfaces
from granian.http import HTTP1Settings, HTTP2Settings
from granian.log import LogLevels
from granian.server.embed import Server

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


@dataclass(frozen=True)
class Listener:
    """Where and how an ASGI app is served: granian (HTTP/1.1, and h2c when http2, parsed in
    Rust) on this process's event loop. A request's headers must arrive within read_timeout
    seconds, and an idle kept-alive connection closes after it; h2 takes up to 1,000 streams
    per connection, as APNs does; max_buffer caps what one request may buffer (headers)."""

    host: str
    port: int
    read_timeout: float = 120.0  # idle too: longer than clients keep one (aiohttp: 15 s)
    log_errors: bool = False
    max_buffer: int = 8192 + 4096 * 100
    http2: bool = True
    backlog: int = 2048  # a dispatcher may open hundreds of connections at once


def public_listener(host: str, port: int, read_timeout: float, keep_alive: float) -> Listener:
    """A port the internet reaches: HTTP/1.1 only, so that a connection that sends nothing is
    cut off too (h1/h2 detection waits for a first byte with no timeout); a request's headers
    must arrive within read_timeout, and one timer serves both that and the idle keep-alive,
    so it is the shorter of the two; small headers."""
    return Listener(host, port, min(read_timeout, keep_alive), log_errors=True,
                    max_buffer=16 * 1024, backlog=1024, http2=False)


async def serve(app: Any, listener: Listener, stop: asyncio.Event) -> None:
    """Serve app on listener until stop is set (or the server fails)."""
    server = Server(app, address=listener.host, port=listener.port,
                    interface=Interfaces.ASGI, backlog=listener.backlog,
                    http=HTTPModes.auto if listener.http2 else HTTPModes.http1,
                    log_enabled=listener.log_errors, log_level=LogLevels.error,
                    http1_settings=HTTP1Settings(
                        header_read_timeout=max(1, round(listener.read_timeout * 1000)),
                        max_buffer_size=listener.max_buffer),
                    http2_settings=HTTP2Settings(max_concurrent_streams=1000))
    serving = asyncio.ensure_future(server.serve())
    stopped = asyncio.ensure_future(stop.wait())
    await asyncio.wait([serving, stopped], return_when=asyncio.FIRST_COMPLETED)
    stopped.cancel()
    server.stop()
    await serving


class ServerThread:
    """An ASGI app served on host:port (0: a free port) in a background thread."""

    def __init__(self, app: Any, host: str, port: int, name: str,
                 log_errors: bool = False) -> None:
        self.app, self.host, self.name = app, host, name
        self.port = port or free_port(host)
        self.url = f"http://{host}:{self.port}"
        self.listener = Listener(host, self.port, log_errors=log_errors)
        self.loop = uvloop.new_event_loop()  # the simulator must never be the bottleneck
        self._stop = asyncio.Event()
        self._thread = threading.Thread(target=self._main, name=name, daemon=True)

    def _main(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(serve(self.app, self.listener, self._stop))

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

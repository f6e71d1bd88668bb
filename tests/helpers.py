"""Test helpers: run the CLI as users do, read topics back through a real consumer."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, TopicPartition

from schemas import Codec
from streams.kafka import consumer
from streams.settings import Settings


def run_cli(*args: str, env: dict[str, str], stdin: str = "", timeout: float = 60,
            cwd: Any = None) -> Any:
    """Run `pushcascade ARGS` in a subprocess; returns the CompletedProcess."""
    return subprocess.run([sys.executable, "-m", "streams.cli", *args], input=stdin, env=env,
                          capture_output=True, text=True, timeout=timeout, cwd=cwd)


def read_topic(settings: Settings, name: str, *, expect: int | None = None,
               timeout: float = 10.0, codec: Codec | None = None) -> list[dict]:
    """Every record of a topic from the beginning, decoded; stops at `expect` or after timeout."""
    codec = codec or Codec()
    full = settings.topic(name)
    reader = consumer(settings.connections.kafka_bootstrap_servers, f"test-{uuid.uuid4().hex}")
    parts = reader.list_topics(full, timeout=10).topics[full].partitions
    reader.assign([TopicPartition(full, p, OFFSET_BEGINNING) for p in parts])
    records: list[dict] = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline and (expect is None or len(records) < expect):
            msg = reader.poll(0.2)
            if msg is not None and not msg.error():
                records.append(codec.decode(msg.value(), topic=name))
    finally:
        reader.close()
    return records

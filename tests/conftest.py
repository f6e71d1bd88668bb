"""Fixtures: a real session-wide broker, unique topic prefixes per test, chDB per test."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from streams.embedded import Broker, start_broker
from streams.settings import Settings
from streams.topics import create_topics


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    """One real Tansu broker for the whole test session."""
    log = tmp_path_factory.mktemp("broker") / "broker.log"
    running = start_broker(log_path=log)
    yield running
    running.stop()


@pytest.fixture
def settings_factory(broker: Broker, monkeypatch: pytest.MonkeyPatch):
    """Make Settings with a unique topic prefix (and its topics created) plus overrides."""

    def make(**overrides: Any) -> Settings:
        prefix = f"t{uuid.uuid4().hex[:10]}."
        settings = Settings(kafka_bootstrap_servers=broker.bootstrap, topic_prefix=prefix,
                            **overrides)
        create_topics(settings, broker.bootstrap)
        return settings

    return make


@pytest.fixture
def settings(settings_factory) -> Settings:
    """Settings for one test: its own topics on the shared broker."""
    return settings_factory()


@pytest.fixture
def env(settings: Settings, broker: Broker) -> dict[str, str]:
    """Environment variables that point a subprocess at this test's broker and topics."""
    import os

    return {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap,
            "PUSHCASCADE_TOPIC_PREFIX": settings.tuning.topic_prefix}


@pytest.fixture
def chdb(tmp_path: Path) -> Iterator[Any]:
    """A chDB client on a fresh on-disk directory, closed after the test (one path per process)."""
    from streams.clickhouse import client

    ch = client(f"chdb://{tmp_path / 'chdb'}")
    yield ch
    ch.close()

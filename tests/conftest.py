"""Fixtures: a real session-wide broker, unique topic prefixes per test, workers, taps, chDB;
the hypothesis profiles, and the fuzz targets' counts at the end of the session."""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings

from streams.harness import (
    Broker,
    DeviceSimulator,
    Process,
    Tap,
    embedded_ack_keys,
    start_broker,
    start_worker,
    worker_env,
)
from streams.settings import Settings
from streams.topics import create_topics

#: `make test`: hypothesis' usual 100 examples a test (the fuzz targets take a few seconds).
hypothesis_settings.register_profile("default", max_examples=100)
#: `HYPOTHESIS_PROFILE=fuzz pytest tests/fuzz`: 20,000 examples a target ($FUZZ_EXAMPLES to
#: change it), no deadline, no pytest timeout on the targets (tests/fuzz/counts.py still
#: fails an input over 10 s).
hypothesis_settings.register_profile(
    "fuzz", max_examples=int(os.environ.get("FUZZ_EXAMPLES", "20000")), deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
hypothesis_settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Under the fuzz profile the fuzz targets run as long as their examples take."""
    if os.environ.get("HYPOTHESIS_PROFILE") == "fuzz":
        for item in items:
            if "tests/fuzz/" in item.nodeid:
                item.add_marker(pytest.mark.timeout(0))


def pytest_sessionfinish(session: pytest.Session) -> None:
    """In an xdist worker: hand the fuzz targets' counts to the controller."""
    output = getattr(session.config, "workeroutput", None)
    counts = sys.modules.get("tests.fuzz.counts")
    if output is not None and counts is not None:
        output["fuzz_counts"] = counts.table()


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: Any) -> None:
    """In the xdist controller: add a finished worker's fuzz counts to the session's."""
    rows = getattr(node, "workeroutput", {}).get("fuzz_counts")
    if rows:
        from tests.fuzz import counts

        counts.merge(rows)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """The fuzz targets' counts (inputs tried, crashes), when any ran."""
    counts = sys.modules.get("tests.fuzz.counts")
    if counts is not None and counts.table():
        terminalreporter.section("fuzz counts")
        counts.report(terminalreporter.write_line)


# before any test module is collected: some build their signers at import
embedded_ack_keys()


@pytest.fixture(scope="session", autouse=True)
def ack_keys() -> str:
    """This test run's random signing key (no key is built in), shared with every child."""
    return embedded_ack_keys()


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    """One real Tansu broker for the whole test session."""
    log = tmp_path_factory.mktemp("broker") / "broker.log"
    running = start_broker(log_path=log)
    yield running
    running.stop()


@pytest.fixture
def settings_factory(broker: Broker):
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
def env(settings: Settings) -> dict[str, str]:
    """Environment variables that point a subprocess at this test's broker and topics."""
    return worker_env(settings)


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[Callable[..., Process]]:
    """Start `pushcascade worker` processes (workers(env, name)); all are stopped afterwards."""
    started: list[Process] = []

    def start(env: dict[str, str], name: str = "worker") -> Process:
        process = start_worker(env, tmp_path, name, loglevel="info")
        started.append(process)
        return process

    yield start
    for process in started:
        process.stop()
        print(f"--- {process.name} (exit {process.returncode}) ---\n{process.tail(40)}")


@pytest.fixture
def taps(settings: Settings) -> Iterator[Callable[..., Tap]]:
    """Open taps on this test's topics (taps(name)); all are closed afterwards."""
    with ExitStack() as opened:
        yield lambda name: opened.enter_context(Tap(settings, name))


@pytest.fixture
def devices(settings: Settings) -> Iterator[Callable[..., DeviceSimulator]]:
    """Start simulated devices (devices(rule)) on this test's topics; all stop afterwards."""
    with ExitStack() as running:
        yield lambda rule: running.enter_context(DeviceSimulator(settings, rule))


@pytest.fixture
def chdb(tmp_path: Path) -> Iterator[Any]:
    """A chDB client on a fresh on-disk directory, closed after the test (one path per process)."""
    from connectors.clickhouse.client import client

    ch = client(f"chdb://{tmp_path / 'chdb'}")
    yield ch
    ch.close()


@pytest.fixture
def warehouse(tmp_path: Path) -> Iterator[Any]:
    """The delivery tables migrated into a fresh chDB directory: .dsn, .ch (on the database)."""
    from types import SimpleNamespace

    from connectors.clickhouse.client import client, database
    from connectors.clickhouse.migrate import Migrator

    dsn = f"chdb://{tmp_path / 'chdb'}"
    migrator = Migrator(dsn)
    migrator.up()
    ch = client(dsn, database(dsn))
    yield SimpleNamespace(dsn=dsn, ch=ch, migrator=migrator)
    ch.close()

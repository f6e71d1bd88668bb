"""Fault injection (issue 18, item 2): under steady load through the whole loop on the embedded
stack (two stream workers, dispatcher, provider simulator, ack gateway, sink into chDB), each
scenario injects one fault, lets the loop drain, and asks `pushcascade verify` (every promise,
the simulator's record of calls included) for violations; it prints what it injected and
verify's table and fails on any violation.

The scenarios here share one running loop (one topic prefix, module-scoped) in file order:
verify judges the whole run each time, so a violation an earlier scenario reported is carried
over and counted only there. Those that leave a process broken or moved (stream workers
killed, frozen, joining and leaving; the dispatcher frozen) run on a loop each, in
test_faults_own_loop.py; the broker restart in test_broker_restart.py."""

from __future__ import annotations

import threading
import time

import pytest

from connectors.clickhouse.tables import TABLES
from tests.faults.stack import PROVIDER_TIMEOUT, RATE, Stack, kill_at_random_moments

pytestmark = [pytest.mark.broker, pytest.mark.faults]

#: The slow provider answers after this many ms (past PROVIDER_TIMEOUT).
SLOW_MS = 3500
#: How long each provider fault lasts (s), with the load flowing.
PROVIDER_FAULT = 6.0
#: The burst: BURST x the steady rate for BURST_S seconds (issue 18 asks 10x for 30 s).
BURST, BURST_S = 10, 6.0
#: Kills per process kind, and the seed of their random moments.
KILLS, SEED = 3, 18


@pytest.mark.parametrize("kind", ["dispatch", "gateway", "sink"])
def test_sigkill_at_random_moments(stack: Stack, kind: str) -> None:
    with stack.scenario(f"SIGKILL of the {kind}, {KILLS} times at random moments") as injected:
        kill_at_random_moments(stack, kind, KILLS, f"{SEED}-{kind}", injected)


def test_a_provider_outage(stack: Stack) -> None:
    with stack.scenario("a provider outage (HUAWEI answers 5xx)") as injected:
        time.sleep(1)
        before = stack.sim_stats().get("outage.HUAWEI", 0)
        stack.control("PUT", "routes/HUAWEI", {"outage_s": PROVIDER_FAULT, "retry_after": 1})
        time.sleep(PROVIDER_FAULT)  # the outage's length
        stack.control("DELETE", "routes/HUAWEI")
        hit = stack.sim_stats().get("outage.HUAWEI", 0) - before
        injected.append(f"HUAWEI down for {PROVIDER_FAULT:g} s (5xx, Retry-After 1 s): "
                        f"{hit} calls refused")
    assert hit > 0, "no send reached the provider during its outage: nothing was tested"


def test_a_provider_slower_than_its_timeout(stack: Stack) -> None:
    with stack.scenario("a provider slowed past its timeout (XIAOMI)") as injected:
        time.sleep(1)
        before = {c: stack.dispatch_count(c, "xiaomi") for c in ("unknown", "retries")}
        stack.control("PUT", "routes/XIAOMI", {"latency_ms": SLOW_MS})
        time.sleep(PROVIDER_FAULT)  # the slowness' length
        stack.control("DELETE", "routes/XIAOMI")
        cut_off, retried = (stack.dispatch_count(c, "xiaomi") - before[c]
                            for c in ("unknown", "retries"))
        injected.append(f"XIAOMI answers after {SLOW_MS} ms for {PROVIDER_FAULT:g} s "
                        f"(provider timeout {PROVIDER_TIMEOUT:g} s): {cut_off:g} calls timed out "
                        f"after the request was sent (outcome unknown, not repeated), "
                        f"{retried:g} retries")
    assert cut_off > 0, "no call timed out at the slow provider: nothing was tested"


def test_a_vendor_answering_429_with_retry_after(stack: Stack) -> None:
    with stack.scenario("a vendor answering 429 with Retry-After (APNs)") as injected:
        time.sleep(1)
        before = stack.sim_stats().get("reject.APNS", 0)
        stack.control("PUT", "routes/APNS", {"accept": 0, "error": "TooManyRequests",
                                             "retry_after": 2})
        time.sleep(PROVIDER_FAULT)  # the throttling's length
        stack.control("DELETE", "routes/APNS")
        hit = stack.sim_stats().get("reject.APNS", 0) - before
        injected.append(f"APNs answers 429 TooManyRequests with Retry-After 2 s for "
                        f"{PROVIDER_FAULT:g} s: {hit} calls throttled")
    assert hit > 0, "no send reached the throttled vendor: nothing was tested"


def test_clickhouse_inserts_failing_for_20_seconds(stack: Stack) -> None:
    from connectors.clickhouse.client import client, database
    from connectors.clickhouse.sink import Sink
    from connectors.settings import ConnectorSettings

    service = stack.of("sink")[0]
    dsn = stack.settings.connections.dsn
    failed = 0
    with stack.scenario("ClickHouse inserts failing for 20 s") as injected:
        # chDB is in-process: for the outage the sink runs in this process (the same Sink
        # class, consumer group and store), where ClickHouse itself can refuse its inserts
        service.proc.stop(15)
        ch = client(dsn, database(dsn))
        sink = Sink(stack.settings, ConnectorSettings(**{
            "sink_flush_interval": 0.5, "sink_backoff": 0.2, "sink_backoff_max": 2}), ch)
        stop = threading.Event()
        thread = threading.Thread(target=sink.run, args=(stop,), name="sink", daemon=True)
        thread.start()
        try:
            end = time.monotonic() + 60
            while sink.inserted == 0 and time.monotonic() < end:
                time.sleep(0.2)
            assert sink.inserted, "the sink inserted nothing before the outage"
            tables = [t.name for t in TABLES.values()]
            for table in tables:
                ch.command(f"DETACH TABLE {table}")
            outage_end = time.monotonic() + 20
            try:
                while time.monotonic() < outage_end:  # the outage's length
                    failed = max(failed, sink.failures)
                    time.sleep(0.2)
            finally:
                for table in tables:
                    ch.command(f"ATTACH TABLE {table}")
            injected.append(f"every event table detached for 20 s ({', '.join(tables)}): "
                            f"{failed} inserts in a row failed, the sink paused and retried")
        finally:
            stop.set()
            thread.join(60)
            ch.close()
        assert not thread.is_alive(), "the sink did not stop"
        stack.restart(service)
        injected.append("the sink process took the store over again")
    assert failed > 0, "no insert failed: nothing was tested"


def test_a_burst_of_ten_times_the_steady_rate(stack: Stack) -> None:
    assert stack.load is not None
    with stack.scenario(f"a burst of {BURST}x the steady rate for {BURST_S:g} s") as injected:
        time.sleep(1)
        sent = stack.load.sent
        stack.load.rate = RATE * BURST
        time.sleep(BURST_S)  # the burst's length
        stack.load.rate = RATE
        injected.append(f"{BURST}x the steady rate: {RATE * BURST:g} requests/s for "
                        f"{BURST_S:g} s ({stack.load.sent - sent} requests), scaled to this "
                        f"2-core machine (issue 18 asks 10x for 30 s): the provider simulator, "
                        f"one Python process, answers ~150 calls/s here and each request "
                        f"makes 2-4 calls")

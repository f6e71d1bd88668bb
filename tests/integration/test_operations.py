"""Operations: every long-running service's metrics move while traffic flows through the loop."""

from __future__ import annotations

import time
import urllib.request
from collections.abc import Callable

import pytest
from prometheus_client.parser import text_string_to_metric_families

from connectors.producer import PushProducer
from connectors.serving import free_port
from connectors.simulator import Simulator, SimulatorSettings, SimulatorThread
from streams.harness import Population, population, producer_for, start_python, wait_accounts
from streams.harness import worker_env as service_env
from streams.harness.loop import DEMO_TUNING

pytestmark = pytest.mark.broker


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample a /metrics endpoint serves, by name and labels."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as page:
        text = page.read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def scrape_when_served(port: int, procs: list, timeout: float = 60.0) -> dict:
    """scrape, once the service serves /metrics (on a loaded machine a sink's migrations can
    hold its port back after the worker is ready); a process that exits fails it at once."""
    end = time.monotonic() + timeout
    while True:
        try:
            return scrape(port)
        except OSError:  # urllib's URLError: not listening yet
            for proc in procs:
                proc.check()
            if time.monotonic() > end:
                raise
            time.sleep(0.3)


def total(samples: dict, name: str, where: Callable[[dict], bool] = lambda _: True) -> float:
    """The sum of a metric's samples whose labels pass `where`."""
    return sum(v for (n, labels), v in samples.items() if n == name and where(dict(labels)))


def test_each_service_exposes_metrics_that_move_with_traffic(settings, tmp_path):
    ports = {name: free_port() for name in ("worker", "dispatch", "gateway", "gateway_admin",
                                            "sink", "sql")}
    # where each service serves /metrics: the gateway on its private port
    scraped = {**ports, "gateway": ports["gateway_admin"]}
    sim = Simulator(SimulatorSettings(**{"port": 0, "seed": 3,
                                         "gateway_url": f"http://127.0.0.1:{ports['gateway']}"}))
    people = population(12)
    crowd = Population(people)
    sim.set_population(crowd.document())
    with SimulatorThread(sim) as simulator:
        env = {**service_env(settings, **DEMO_TUNING, metrics_port=ports["worker"],
                             dispatch_metrics_port=ports["dispatch"],
                             gateway_port=ports["gateway"],
                             gateway_admin_port=ports["gateway_admin"],
                             sink_metrics_port=ports["sink"],
                             sql_port=ports["sql"], sink_flush_interval=0.3),
               "CLICKHOUSE_DSN": f"chdb://{tmp_path / 'store'}",
               "PUSHCASCADE_GATEWAY_URL": f"http://127.0.0.1:{ports['gateway']}",
               "PUSHCASCADE_PROVIDER_SIMULATOR_URL": simulator.url}
        procs = [start_python("streams.cli", name, env=env, workdir=tmp_path, name=name)
                 for name in ("worker", "dispatch", "acks-gateway", "sink")]
        try:
            with producer_for(settings) as producer:
                crowd.register(producer)
            wait_accounts(settings, crowd.users, workers=procs)
            before = {name: scrape_when_served(scraped[name], procs)
                      for name in ("worker", "dispatch", "gateway", "sink")}
            with PushProducer(settings.connections.kafka_bootstrap_servers,
                              topic_prefix=settings.tuning.topic_prefix) as pushes:
                for r in range(3):
                    for u in people:
                        pushes.push({"message_id": f"{u.account_id}-ops{r}",
                                     "account_id": u.account_id, "importance": "HIGH",
                                     "title": "t", "body": "b", "read_action": "LINK",
                                     "link": "https://shop.example/x", "campaign_id": None,
                                     "device_ids": [], "created_at": int(time.time() * 1000)})
                    pushes.flush()
            checks: dict[str, Callable[[dict], float]] = {
                "worker sends": lambda s: total(s["worker"], "pushcascade_events_total",
                                                lambda labels: labels["event"].startswith("send_")),
                "dispatcher outcomes": lambda s: total(s["dispatch"],
                                                       "pushcascade_dispatch_outcomes_total"),
                "dispatcher latency": lambda s: total(s["dispatch"],
                                                      "pushcascade_dispatch_seconds_count"),
                "gateway acks": lambda s: total(s["gateway"], "pushcascade_gateway_acks_total"),
                "gateway ack write latency": lambda s: total(
                    s["gateway"], "pushcascade_gateway_ack_write_seconds_count"),
                "sink rows": lambda s: total(s["sink"], "pushcascade_sink_rows_total"),
                "sink insert latency": lambda s: total(s["sink"],
                                                       "pushcascade_sink_insert_seconds_count"),
                "worker requests in": lambda s: total(
                    s["worker"], "pushcascade_records_in_total",
                    lambda labels: labels["topic"].endswith("push.requests")),
                "worker sends out": lambda s: total(
                    s["worker"], "pushcascade_records_out_total",
                    lambda labels: labels["topic"].endswith("push.sends")),
                "worker processing time": lambda s: total(
                    s["worker"], "pushcascade_processing_seconds_count"),
                "dispatcher sends in": lambda s: total(s["dispatch"],
                                                       "pushcascade_records_in_total"),
                "dispatcher outcomes out": lambda s: total(
                    s["dispatch"], "pushcascade_records_out_total",
                    lambda labels: labels["topic"].endswith("push.outcomes")),
                "gateway acks out": lambda s: total(s["gateway"],
                                                    "pushcascade_records_out_total"),
                "sink records in": lambda s: total(s["sink"], "pushcascade_records_in_total"),
            }
            gauges = {("sink", "pushcascade_consumer_lag"),  # per partition, every 5-10 s
                      ("worker", "pushcascade_consumer_lag"),
                      ("dispatch", "pushcascade_consumer_lag"),
                      ("worker", "pushcascade_deadline_overdue_seconds")}
            end, moved, shown = time.monotonic() + 90, set(), set()
            while moved != set(checks) or shown != set(gauges):
                for proc in procs:
                    proc.check()
                assert time.monotonic() < end, \
                    f"did not move: {set(checks) - moved}; missing: {set(gauges) - shown}"
                now = {name: scrape(scraped[name]) for name in before}
                moved = {what for what, f in checks.items() if f(now) > f(before)}
                shown = {(svc, g) for svc, g in gauges if any(n == g for n, _ in now[svc])}
                time.sleep(0.5)
            for name in ("worker", "dispatch", "sink", "gateway"):  # assigned, recovered
                for probe in ("healthz", "readyz"):
                    url = f"http://127.0.0.1:{ports[name]}/{probe}"
                    try:
                        with urllib.request.urlopen(url, timeout=10) as answer:
                            assert answer.status == 200, (name, probe)
                    except OSError as exc:
                        raise AssertionError(f"{name} /{probe}: {exc}") from exc
        finally:
            for proc in reversed(procs):
                proc.stop(8)

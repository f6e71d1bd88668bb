"""`pushcascade demo --rehearse`: the router's own handlers against a population on a
simulated clock, its records in ClickHouse (chDB) scored as a run's are."""

from __future__ import annotations

import json
import os
from collections import Counter

from connectors.clickhouse.priors import bucket_seconds
from connectors.clickhouse.warehouse import open_warehouse
from streams.cli.demo import REACH_WINDOW, score
from streams.harness import rehearsal
from streams.harness.bound import bound
from streams.harness.crowd import Crowd
from streams.harness.loop import DEMO_TUNING
from streams.harness.rehearsal import ANCHOR, Rehearsal, anchored, store
from streams.router import router_config
from streams.settings import Settings
from tests.helpers import run_cli

START = 1_790_000_000.0  # within the tables' TTL (400 days)


def played(strategy: str, crowd: Crowd, rate: float, duration: float) -> Rehearsal:
    """One strategy's rehearsal of the crowd with the demo's tuning, from START."""
    config = router_config(Settings(strategy=strategy, **DEMO_TUNING))
    return Rehearsal(crowd, config, rate, duration, start=START).run()


def test_a_rehearsal_plays_every_request_the_same_way_each_time_and_scores_from_clickhouse(
        tmp_path):
    crowd = Crowd.load()
    crowd.members = crowd.members[:20]
    first, again = played("adaptive", crowd, 4.0, 30.0), played("adaptive", crowd, 4.0, 30.0)
    assert first.records == again.records  # the same draws, the same decisions
    topics = Counter(topic for topic, _ in first.records)
    assert topics["push.requests"] == 120 and topics["push.acks"] > 0
    assert topics["push.escalations"] > 0 and topics["device.registry"] == sum(
        len(m.phones) for m in crowd.members)
    dsn = f"chdb://{tmp_path / 'chdb'}"
    store(first.records, dsn)
    warehouse = open_warehouse(dsn)
    figures = score(warehouse, crowd, 30.0, START, Settings().tuning.costs)
    assert figures["messages"] == 120
    stored = warehouse.rows("SELECT count() AS n FROM sends")[0]["n"]
    assert stored == topics["push.sends"]
    requested = {v["message_id"] for t, v in first.records if t == "push.requests"}
    reads = {v["message_id"] for t, v in first.records  # (a probe's READ is no message's)
             if t == "push.acks" and v["kind"] == "READ" and v["message_id"] in requested}
    assert figures["messages_read"] == len(reads)


def test_a_rehearsal_starts_at_an_anchor_not_at_the_second(monkeypatch):
    """A run starts at an anchor: every run within its 60 days plays exactly alike (the
    priors' buckets, aligned to the epoch, and the probes' ids, made from their time, used to
    change with the second a run started, and a run of the same seed ended with 78% to 100% of
    its phones on the right route)."""
    assert anchored(START) == anchored(START + 1.0) <= START < anchored(START) + ANCHOR
    assert all(anchored(START) % bucket_seconds(h) == 0 for h in (4.0, 10.0, 40.0, 120.0))
    crowd = Crowd.load()
    crowd.members = crowd.members[:20]
    config = router_config(Settings(strategy="adaptive", **DEMO_TUNING))
    runs = []
    for now in (START, START + 37.0):
        monkeypatch.setattr(rehearsal.time, "time", lambda now=now: now)
        runs.append(Rehearsal(crowd, config, 4.0, 30.0).run())
    assert runs[0].start == runs[1].start == anchored(START)
    assert runs[0].records == runs[1].records
    assert Rehearsal(crowd, config, 4.0, 30.0, start=START).run().records != runs[0].records


def test_blast_rehearsed_reaches_what_the_simulators_model_says():
    """blast sends everything at once: its reach within the window in a rehearsal (the
    population's draws per send) and in the bound's closed form (the same model, computed)
    agree within two points, on a population whose reads come near the window."""
    crowd = Crowd.load("slow-readers")
    run = played("blast", crowd, 24.0, 100.0)
    created = {v["message_id"]: v["created_at"] for t, v in run.records
               if t == "push.requests"}
    first_read: dict[str, int] = {}
    for topic, v in run.records:
        if topic == "push.acks" and v["kind"] == "READ":
            first_read[v["message_id"]] = min(first_read.get(v["message_id"], v["acked_at"]),
                                              v["acked_at"])
    reach = sum(first_read.get(m, created[m] + 10**9) - created[m] <= REACH_WINDOW * 1000
                for m in created) / len(created)
    model = bound(crowd, REACH_WINDOW).blast.reach
    assert abs(reach - model) < 0.02, (reach, model)


def test_the_demo_rehearses_every_strategy_and_writes_the_figures_and_the_report(tmp_path):
    result = run_cli("demo", "--rehearse", "--accounts", "30", "--rate", "6", "--duration",
                     "20", "--strategy", "blast", "--strategy", "adaptive", "--seeds", "2",
                     cwd=tmp_path, timeout=300, env={
                         k: v for k, v in os.environ.items()
                         if not k.startswith(("PUSHCASCADE_", "CLICKHOUSE_"))})
    assert result.returncode == 0, result.stderr[-3000:]
    figures = json.loads((tmp_path / "var" / "demo" / "figures.json").read_text())
    assert [(r["strategy"], r["seed"], r["rehearsed"]) for r in figures["runs"]] == [
        ("blast", 7, True), ("adaptive", 7, True), ("blast", 8, True), ("adaptive", 8, True)]
    assert all(r["messages"] == 120 for r in figures["runs"])
    assert {c["check"].split(" ")[0] for c in figures["checks"]} >= {"adaptive"}
    assert (tmp_path / "var" / "report.html").stat().st_size > 10_000
    assert "verify" not in result.stdout  # nothing to verify: no topics

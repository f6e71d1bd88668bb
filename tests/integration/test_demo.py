"""`pushcascade demo` runs the whole loop under load on a population and scores it from
ClickHouse; nothing is left running."""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

import pytest

from streams.harness.crowd import Crowd
from streams.harness.loop import DEMO_TUNING
from streams.kafka import admin
from streams.settings import Settings
from tests.helpers import read_topic, run_cli

ACCOUNTS, RATE, DURATION = 12, 3.0, 12.0


def demo_settings(broker, settings: Settings, strategy: str) -> Settings:
    """The settings of one demo run's topics: its prefix extends this test's prefix."""
    mine = f"{settings.tuning.topic_prefix}demo-{strategy}-"
    names = admin(broker.bootstrap).list_topics(timeout=10).topics
    (prefix,) = {n[:-len("push.requests")] for n in names
                 if n.startswith(mine) and n.endswith(".push.requests")}
    return Settings(kafka_bootstrap_servers=broker.bootstrap, topic_prefix=prefix)


def running_in(folder: Path) -> list[int]:
    """Pids of processes whose working directory is inside folder."""
    pids = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and Path(os.readlink(entry / "cwd")).is_relative_to(folder):
                pids.append(int(entry.name))
        except OSError:
            continue
    return pids


def test_the_demo_runs_the_loop_under_load_and_scores_it_from_clickhouse(broker, settings, env,
                                                                         tmp_path):
    result = run_cli("demo", "--accounts", str(ACCOUNTS), "--rate", str(RATE), "--duration",
                     str(DURATION), "--strategy", "adaptive", env=env, timeout=400, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert running_in(tmp_path) == []  # every service stopped
    figures = json.loads((tmp_path / "var" / "demo" / "figures.json").read_text())
    (run,) = figures["runs"]
    demo = demo_settings(broker, settings, "adaptive")
    requests = read_topic(demo, "push.requests")
    assert run["requests"] == len(requests) == int(RATE * DURATION)
    assert run["messages"] == len({(r["account_id"], r["message_id"]) for r in requests})
    members = {m.account_id: m for m in Crowd.load().members[:ACCOUNTS]}
    assert {r["account_id"] for r in requests} == set(members)
    index = {a: i for i, a in enumerate(members)}
    campaign = {r["message_id"] for r in requests if r["campaign_id"]}
    assert campaign and campaign == {  # every tenth account of each round after the first
        r["message_id"] for r in requests if index[r["account_id"]] % 10 == 0
        and not r["message_id"].endswith("-m0")}
    sends = read_topic(demo, "push.sends")
    assert {(s["account_id"], s["message_id"]) for s in sends} >= {
        (r["account_id"], r["message_id"]) for r in requests}
    reads = [a for a in read_topic(demo, "push.acks") if a["kind"] == "READ"]
    # people read only where their segment reads (never-readers never do)
    for ack in reads:
        segment = members[ack["account_id"]].segment
        assert ack["channel"] in {**segment.read, **(segment.later.read if segment.later
                                                     else {})}
    read_messages = {(a["account_id"], a["message_id"]) for a in reads}
    assert 0 < run["reach"] <= len(read_messages) / run["messages"]
    # reached in time: first read no later than the last channel send plus its read deadline
    last_send: dict[tuple[str, str], int] = {}
    for s in sends:
        if s["reason"] in ("FANOUT", "PRIMARY", "ESCALATION"):
            key = (s["account_id"], s["message_id"])
            last_send[key] = max(last_send.get(key, 0), s["sent_at"])
    first_read: dict[tuple[str, str], int] = {}
    for a in reads:
        key = (a["account_id"], a["message_id"])
        first_read[key] = min(first_read.get(key, a["acked_at"]), a["acked_at"])
    deadline_ms = {(r["account_id"], r["message_id"]):
                   int(DEMO_TUNING[f"read_deadline_{r['importance'].lower()}"] * 1000)
                   for r in requests}
    in_time = sum(1 for key, at in first_read.items()
                  if key in last_send and at <= last_send[key] + deadline_ms[key])
    assert run["reach_in_time"] == round(in_time / run["messages"], 4)
    counted = Counter(s["reason"] for s in sends)
    assert run["sms_per_message"] == round(
        len({s["send_id"] for s in sends if s["channel"] == "SMS"}) / run["messages"], 3)
    assert counted["PRIMARY"] or counted["FANOUT"]
    assert "summary" in result.stderr and "from ClickHouse" in result.stderr
    # the run kept its promises: verify's table, 0 violations, among the demo's checks
    assert run["verify_violations"] == 0 and "adaptive: pushcascade verify" in result.stderr
    assert {"check": "adaptive: pushcascade verify found 0 violations of the promises",
            "holds": True} in figures["checks"]
    assert 'class="plotly-graph-div"' in (tmp_path / "var" / "report.html").read_text()


def test_the_demo_on_two_seeds_keeps_every_run_and_gives_means_and_intervals(env, tmp_path):
    result = run_cli("demo", "--accounts", "8", "--rate", "3", "--duration", "8", "--seeds",
                     "2", "--strategy", "adaptive", "--json-out", str(tmp_path / "f.json"),
                     env=env, timeout=400, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert running_in(tmp_path) == []
    figures = json.loads((tmp_path / "f.json").read_text())
    runs = figures["runs"]
    assert [(r["strategy"], r["seed"]) for r in runs] == [("adaptive", 7), ("adaptive", 8)]
    assert figures["seeds"] == [7, 8] and all(r["requests"] == 24 for r in runs)
    reach = figures["summary"]["adaptive"]["reach"]
    mean = (runs[0]["reach"] + runs[1]["reach"]) / 2
    assert reach["mean"] == pytest.approx(mean) and reach["n"] == 2
    assert reach["lo"] <= mean <= reach["hi"]
    assert reach["half"] == pytest.approx(12.706 * abs(runs[0]["reach"] - runs[1]["reach"]) / 2)
    for run in runs:  # cost: what the sends of the default costs add up to, per message read
        assert run["cost_per_message"] == pytest.approx(run["cost"] / run["messages"], abs=1e-6)
        if run["messages_read"]:
            assert run["cost_per_read"] == pytest.approx(run["cost"] / run["messages_read"],
                                                         abs=1e-6)
        # the segments share out the run's messages
        assert sum(s["messages"] for s in run["segments"].values()) == run["messages"]
    segments = {m.segment.name for m in Crowd.load().members[:8]}
    assert segments <= set(figures["segments"])
    assert "means over 2 seeds" in result.stderr and "per segment" in result.stderr
    # beside the checks, the oracle's bound on the same 8 accounts of each seed
    bound = figures["bound"]
    assert set(bound["segments"]) <= set(figures["segments"]) and bound["share"] == 0.98
    assert 0 < bound["sends"] <= bound["blast_sends"] and 0 < bound["ratio"] <= 1
    assert bound["reach"] == pytest.approx(0.98 * bound["blast_reach"])
    assert bound["sends"] <= bound["learner_sends"] <= bound["blast_sends"]  # it learns
    assert "the best possible" in result.stderr
    assert {"check": "adaptive: pushcascade verify found 0 violations of the promises over 2 "
            "runs", "holds": True} in figures["checks"]

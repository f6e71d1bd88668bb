"""`pushcascade demo` runs the closed loop (worker + simulated population): its records."""

from __future__ import annotations

from collections import Counter

from streams.harness import population
from streams.settings import Settings
from streams.topics import admin
from tests.helpers import read_topic, run_cli

USERS, ROUNDS = 8, 3


def demo_settings(broker, settings: Settings) -> Settings:
    """The settings of the demo's own topics: its prefix extends this test's prefix."""
    mine = settings.tuning.topic_prefix + "demo"
    names = admin(broker.bootstrap).list_topics(timeout=10).topics
    (prefix,) = {n[:-len("push.requests")] for n in names
                 if n.startswith(mine) and n.endswith(".push.requests")}
    return Settings(kafka_bootstrap_servers=broker.bootstrap, topic_prefix=prefix)


def test_demo_closed_loop(broker, settings, env, tmp_path):
    env = {**env, "CLICKHOUSE_DSN": f"chdb://{tmp_path / 'chdb'}"}
    result = run_cli("demo", "--users", str(USERS), "--rounds", str(ROUNDS), env=env,
                     timeout=300, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    demo = demo_settings(broker, settings)
    users = {u.account_id: u for u in population(USERS)}
    messages = {f"{a}-m{r}": a for a in users for r in range(ROUNDS)}
    requests = [r for r in read_topic(demo, "push.requests") if r["account_id"] in users]
    assert Counter(r["message_id"] for r in requests) == dict.fromkeys(messages, 1)
    sends = read_topic(demo, "push.sends")
    assert {r["message_id"] for r in sends if r["device_id"] is None} >= set(messages)
    acks = [a for a in read_topic(demo, "push.acks") if a["account_id"] in users]
    results = [r for r in read_topic(demo, "push.results") if r["account_id"] in users]
    reads = [r for r in results if r["status"] == "READ"]
    # the demo ends when the worker has processed every ack: each read message has one READ
    # (the acks came over HTTP: the simulator opened signed links, the gateway wrote them)
    assert sorted(r["message_id"] for r in reads) == sorted(
        {a["message_id"] for a in acks if a["kind"] == "READ" and a["message_id"] in messages})
    outcomes = read_topic(demo, "push.outcomes")
    assert {o["status"] for o in outcomes} <= {"ACCEPTED", "REJECTED", "FAILED"}
    assert sum(o["status"] == "ACCEPTED" for o in outcomes) > 0
    assert any(a["kind"] == "RECEIPT" for a in acks)
    # users read only where they read, and those who never read never do
    assert all(r["channel"] == users[r["account_id"]].reads_on for r in reads)
    wanted = [m for m, a in messages.items() if users[a].reads_on]
    assert wanted
    assert len({r["message_id"] for r in reads}) >= 0.8 * len(wanted)
    # the sink wrote every send to ClickHouse before the demo showed its rates and report
    assert "from ClickHouse" in result.stderr
    assert 'class="plotly-graph-div"' in (tmp_path / "var" / "report.html").read_text()

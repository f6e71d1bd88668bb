"""ClickHouse analytics through the real broker and chDB: migrations, sink, views, priors."""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest

from connectors.clickhouse.migrate import Migrator
from connectors.clickhouse.sink import Sink
from connectors.clickhouse.tables import TABLES, VIEWS
from connectors.settings import ConnectorSettings
from schemas import Codec
from streams.harness.bench.common import produce
from streams.harness.bench.events import mixed_events
from streams.harness.taps import Tap

pytestmark = pytest.mark.broker
DERIVED = ("ALIAS", "EPHEMERAL")  # column kinds that are not stored


def count(ch: Any, table: str, final: bool = True) -> int:
    """Rows of a table (FINAL: after deduplication on its key)."""
    return int(ch.query(f"SELECT count() FROM {table}{' FINAL' if final else ''}")
               .result_rows[0][0])


def counts(ch: Any, final: bool = True) -> dict[str, int]:
    """Rows of every event table."""
    return {t.name: count(ch, t.name, final) for t in TABLES.values()}


@contextmanager
def running_sink(settings: Any, ch: Any, group: str = "pushcascade.sink",
                 **config: Any) -> Iterator[Sink]:
    """A Sink consuming in a background thread until the block ends."""
    sink = Sink(settings, ConnectorSettings(**{"sink_flush_interval": 0.3, **config}), ch,
                group=group)
    stop = threading.Event()
    thread = threading.Thread(target=sink.run, args=(stop,), name="sink", daemon=True)
    thread.start()
    try:
        yield sink
    finally:
        stop.set()
        thread.join(30)
        assert not thread.is_alive(), "the sink did not stop"


def wait_rows(ch: Any, expected: dict[str, int], timeout: float = 60.0) -> dict[str, int]:
    """Wait until every table holds the expected rows (after FINAL)."""
    end = time.monotonic() + timeout
    while True:
        got = counts(ch)
        if all(got[t] >= n for t, n in expected.items()) or time.monotonic() > end:
            return got
        time.sleep(0.3)


def expected_rows(by_topic: dict[str, int]) -> dict[str, int]:
    """Rows per table for records per topic."""
    return {TABLES[topic].name: n for topic, n in by_topic.items()}


def assert_stored_as_in_python(ch: Any, records: list[tuple[str, bytes, bytes]]) -> None:
    """What ClickHouse decoded from the sink's Avro equals each table's row built in Python
    from the same records (nulls, enums, times, derived columns), Kafka coordinates apart."""
    from connectors.clickhouse.tables import row

    codec = Codec()
    for topic, table in TABLES.items():
        types = dict(ch.query("SELECT name, type FROM system.columns WHERE database = "
                              f"'pushcascade' AND table = '{table.name}'").result_rows)
        select = ", ".join(f"toUnixTimestamp64Milli({c})" if types[c].startswith("DateTime64")
                           else c for c in table.columns)
        stored = ch.query(f"SELECT {select} FROM {table.name} FINAL").result_rows
        built = [row(table, codec.decode(v, topic, table.record), topic, 0, 0)[:-3]
                 for t, _, v in records if t == topic]
        assert sorted(map(repr, stored)) == sorted(map(repr, built)), table.name


# -- migrations ---------------------------------------------------------------------------------


def test_migrations_from_empty_to_latest_then_nothing_and_the_schema_is_the_declared_one(
        tmp_path):
    dsn = f"chdb://{tmp_path / 'chdb'}"
    migrator = Migrator(dsn)
    assert [s.applied_at for s in migrator.status()] == [None] * len(migrator.migrations)
    assert [m.version for m in migrator.up()] == list(range(1, len(migrator.migrations) + 1))
    assert migrator.up() == []
    assert all(s.applied_at for s in migrator.status())

    rows = migrator.client.query(
        "SELECT table, name, default_kind FROM system.columns WHERE database = 'pushcascade' "
        "ORDER BY table, position").result_rows
    engines = dict(migrator.client.query(
        "SELECT name, engine FROM system.tables WHERE database = 'pushcascade'").result_rows)
    partition_keys = dict(migrator.client.query(
        "SELECT name, partition_key FROM system.tables WHERE database = 'pushcascade'")
        .result_rows)
    for table in TABLES.values():
        stored = [n for t, n, kind in rows if t == table.name and kind not in DERIVED]
        assert stored == list(table.all_columns), table.name
        inserted = {n for t, n, kind in rows if t == table.name and kind != "ALIAS"}
        assert set(table.insert_columns) <= inserted, table.name
        assert [n for t, n, k in rows if t == table.name and k == "ALIAS"] == ["event_time"]
        assert engines[table.name] == "ReplacingMergeTree", table.name
        day = table.day and table.rename.get(table.day, table.day)
        assert partition_keys[table.name] == (f"toDate({day})" if day else ""), table.name
    assert {n for n, e in engines.items() if e == "View"} == set(VIEWS)
    personal = {"phone", "wechat_openid", "email", "push_tokens", "title", "body"}
    assert not personal & {name for _, name, _ in rows}


def test_a_request_naming_more_devices_than_a_uint16_holds_saturates_and_does_not_wrap(
        warehouse):
    from connectors.clickhouse.tables import row

    n = 70_000  # a producer that skipped the caps; 70000 wrapped to 4464 before migration 0003
    warehouse.ch.command(
        "INSERT INTO requests (message_id, account_id, importance, read_action, link, "
        "campaign_id, device_ids, created_at, topic, partition, offset) SELECT 'm-many', "
        f"'a-many', 'HIGH', 'BUTTON', NULL, NULL, arrayMap(x -> toString(x), range({n})), "
        "now64(3), 'push.requests', 0, 0")
    stored = warehouse.ch.query("SELECT device_count FROM requests FINAL").result_rows
    assert stored == [(65535,)]
    record = {"message_id": "m-many", "account_id": "a-many", "importance": "HIGH",
              "read_action": "BUTTON", "link": None, "campaign_id": None,
              "device_ids": [str(i) for i in range(n)], "created_at": 0}
    assert row(TABLES["push.requests"], record, "push.requests", 0, 0)[6] == 65535


def test_an_applied_migration_that_changed_is_refused(tmp_path):
    dsn = f"chdb://{tmp_path / 'chdb'}"
    Migrator(dsn).up()
    first, *rest = Migrator(dsn).migrations
    changed = type(first)(first.version, first.name, first.sql + "\n-- edited\n")
    with pytest.raises(RuntimeError, match="changed after it was applied"):
        Migrator(dsn, migrations=[changed, *rest]).status()
    with pytest.raises(RuntimeError, match="does not know"):
        Migrator(dsn, migrations=[first]).status()


# -- the sink -----------------------------------------------------------------------------------


def test_replaying_the_same_records_twice_leaves_every_count_unchanged(
        settings, warehouse):
    records, by_topic = mixed_events(Codec(), 400)
    produce(settings, records)
    expected = expected_rows(by_topic)
    assert set(expected) == {t.name for t in TABLES.values()}
    with running_sink(settings, warehouse.ch):
        first = wait_rows(warehouse.ch, expected)
    assert first == expected
    assert_stored_as_in_python(warehouse.ch, records)
    raw_before = sum(counts(warehouse.ch, final=False).values())
    # a second sink group reads every record again from the beginning
    with running_sink(settings, warehouse.ch, "replay", sink_batch_rows=100) as again:
        group_end = time.monotonic() + 60
        while again.inserted < len(records) and time.monotonic() < group_end:
            time.sleep(0.2)
    assert again.inserted == len(records)
    assert sum(counts(warehouse.ch, final=False).values()) == raw_before + len(records)
    assert counts(warehouse.ch) == expected


def test_twenty_seconds_of_failing_inserts_lose_nothing_and_duplicate_nothing(
        settings, warehouse):
    codec = Codec()
    batches = [mixed_events(codec, 60, tag=f"b{i}") for i in range(12)]
    expected: dict[str, int] = {}
    for _, by_topic in batches:
        for table, n in expected_rows(by_topic).items():
            expected[table] = expected.get(table, 0) + n
    flowing = threading.Event()

    def keep_producing() -> None:  # events flow before, during and after the outage
        for records, _ in batches:
            produce(settings, records)
            flowing.set()
            time.sleep(2.5)

    producer = threading.Thread(target=keep_producing, daemon=True)
    from connectors.metrics import SINK_FAILURES

    failures_before = SINK_FAILURES._value.get()
    with running_sink(settings, warehouse.ch, sink_backoff=0.2, sink_backoff_max=2) as sink:
        producer.start()
        flowing.wait(30)
        time.sleep(1)
        for table in ("sends", "acks"):  # ClickHouse refuses every insert into them
            warehouse.ch.command(f"DETACH TABLE {table}")
        outage_end = time.monotonic() + 20
        paused_seen = False
        while time.monotonic() < outage_end:
            paused_seen |= sink.failures > 0
            time.sleep(0.2)
        for table in ("sends", "acks"):
            warehouse.ch.command(f"ATTACH TABLE {table}")
        producer.join(60)
        got = wait_rows(warehouse.ch, expected, timeout=90)
    assert paused_seen and SINK_FAILURES._value.get() - failures_before >= 3
    assert got == expected
    assert counts(warehouse.ch, final=False) == expected  # not even a raw duplicate


def test_undecodable_records_go_to_the_dead_letter_topic_and_the_sink_goes_on(
        settings, warehouse):
    records, by_topic = mixed_events(Codec(), 50)
    garbage = [("push.sends", b"acct", b"\x00\x00\x00\x00\x06\xff\xff"),
               ("push.acks", b"acct", b"not avro at all")]
    produce(settings, garbage + records)
    expected = expected_rows(by_topic)
    expected["dead_letters"] += len(garbage)  # the sink stores the letters it wrote, too
    with Tap(settings, "push.dlq") as dlq, running_sink(settings, warehouse.ch):
        got = wait_rows(warehouse.ch, expected)
        letters = [r for r in dlq.wait_for(lambda rs: len(rs) >= 7, timeout=30)
                   if r["error"] != "test"]
    assert got == expected
    reasons = {r["topic"].split(".", 1)[1]: r["error"] for r in letters}
    assert set(reasons) == {"push.sends", "push.acks"}
    assert "truncated or corrupt" in reasons["push.sends"]
    assert "bad magic byte" in reasons["push.acks"]


def test_a_row_clickhouse_refuses_goes_to_the_dead_letter_topic_and_its_batch_is_stored(
        settings, warehouse):
    from connectors.metrics import SINK_FAILURES
    from tests.helpers import request

    codec = Codec()
    records, by_topic = mixed_events(codec, 50)
    # Avro-valid, but outside ClickHouse's DateTime range (the tables' TTL takes toDateTime):
    # a request stamped in microseconds, one from before 1970; amid the batch, not at its ends
    now_us = int(time.time() * 1_000_000)
    refused = [("push.requests", b"r-1", codec.encode("PushRequest", dict(
                   request("refused-us", "r-1"), created_at=now_us))),
               ("push.requests", b"r-2", codec.encode("PushRequest", dict(
                   request("refused-1969", "r-2"), created_at=-86_400_000)))]
    produce(settings, records[:200] + refused[:1] + records[200:400] + refused[1:]
            + records[400:])
    expected = expected_rows(by_topic)
    expected["dead_letters"] += len(refused)  # the sink stores the letters it wrote, too
    failures_before = SINK_FAILURES._value.get()
    with Tap(settings, "push.dlq") as dlq, running_sink(settings, warehouse.ch) as sink:
        got = wait_rows(warehouse.ch, expected)
        letters = [r for r in dlq.wait_for(lambda rs: len(rs) >= 7, timeout=30)
                   if r["error"] != "test"]
        assert sink.failures == 0
    assert got == expected
    assert SINK_FAILURES._value.get() == failures_before  # never paused for them
    ids = {codec.decode(r["value"], "push.requests")["message_id"]: r for r in letters}
    assert set(ids) == {"refused-us", "refused-1969"}
    for letter in ids.values():
        assert letter["topic"] == settings.topic("push.requests")
        assert letter["error"].startswith("ClickHouse refused the row: Code: 321.")
        assert "VALUE_IS_OUT_OF_RANGE_OF_DATA_TYPE" in letter["error"]
    stored = {m for (m,) in warehouse.ch.query("SELECT message_id FROM requests").result_rows}
    assert not stored & set(ids)


def test_a_backfill_spanning_150_days_is_stored_whole(settings, warehouse):
    from connectors.metrics import SINK_FAILURES
    from tests.helpers import request

    codec = Codec()
    now = int(time.time() * 1000)
    day = 86_400_000
    records = [("push.requests", f"b-{i % 7}".encode(), codec.encode("PushRequest", dict(
        request(f"backfill-{i}", f"b-{i % 7}"), created_at=now - i * day)))
        for i in range(1, 151)]
    records.append(("push.requests", b"fresh", codec.encode("PushRequest",
                                                            request("fresh", "fresh"))))
    produce(settings, records)
    failures_before = SINK_FAILURES._value.get()
    # one batch holds all 151 (151 day partitions; ClickHouse takes 100 per INSERT)
    with running_sink(settings, warehouse.ch, sink_flush_interval=2.0) as sink:
        got = wait_rows(warehouse.ch, {"requests": 151})
        assert sink.failures == 0 and sink.dead_letters == 0
    assert got["requests"] == 151
    assert SINK_FAILURES._value.get() == failures_before
    partitions = warehouse.ch.query("SELECT uniqExact(partition) FROM system.parts WHERE "
                                    "database = 'pushcascade' AND table = 'requests' AND active")
    assert partitions.result_rows[0][0] == 151


# -- views and the priors loop, with the router and simulated devices -----------------------------


def test_the_fleet_prior_sends_a_new_device_to_the_route_that_works_and_views_match_state(
        settings, warehouse, workers, devices):
    """Twelve Xiaomi devices measure JPUSH (broken fleet-wide) and GETUI (works). Before the
    priors job a new Xiaomi device falls back on JPUSH, the first registered; after it, a new
    device falls back on GETUI at once, with none of its own probes answered. On the way, the
    per-device probe rates of the device_routes view equal the router's device state."""
    from connectors.clickhouse.priors import TOPIC, refresh
    from connectors.clickhouse.warehouse import Direct
    from connectors.serving import free_port
    from streams.harness import changelog_tap, latest, worker_env, worker_events
    from streams.kafka import producer as kafka_producer
    from tests.helpers import device, request
    from tests.integration.test_method_b import FAST_PROBES, ROUTES, app_only, device_sends

    fleet = {f"f-{i}": [f"f-{i}-d"] for i in range(12)}
    port = free_port()
    env = worker_env(settings, receipt_deadline=3, metrics_port=port, **FAST_PROBES)
    producer = app_only(settings, fleet)
    sim = devices(lambda s: s["reason"] == "PROBE" and s["route"] == "GETUI"
                  and s["account_id"].startswith("f-"))
    worker = workers(env)
    ch = warehouse.ch
    with running_sink(settings, ch):

        def fleet_rates() -> dict[str, tuple[int, int]]:
            rows = ch.query("SELECT route, sends, receipts FROM manufacturer_routes "
                            "WHERE manufacturer = 'Xiaomi'").result_rows
            return {r: (int(s), int(a)) for r, s, a in rows}

        end = time.monotonic() + 120
        while not (fleet_rates().get("JPUSH", (0, 0))[0] >= 40
                   and fleet_rates().get("GETUI", (0, 0))[1] >= 40):
            assert time.monotonic() < end, f"the fleet did not probe: {fleet_rates()}"
            for account, (d,) in fleet.items():  # a device event plans its due probes
                producer.send("device.registry", device(account, d, ROUTES))
            producer.flush()
            time.sleep(0.5)

        # the view's per-device rates equal the router's state for the same events
        sim.wait_quiet(workers=[worker])
        with changelog_tap(settings, "devices") as states:
            end = time.monotonic() + 60
            while True:
                states.poll(0.3)
                state = {(d, r): (s["stats"][r]["probes_total"],
                                  s["stats"][r]["probes_acked_total"])
                         for d, s in latest(states, "device_id").items() if d.startswith("f-")
                         for r in ("JPUSH", "GETUI")}
                view = {(d, r): (int(p), int(a)) for d, r, p, a in ch.query(
                    "SELECT device_id, route, probes, probes_acked FROM device_routes "
                    "WHERE startsWith(device_id, 'f-')").result_rows}
                if (state == view and len(view) == 24) or time.monotonic() > end:
                    break
        assert len(view) == 24 and state == view
        rates = dict(ch.query("SELECT (device_id, route), success_rate FROM device_routes "
                              "WHERE startsWith(device_id, 'f-')").result_rows)
        assert {k: acked / sent for k, (sent, acked) in state.items()} == rates
        assert {r for (_, route), r in rates.items() if route == "JPUSH"} == {0.0}

        def fallback_of_a_new_device(account: str) -> list[tuple[str, str, str, int]]:
            """Register a new Xiaomi device, push to it, and return its fallback sends."""
            producer.send("device.registry", device(account, f"{account}-d", ROUTES))
            producer.flush()
            producer.send("push.requests", request(f"{account}-m", account))
            producer.flush()
            sent = sim.wait_for(lambda rs: any(s[2] == "FALLBACK_ROUTE" for s in device_sends(
                rs, f"{account}-m")), timeout=60)
            return [s for s in device_sends(sent, f"{account}-m") if s[2] == "FALLBACK_ROUTE"]

        # before the priors job: a new Xiaomi device falls back on JPUSH (registration order)
        assert fallback_of_a_new_device("p-a") == [("p-a-d", "JPUSH", "FALLBACK_ROUTE", 1)]

        # the priors job: ClickHouse -> route.priors -> the router
        priors = refresh(Direct(ch, warehouse.dsn), kafka_producer(
            settings.connections.kafka_bootstrap_servers), Codec(), settings.topic(TOPIC), 30)
        by_route = {p.route: p for p in priors if p.model is None}
        assert by_route["JPUSH"].success_rate == 0.0
        assert by_route["GETUI"].success_rate > 0.9  # p-a-d, unanswered, probed it too
        end = time.monotonic() + 30
        while worker_events(port).get(("router", "route_prior"), 0) < len(priors):
            assert time.monotonic() < end, "the router did not read the priors"
            time.sleep(0.2)

        # after it: a new Xiaomi device falls back on GETUI, the route the fleet receives on
        assert fallback_of_a_new_device("p-b") == [("p-b-d", "GETUI", "FALLBACK_ROUTE", 1)]


# -- the commands, with the sink owning the embedded store -----------------------------------------


def test_analysts_query_report_and_compute_priors_while_the_sink_owns_chdb(
        settings, tmp_path):
    import shutil
    import subprocess

    from connectors.serving import free_port
    from streams.harness import start_python, worker_env

    dsn = f"chdb://{tmp_path / 'store'}"
    env = {**worker_env(settings, sql_port=free_port(), sink_flush_interval=0.3),
           "CLICKHOUSE_DSN": dsn}
    records, by_topic = mixed_events(Codec(), 300)
    produce(settings, records)

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "streams.cli", *args], env=env, text=True,
                              capture_output=True, timeout=120, cwd=tmp_path)

    sink = start_python("streams.cli", "sink", env=env, workdir=tmp_path, name="sink")
    try:
        end = time.monotonic() + 90
        while not (tmp_path / "store" / "pushcascade-sql.json").exists():  # announced
            sink.check()
            assert time.monotonic() < end, sink.tail()
            time.sleep(0.2)
        while True:
            sink.check()
            done = cli("sql", "SELECT count() FROM sends FINAL", "--format", "csv")
            if done.returncode == 0 and done.stdout.strip().endswith(str(by_topic["push.sends"])):
                break
            assert time.monotonic() < end, (done.stdout, done.stderr, sink.tail())
            time.sleep(0.5)
        pretty = cli("sql", "SELECT channel, sum(sends) AS sends FROM channel_hourly "
                            "GROUP BY channel ORDER BY channel")
        assert pretty.returncode == 0 and "channel" in pretty.stdout and "SMS" in pretty.stdout
        refused = cli("sql", "DROP TABLE sends")
        assert refused.returncode != 0 and "read-only" in refused.stderr
        assert cli("sql", "SELECT 1; DROP TABLE sends").returncode != 0
        for attack in ("SELECT 'x --';\nDROP TABLE sends",
                       "SELECT * FROM file('/proc/self/environ', 'LineAsString')"):
            refused = cli("sql", attack)
            assert refused.returncode != 0 and "PUSHCASCADE_ACK_KEYS" not in refused.stdout
        owner = json.loads((tmp_path / "store" / "pushcascade-sql.json").read_text())
        assert (tmp_path / "store" / "pushcascade-sql.json").stat().st_mode & 0o077 == 0
        bare = httpx.post(f"{owner['url']}/query", content="SELECT count() FROM sends")
        assert bare.status_code == 401  # the endpoint needs the owner file's token
        assert cli("sql", "SELECT count() FROM sends FINAL", "--format", "csv").stdout.endswith(
            f"{by_topic['push.sends']}\n")  # the table is still there
        assert cli("migrate", "list").returncode != 0  # the store is the sink's while it runs

        priors = cli("priors", "--dry-run", "--min-samples", "10")
        assert priors.returncode == 0, priors.stderr
        assert "xiaomi" in priors.stdout and "JPUSH" in priors.stdout

        page, png = tmp_path / "report.html", tmp_path / "report.png"
        args = ["report", "--out", str(page)]
        if shutil.which("chromium"):
            args += ["--screenshot", str(png)]
        made = cli(*args)
        assert made.returncode == 0, made.stderr
        text = page.read_text()
        assert text.count('class="plotly-graph-div"') >= 5  # channels, routes, read time, ...
        assert "Which campaigns triggered fallback?" in text
        if shutil.which("chromium"):
            assert png.stat().st_size > 50_000
    finally:
        sink.stop()
    assert sink.returncode == 0, sink.tail()
    assert not (tmp_path / "store" / "pushcascade-sql.json").exists()


def readme_queries() -> list[str]:
    """The SQL blocks of the README's example queries."""
    import re
    from pathlib import Path

    text = (Path(__file__).parents[2] / "README.md").read_text()
    section = text.split("### Example queries", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```sql\n(.*?)```", section, re.S)


def test_the_readme_example_queries_answer_on_a_filled_warehouse(settings, warehouse):
    from connectors.clickhouse.warehouse import Direct

    queries = readme_queries()
    assert len(queries) == 5
    records, by_topic = mixed_events(Codec(), 300)
    produce(settings, records)
    with running_sink(settings, warehouse.ch):
        wait_rows(warehouse.ch, expected_rows(by_topic))
    analyst = Direct(warehouse.ch, warehouse.dsn)
    answers = [analyst.rows(q) for q in queries]
    assert all(answers), [q for q, a in zip(queries, answers, strict=True) if not a]
    fallback_to = answers[0][0]
    assert fallback_to["route"] != "XIAOMI" and fallback_to["sends"] > 0
    assert answers[1][0]["sms"] == by_topic["push.sends"] // 4  # every other escalation is SMS
    assert {r["campaign_id"] for r in answers[2]} == {"mix-k0", "mix-k100", "mix-k200"}


def test_up_runs_the_sink_so_what_is_sent_can_be_queried(env, tmp_path):
    import json
    import signal

    from connectors.serving import free_port
    from streams.harness import Process
    from tests.helpers import device, run_cli

    env = {**env, "CLICKHOUSE_DSN": f"chdb://{tmp_path / 'store'}",
           "PUSHCASCADE_SQL_PORT": str(free_port()),
           "PUSHCASCADE_SINK_FLUSH_INTERVAL": "0.3"}
    up = Process([sys.executable, "-m", "streams.cli", "up"], env, tmp_path / "up.log", "up",
                 cwd=tmp_path)
    try:
        end = time.monotonic() + 120
        while not (tmp_path / "store" / "pushcascade-sql.json").exists():
            up.check()
            assert time.monotonic() < end, up.tail()
            time.sleep(0.2)
        registration = device("u-1", "u-1-d", ["HUAWEI", "FCM"], manufacturer="Huawei")
        sent = run_cli("send", "--topic", "device.registry", env=env, cwd=tmp_path,
                       stdin=json.dumps(registration) + "\n")
        assert sent.returncode == 0, sent.stderr
        while True:
            got = run_cli("sql", "SELECT manufacturer, routes FROM devices FINAL", "--format",
                          "csv", env=env, cwd=tmp_path)
            if '"Huawei"' in got.stdout:
                break
            assert time.monotonic() < end, (got.stdout, got.stderr, up.tail())
            time.sleep(0.5)
        assert "push_tokens" not in got.stdout and "HUAWEI" in got.stdout
        # the whole loop runs: a push request becomes a send the dispatcher hands to a provider
        profile = {"account_id": "u-1", "phone": "+8613800000000", "wechat_openid": None,
                   "email": None, "updated_at": int(time.time() * 1000)}
        push = {"message_id": "m-up", "account_id": "u-1", "importance": "HIGH", "title": "t",
                "body": "b", "read_action": "BUTTON", "link": None, "campaign_id": None,
                "device_ids": [], "created_at": int(time.time() * 1000)}
        for topic, record in (("account.profiles", profile), ("push.requests", push)):
            sent = run_cli("send", "--topic", topic, env=env, cwd=tmp_path,
                           stdin=json.dumps(record) + "\n")
            assert sent.returncode == 0, sent.stderr
        end = time.monotonic() + 60
        while True:
            got = run_cli("sql", "SELECT count() AS n FROM outcomes FINAL WHERE message_id = "
                          "'m-up'", "--format", "csv", env=env, cwd=tmp_path)
            if got.stdout.strip().splitlines()[-1:] not in (['"n"'], ["0"], []):
                break
            assert time.monotonic() < end, (got.stdout, got.stderr, up.tail())
            time.sleep(0.5)
        up.popen.send_signal(signal.SIGINT)
        assert up.popen.wait(30) == 0, up.tail()
    finally:
        up.stop()

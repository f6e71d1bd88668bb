"""ClickHouse analytics through the real broker and chDB: migrations, sink, views, priors."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

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
    for table in TABLES.values():
        stored = [name for t, name, kind in rows if t == table.name and kind != "ALIAS"]
        assert stored == list(table.all_columns), table.name
        assert [n for t, n, k in rows if t == table.name and k == "ALIAS"] == ["event_time"]
        assert engines[table.name] == "ReplacingMergeTree", table.name
    assert {n for n, e in engines.items() if e == "View"} == set(VIEWS)
    personal = {"phone", "wechat_openid", "email", "push_tokens", "title", "body"}
    assert not personal & {name for _, name, _ in rows}


def test_an_applied_migration_that_changed_is_refused(tmp_path):
    dsn = f"chdb://{tmp_path / 'chdb'}"
    Migrator(dsn).up()
    first, *rest = Migrator(dsn).migrations
    changed = type(first)(first.version, first.name, first.sql + "\n-- edited\n")
    with pytest.raises(RuntimeError, match="changed after it was applied"):
        Migrator(dsn, [changed, *rest]).status()
    with pytest.raises(RuntimeError, match="does not know"):
        Migrator(dsn, [first]).status()


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

"""The quality figures' SQL on a real chDB store: cost per message and per read, the
per-account sums of the segment breakdown, and the pushes the movers are scored on."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from connectors.clickhouse.quality import measure, per_account, pushes

COSTS = {"APP": 0.0, "WECHAT": 0.005, "EMAIL": 0.001, "SMS": 0.05}
#: An hour ago (the tables' TTL drops rows older than 400 days).
T0 = (datetime.now(UTC) - timedelta(hours=1)).strftime("%Y-%m-%d %H:%M:%S.000")


def at(ms: int) -> str:
    """A timestamp ms after T0."""
    return f"addMilliseconds(toDateTime64('{T0}', 3, 'UTC'), {ms})"


@pytest.fixture(scope="module")
def stored(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """Three messages of two accounts: a read after a device APP send and a WeChat send; an
    SMS escalation read late; one never read. Plus a probe and an account-level APP record,
    which cost nothing here whatever APP costs. One store for the module (chDB opens one
    directory per process)."""
    from connectors.clickhouse.client import client, database
    from connectors.clickhouse.migrate import Migrator

    dsn = f"chdb://{tmp_path_factory.mktemp('quality') / 'chdb'}"
    Migrator(dsn).up()
    ch = client(dsn, database(dsn))
    requests = [("a", "a-m0", 0), ("a", "a-m1", 20_000), ("b", "b-m0", 1_000)]
    for account, message, ms in requests:
        ch.command("INSERT INTO requests (message_id, account_id, importance, read_action, "
                   "campaign_id, created_at, topic, partition, offset) SELECT "
                   f"'{message}', '{account}', 'NORMAL', 'LINK', NULL, {at(ms)}, 't', 0, 0")
    sends = [  # send_id, message, account, channel, device, reason, ms
        ("s1", "a-m0", "a", "APP", "", "FANOUT", 10),            # account-level APP record
        ("s2", "a-m0", "a", "APP", "a-d0", "ORIGINAL_ROUTE", 20),
        ("s3", "a-m0", "a", "WECHAT", "", "FANOUT", 10),
        ("s4", "a-m0", "a", "APP", "a-d0", "PROBE", 30),          # a probe
        ("s5", "a-m1", "a", "WECHAT", "", "PRIMARY", 20_010),
        ("s6", "a-m1", "a", "SMS", "", "ESCALATION", 23_010),
        ("s7", "b-m0", "b", "SMS", "", "PRIMARY", 1_010),
    ]
    for send_id, message, account, channel, device, reason, ms in sends:
        ch.command("INSERT INTO sends (send_id, message_id, account_id, channel, device_id, "
                   "route, reason, attempt, importance, sent_at, topic, partition, offset) "
                   f"SELECT '{send_id}', '{message}', '{account}', '{channel}', '{device}', '', "
                   f"'{reason}', 1, 'NORMAL', {at(ms)}, 't', 0, 0")
    for message, account, channel, ms in (("a-m0", "a", "WECHAT", 2_000),
                                          ("a-m1", "a", "SMS", 32_000)):
        ch.command("INSERT INTO acks (message_id, account_id, channel, kind, device_id, route, "
                   "send_id, acked_at, topic, partition, offset) SELECT "
                   f"'{message}', '{account}', '{channel}', 'READ', '', '', '', {at(ms)}, "
                   "'t', 0, 0")

    def rows(sql: str) -> list[dict[str, Any]]:
        result = ch.query(sql)
        return [dict(zip(result.column_names, r, strict=True)) for r in result.result_rows]

    rows.ch = ch  # type: ignore[attr-defined]  # for a test that adds its own rows
    yield rows
    ch.close()


def test_cost_per_message_and_per_read_count_the_sends_that_reach_someone(stored) -> None:
    figures = measure(stored, 10.0, {"NORMAL": 3.0}, COSTS)
    # deliveries: the device APP send, two WeChat, two SMS (no probe, no account APP record)
    assert figures["sends_per_message"] == round(5 / 3, 3)
    cost = 2 * 0.005 + 2 * 0.05
    assert figures["cost"] == pytest.approx(cost)
    assert figures["messages_read"] == 2 and figures["reach"] == round(1 / 3, 4)
    assert figures["cost_per_message"] == pytest.approx(round(cost / 3, 6))
    assert figures["cost_per_read"] == pytest.approx(round(cost / 2, 6))
    # the account-level APP record and the probe never cost: even at an APP cost of 1 only
    # the device's APP send counts
    dear = measure(stored, 10.0, {"NORMAL": 3.0}, {**COSTS, "APP": 1.0})
    assert dear["cost"] == pytest.approx(cost + 1.0)
    assert measure(stored, 10.0, {"NORMAL": 3.0})["cost"] == 0  # no costs given


def test_per_account_sums_are_what_the_segments_add_up(stored) -> None:
    got = per_account(stored, 10.0, COSTS)
    assert got["a"] == {"messages": 2, "reached": 1, "sms": 1, "deliveries": 4,
                        "cost": pytest.approx(0.06)}
    assert got["b"] == {"messages": 1, "reached": 0, "sms": 1, "deliveries": 1,
                        "cost": pytest.approx(0.05)}
    whole = measure(stored, 10.0, {"NORMAL": 3.0}, COSTS)
    assert sum(r["cost"] for r in got.values()) == pytest.approx(whole["cost"])


def test_pushes_give_each_request_time_and_each_primary_channel(stored) -> None:
    requested, primaries = pushes(stored)
    base = requested["b"][0][0] - 1_000
    assert sorted((t - base, m) for t, m in requested["a"]) == [(0, "a-m0"), (20_000, "a-m1")]
    assert primaries == {"a": {"a-m1": "WECHAT"}, "b": {"b-m0": "SMS"}}


def test_route_priors_of_a_window_count_only_its_sends(stored) -> None:
    """A route that failed long ago (an outage) but delivers now: the fleet's rate over a
    window counts only the recent sends, all history counts both. (Last in the module: it adds
    APP sends with routes, which the figures above do not expect.)"""
    from connectors.clickhouse.priors import bucket_seconds, fleet_rates

    ch = stored.ch
    ch.command("INSERT INTO devices (device_id, account_id, manufacturer, model, routes, active, "
               "registered_at, topic, partition, offset) SELECT 'w-d1', 'w', 'Xiaomi', 'Mi 13', "
               "['XIAOMI', 'JPUSH'], true, now64(3) - toIntervalSecond(2000), 't', 0, 0")
    sends = [(f"old{i}", 1000, False) for i in range(4)] + [
        (f"new{i}", 100, True) for i in range(3)] + [("newest", 10, False)]
    for send_id, ago, received in sends:
        ch.command("INSERT INTO sends (send_id, message_id, account_id, channel, device_id, "
                   "route, reason, attempt, importance, sent_at, topic, partition, offset) "
                   f"SELECT '{send_id}', '{send_id}', 'w', 'APP', 'w-d1', 'JPUSH', "
                   f"'FALLBACK_ROUTE', 1, 'NORMAL', now64(3) - toIntervalSecond({ago}), "
                   "'t', 0, 0")
        if received:
            ch.command("INSERT INTO acks (message_id, account_id, channel, kind, device_id, "
                       "route, send_id, acked_at, topic, partition, offset) SELECT "
                       f"'{send_id}', 'w', 'APP', 'RECEIPT', 'w-d1', 'JPUSH', '{send_id}', "
                       f"now64(3) - toIntervalSecond({ago - 1}), 't', 0, 0")

    class Store:
        rows = staticmethod(stored)

    def jpush(window: float, pending: float = 0.0) -> tuple[int, int]:
        [rate] = [(r.sends, r.receipts) for r in fleet_rates(Store(), window, pending)
                  if r.route == "JPUSH"]
        return rate

    assert jpush(0) == (8, 3)  # all history: 3 of 8
    assert jpush(200, 50) == (3, 3)  # sent 250..50 s ago: the recent three, not the newest
    assert jpush(0, 50) == (7, 3)  # all but the newest, whose receipt may still come
    by_age: dict[int, tuple[int, int]] = {}  # per time bucket of a 40 s half-life (10 s)
    now = time.time()
    for r in fleet_rates(Store(), 0, 0, half_life=40):
        if r.route == "JPUSH":
            age = round((now - r.at) / 100) * 100  # the bucket's middle: within 6 s of the sends
            sends, receipts = by_age.get(age, (0, 0))
            by_age[age] = (sends + r.sends, receipts + r.receipts)
    assert by_age == {1000: (4, 0), 100: (3, 3), 0: (1, 0)}
    # buckets: a quarter of the half-life, at least 1 s and 1/BUCKETS of the window
    assert (bucket_seconds(40), bucket_seconds(2), bucket_seconds(600, 86400)) == (10, 1, 432)


def test_route_priors_wait_for_receipts_that_come_late_under_load(stored) -> None:
    """Receipts that come 5 s after their sends (a loaded pipeline; the receipt deadline is
    2 s): the send of 3 s ago is left out while its receipt may still come, not counted as a
    failure; the warehouse's newest send, not the clock, is when "now" is. (After the test
    above: it adds sends of its own route.)"""
    from connectors.clickhouse.priors import fleet_rates, settled

    ch = stored.ch
    ch.command("INSERT INTO devices (device_id, account_id, manufacturer, model, routes, active, "
               "registered_at, topic, partition, offset) SELECT 'l-d1', 'l', 'Huawei', 'P60', "
               "['HUAWEI', 'GETUI'], true, now64(3) - toIntervalSecond(2000), 't', 0, 0")
    for send_id, ago, receipt_ago in (("l0", 30, 25), ("l1", 20, 15), ("l2", 3, None)):
        ch.command("INSERT INTO sends (send_id, message_id, account_id, channel, device_id, "
                   "route, reason, attempt, importance, sent_at, topic, partition, offset) "
                   f"SELECT '{send_id}', '{send_id}', 'l', 'APP', 'l-d1', 'GETUI', "
                   f"'FALLBACK_ROUTE', 1, 'NORMAL', now64(3) - toIntervalSecond({ago}), "
                   "'t', 0, 0")
        if receipt_ago is not None:
            ch.command("INSERT INTO acks (message_id, account_id, channel, kind, device_id, "
                       "route, send_id, acked_at, topic, partition, offset) SELECT "
                       f"'{send_id}', 'l', 'APP', 'RECEIPT', 'l-d1', 'GETUI', '{send_id}', "
                       f"now64(3) - toIntervalSecond({receipt_ago}), 't', 0, 0")

    class Store:
        rows = staticmethod(stored)

    def getui(window: float, pending: float) -> tuple[int, int]:
        return next((r.sends, r.receipts) for r in fleet_rates(Store(), window, pending)
                    if r.route == "GETUI")

    cut = settled(Store(), 2.0)
    assert cut is not None and time.time() - 8.5 < cut < time.time() - 7.5  # newest - 5 s
    assert getui(0, 2.0) == (2, 2)  # the send of 3 s ago waits for its receipt
    assert getui(60, 2.0) == (2, 2)
    assert getui(0, 0) == (3, 2)  # without a wait, all of them
    assert settled(Store(), 30.0) == pytest.approx(cut - 25.0, abs=0.5)  # pending is the least

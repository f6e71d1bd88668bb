"""adaptive's read habits, pure: the timing sketch, late readers, read rates and when a send
counts, and the next send planned from them."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streams.domain import escalation as esc
from streams.domain.channels import (
    ESTABLISHED,
    PENDING,
    Account,
    ChannelPolicy,
    Message,
    channel_cost,
    next_send,
    note_send,
    plan_push,
    record_read,
    settle,
    timing,
)
from tests.unit.partition import THRIFTY

delays = st.lists(st.floats(0, 1e5, allow_nan=False), min_size=1, max_size=40)


# -- the sketch ----------------------------------------------------------------------------------


def test_the_sketch_keeps_the_newest_delays_rounded_to_ms_and_never_negative() -> None:
    kept: list[float] = []
    for d in [-1.0, *range(1, 12), 2.00049]:
        esc.remember_delay(kept, d)
    assert len(kept) == esc.RECENT_DELAYS
    assert kept == [5, 6, 7, 8, 9, 10, 11, 2.0]
    one: list[float] = []
    esc.remember_delay(one, -3)
    assert one == [0.0]


def test_a_late_reader_is_known_by_its_first_read() -> None:
    """One read well after the deadline already tells a late reader (its channels then go out
    together); one just past it may be the path's own delay under load, until MIN_READS."""
    assert esc.late([1800], 600)
    assert esc.late([1300, 2000], 600)
    assert esc.late([500, 900, 1000, 1100, 1200], 600)  # 1 in 5 within
    assert not esc.late([500, 550, 1000, 1100], 600)  # 2 in 4 within
    assert not esc.late([100], 600) and not esc.late([100, 1800], 600)
    assert not esc.late([900], 600)
    assert esc.late([900] * esc.MIN_READS, 600)
    assert not esc.late([], 600)


@given(delays, st.floats(0.001, 1e5), st.floats(0, 1e4))
def test_late_is_the_share_of_reads_past_the_bar_and_slower_reads_stay_late(
        values, deadline, slower) -> None:
    bar = deadline if len(values) >= esc.MIN_READS else deadline * esc.EARLY_LATE
    assert esc.late(values, deadline) == (sum(v <= bar for v in values) / len(values) < esc.LATE)
    if esc.late(values, deadline):
        assert esc.late([v + slower for v in values], deadline)


# -- read rates and what silence says ------------------------------------------------------------


def test_read_rate_starts_at_a_coin_toss_and_follows_the_counts() -> None:
    assert esc.read_rate(None) == 0.5
    assert esc.read_rate([9, 10]) == pytest.approx(10 / 12)
    assert esc.read_rate([0, 30]) == pytest.approx(1 / 32)
    assert esc.read_rate([5, 3]) == 1.0  # reads beyond sends (a repeat path) stay a probability


def test_counts_are_halved_once_the_sends_reach_the_bound() -> None:
    counts: dict[str, list[float]] = {}
    for _ in range(int(esc.HALVE_AT) - 1):
        esc.count(counts, "SMS", 1, 1)
    assert counts["SMS"] == [esc.HALVE_AT - 1] * 2
    esc.count(counts, "SMS", 0, 1)
    assert counts["SMS"] == [(esc.HALVE_AT - 1) / 2, esc.HALVE_AT / 2]


# -- wired into the account and message ----------------------------------------------------------


def reader(delay: float, reads: int = 5, channel: str = "WECHAT") -> Account:
    """An established WeChat reader who read `reads` messages, each `delay` s after its send."""
    acc = Account("a1", lifecycle=ESTABLISHED, pushes=10, addresses=["WECHAT", "SMS"],
                  decayed={channel: 10.0})
    policy = ChannelPolicy(strategy="adaptive")
    for i in range(reads):
        m = Message(f"m{i}", "a1", "NORMAL", 0, sent=[channel], created_at=100.0 * i)
        note_send(acc, m, channel, 100.0 * i, settles_at=100.0 * i + 50)
        record_read(acc, m, channel, policy, now=100.0 * i + delay)
    return acc


def test_reads_teach_the_accounts_delays_and_rates() -> None:
    acc = reader(2.0)
    assert acc.delays["WECHAT"] == [2.0] * 5
    assert acc.counts["WECHAT"] == [5.0, 5.0]  # each send counted with its read
    assert acc.pending == []
    m = Message("late", "a1", "NORMAL", 0, sent=["WECHAT"])
    record_read(acc, m, "WECHAT", ChannelPolicy(strategy="adaptive"), now=5.0)
    assert acc.delays["WECHAT"] == [2.0] * 5  # no send time known: no delay learnt
    assert acc.counts["WECHAT"] == [6.0, 5.0]  # a read of a send counted before


def test_a_send_counts_once_its_outcome_is_known() -> None:
    """A send counts with its read, or unread once its read window passed: counted at once, a
    slow reader's sends would outnumber its reads still to come, and its rates look low."""
    acc = Account("a1", addresses=["SMS", "WECHAT"])
    m = Message("m1", "a1", "NORMAL", 0, sent=["SMS", "WECHAT"])
    note_send(acc, m, "SMS", 0.0, settles_at=10.0)
    note_send(acc, m, "WECHAT", 0.0, settles_at=10.0)
    note_send(acc, m, "SMS", 1.0, settles_at=10.0)  # a repeat: its first time is kept
    assert m.sent_at == {"SMS": 0.0, "WECHAT": 0.0}
    settle(acc, 9.999)
    assert acc.counts == {} and len(acc.pending) == 3
    record_read(acc, m, "SMS", ChannelPolicy(strategy="adaptive"), now=9.0)
    assert acc.counts == {"SMS": [1.0, 1.0]}
    settle(acc, 10.0)
    assert acc.counts == {"SMS": [1.0, 2.0], "WECHAT": [0.0, 1.0]} and acc.pending == []
    record_read(acc, m, "WECHAT", ChannelPolicy(strategy="adaptive"), now=12.0)
    assert acc.counts["WECHAT"] == [1.0, 1.0]  # read after its window: the read alone
    for i in range(PENDING + 2):  # many sends in one window: the oldest count unread early
        note_send(acc, Message(f"n{i}", "a1", "NORMAL", 0), "SMS", 20.0, settles_at=100.0 + i)
    assert len(acc.pending) == PENDING and acc.pending[0][0] == "n2"
    assert acc.counts["SMS"] == [1.0, 4.0]
    seed = Message("m2", "a1", "NORMAL", 0, sent=["SMS"])
    note_send(acc, seed, "SMS", 20.0)  # not learning (the other strategies)
    assert len(acc.pending) == PENDING and seed.sent_at == {"SMS": 20.0}


def test_a_fast_readers_silence_escalates_after_its_own_reads_a_slow_readers_at_once() -> None:
    """A WeChat reader who reads at 100 s of a 600 s HIGH deadline, a HIGH push to be read
    within 720 s: SMS waits while the WeChat read may still come and an SMS would still be
    read in time (not at once, not at the deadline); with a window of three deadlines it waits
    the deadline (waiting costs no read). One who reads at 900 s gets SMS at once (waiting
    tells nothing); one who never read SMS does not get it."""
    deadlines = {"LOW": 86400.0, "NORMAL": 3600.0, "HIGH": 600.0, "URGENT": 60.0}
    for window, delay, at in ((1.2, 100.0, 1300.0), (3.0, 100.0, 1600.0), (3.0, 900.0, 1000.0)):
        policy = ChannelPolicy(strategy="adaptive", read_deadlines=deadlines,
                               read_value=THRIFTY, read_window=window)
        acc = reader(delay)
        esc.count(acc.counts, "SMS", 9, 10)
        m = Message("now", "a1", "HIGH", 0, sent=["WECHAT"], created_at=1000.0)
        note_send(acc, m, "WECHAT", 1000.0)
        step = next_send(acc, m, 1000.0, policy)
        assert (step.channel, step.at) == ("SMS", at)
        assert next_send(acc, m, at, policy).channel == "SMS"  # at its time: now
    seed = ChannelPolicy(strategy="seed", read_deadlines=deadlines)
    assert plan_push(reader(100.0), "HIGH", 1000.0, seed).deadline_at == 1600.0
    policy = ChannelPolicy(strategy="adaptive", read_deadlines=deadlines, read_value=THRIFTY)
    never = reader(100.0)
    esc.count(never.counts, "SMS", 0, 10)
    m = Message("now", "a1", "HIGH", 0, sent=["WECHAT"], created_at=1000.0)
    note_send(never, m, "WECHAT", 1000.0)
    step = next_send(never, m, 1000.0, policy)
    assert step.channel is None and step.best == "SMS" and step.gain < 0
    assert next_send(never, m, 1000.0, policy, must=True).channel == "SMS"  # URGENT, a move


def test_a_channel_without_reads_of_its_own_takes_the_accounts_timing() -> None:
    """A late reader on WeChat is taken as late on SMS too until SMS has reads of its own."""
    assert timing(reader(900.0), "SMS") == [900.0] * 5
    assert timing(reader(900.0, reads=2), "SMS") == [900.0] * 2
    acc = reader(900.0)
    for i in range(esc.MIN_READS):
        esc.remember_delay(acc.delays.setdefault("SMS", []), 10.0 + i)
    assert timing(acc, "SMS") == [10.0, 11.0, 12.0]


def test_an_app_push_costs_one_send_per_phone() -> None:
    """PUSHCASCADE_CHANNEL_COST prices one send: an app push goes to every phone (as the
    demo's cost counts it), so a three-phone account's costs three times one phone's."""
    policy = ChannelPolicy(strategy="adaptive", costs={"APP": 0.01, "SMS": 0.05})
    acc = Account("a1", addresses=["SMS"], devices=["d1", "d2", "d3"])
    assert channel_cost(acc, "APP", policy) == pytest.approx(0.03)
    assert channel_cost(acc, "SMS", policy) == 0.05
    assert channel_cost(acc, "WECHAT", policy) == 0.0  # a channel left out costs nothing
    assert channel_cost(Account("a2", addresses=["SMS"]), "APP", policy) == 0.01

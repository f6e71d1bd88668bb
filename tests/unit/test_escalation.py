"""adaptive's escalation policy, pure: read timing sketch, wait, read rate, cost decision."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streams.domain import escalation as esc
from streams.domain.channels import (
    ESTABLISHED,
    Account,
    ChannelPolicy,
    Message,
    channel_cost,
    escalation_worth,
    note_send,
    plan_push,
    ranking,
    read_wait,
    record_read,
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


@given(delays, st.floats(0, 1))
def test_a_quantile_lies_within_the_values_and_grows_with_q(values, q) -> None:
    v = esc.quantile(values, q)
    assert min(values) <= v <= max(values)
    assert esc.quantile(values, 0) == min(values)
    assert esc.quantile(values, 1) == max(values)
    assert esc.quantile(values, min(1.0, q + 0.1)) >= v


def test_quantile_interpolates_and_refuses_nothing() -> None:
    assert esc.quantile([1, 2, 3, 4, 5], 0.8) == pytest.approx(4.2)
    assert esc.quantile([7], 0.8) == 7
    with pytest.raises(ValueError):
        esc.quantile([], 0.5)


# -- the wait ------------------------------------------------------------------------------------


def test_without_enough_reads_the_wait_is_the_deadline() -> None:
    assert esc.read_wait([], 600) == 600
    assert esc.read_wait([1.0] * (esc.MIN_READS - 1), 600) == 600


def test_a_reader_waits_until_its_silence_is_unlikely_to_end_in_a_read() -> None:
    """One who reads half its messages there waits for 3 in 4 of its reads (a read still to
    come is then 1 in 5), one who reads nearly all for nearly all of them, one who rarely
    reads there for its fastest read only (with the margin)."""
    delays = [100, 200, 300, 400, 500]
    assert esc.read_wait(delays, 3600, 0.5) == pytest.approx(400 * esc.MARGIN)
    assert esc.read_wait(delays, 3600) == esc.read_wait(delays, 3600, 0.5)  # a coin toss
    assert esc.read_wait(delays, 3600, 0.95) == pytest.approx(494.7 * esc.MARGIN, abs=0.1)
    assert esc.read_wait(delays, 1000, 0.1) == pytest.approx(100 * esc.MARGIN)
    assert esc.telling(0.95) == pytest.approx(0.75 / 0.76)


@given(st.one_of(st.floats(0, 0.999), st.just(1.0)))
def test_silence_past_the_telling_share_leaves_a_read_at_most_still(rate) -> None:
    share = esc.telling(rate)
    assert 0.0 <= share <= 1.0
    assert esc.still_read(rate, share) <= esc.STILL + 1e-9
    if share > 1e-6:  # any less and a read still to come would be likelier than STILL
        assert esc.still_read(rate, share * 0.99) > esc.STILL - 1e-9


@given(delays, st.floats(0.001, 1e5), st.floats(0, 1), st.floats(0, 1))
def test_a_likelier_read_never_shortens_the_wait(values, deadline, rate, more) -> None:
    assert (esc.read_wait(values, deadline, min(1.0, rate + more))
            >= esc.read_wait(values, deadline, rate) - 1e-9)


def test_the_wait_never_goes_past_the_deadline_nor_below_its_floor() -> None:
    assert esc.read_wait([100, 500, 900, 1000], 600) == 600  # half its reads come later
    assert esc.read_wait([0, 0, 0.01], 600) == 600 * esc.FLOOR


def test_a_late_reader_does_not_wait() -> None:
    """Reads that mostly come after the deadline: waiting for it would tell nothing."""
    assert esc.read_wait([900, 1000, 1100], 600) == 0
    assert esc.read_wait([500, 900, 1000, 1100, 1200], 600) == 0  # 1 in 5
    assert esc.read_wait([500, 550, 1000, 1100], 600) == 600  # 2 in 4 within: the deadline


def test_a_late_reader_is_known_by_its_first_read() -> None:
    """One read after the deadline already says the silence until it tells nothing: the
    reader's next push does not wait a deadline (whose escalation would come too late for it)
    on the way to the MIN_READS reads its timing needs; one read within it still waits."""
    assert esc.late([1800], 600) and esc.read_wait([1800], 600) == 0
    assert esc.read_wait([1300, 2000], 600, 0.9) == 0
    assert not esc.late([100], 600) and esc.read_wait([100], 600) == 600  # too few: the deadline
    assert not esc.late([100, 1800], 600) and esc.read_wait([100, 1800], 600) == 600
    # one read just past the deadline may be the path's own delay: not yet; three do tell
    assert not esc.late([900], 600) and esc.read_wait([900], 600) == 600
    assert esc.late([900] * esc.MIN_READS, 600)
    assert not esc.late([], 600) and esc.read_wait([], 600) == 600


@given(delays, st.floats(0.001, 1e5), st.floats(0, 1))
def test_the_wait_is_within_floor_and_deadline_or_nothing_for_a_late_reader(
        values, deadline, rate) -> None:
    wait = esc.read_wait(values, deadline, rate)
    bar = deadline if len(values) >= esc.MIN_READS else deadline * esc.EARLY_LATE
    late = bool(values) and sum(v <= bar for v in values) / len(values) < esc.LATE
    assert esc.late(values, deadline) == late
    assert wait == 0 if late else deadline * esc.FLOOR - 1e-9 <= wait <= deadline


@given(delays, st.floats(0, 1e4), st.floats(0.001, 1e5))
def test_slower_reads_never_shorten_the_wait_of_a_reader_within_the_deadline(
        values, slower, deadline) -> None:
    later = [v + slower for v in values]
    if esc.late(later, deadline):
        assert esc.read_wait(later, deadline) == 0
    else:
        assert esc.read_wait(later, deadline) >= esc.read_wait(values, deadline)


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


def test_read_share_is_the_share_of_reads_within_the_silence() -> None:
    assert esc.read_share([], 5) == 1.0  # no timing: silence at the deadline means no read
    assert esc.read_share([1, 2, 3, 10], 2.5) == 0.5
    assert esc.read_share([1, 2, 3, 10], 100) == 1.0


@given(st.floats(0, 1), st.floats(0, 1))
def test_a_read_still_to_come_is_a_probability_below_the_read_rate(rate, share) -> None:
    p = esc.still_read(rate, share)
    assert 0.0 <= p <= rate + 1e-12
    assert esc.still_read(rate, 1.0) == 0.0  # every read would have come by now
    assert esc.still_read(rate, 0.0) == pytest.approx(rate)  # silence says nothing yet


@given(st.floats(0.01, 0.99), st.floats(0, 0.99), st.floats(0.001, 0.01))
def test_longer_silence_makes_a_late_read_less_likely(rate, share, more) -> None:
    assert esc.still_read(rate, min(1.0, share + more)) <= esc.still_read(rate, share) + 1e-12


# -- the cost decision ---------------------------------------------------------------------------

VALUE = {"LOW": 0.01, "NORMAL": 0.1, "HIGH": 1.0, "URGENT": math.inf}


def test_an_urgent_push_always_escalates_whatever_the_cost() -> None:
    assert esc.worth_escalating("URGENT", VALUE, 1e9, 0.0, 1.0).worth


def test_a_channel_is_sent_when_its_expected_reads_pay_for_it() -> None:
    sms = 0.05
    assert esc.worth_escalating("HIGH", VALUE, sms, 0.2, 0.0).worth  # 0.2 >= 0.05
    assert not esc.worth_escalating("NORMAL", VALUE, sms, 0.2, 0.0).worth  # 0.02 < 0.05
    assert esc.worth_escalating("NORMAL", VALUE, sms, 0.9, 0.0).worth  # 0.09 >= 0.05
    # a read still likely on the silent channel makes the next one worth less
    assert not esc.worth_escalating("HIGH", VALUE, sms, 0.2, 0.8).worth
    assert esc.worth_escalating("LOW", VALUE, 0.0, 0.01, 0.99).worth  # a free channel
    assert not esc.worth_escalating("UNKNOWN", VALUE, 0.001, 1.0, 0.0).worth
    # after two messages in a row unread on its channel, the next is tried: it may have moved
    assert not esc.worth_escalating("NORMAL", VALUE, sms, 0.2, 0.0, missed=1).worth
    assert esc.worth_escalating("NORMAL", VALUE, sms, 0.2, 0.0, missed=2).worth
    no = esc.worth_escalating("NORMAL", VALUE, sms, 0.2, 0.0)
    assert no.why("SMS", "NORMAL") == ("read deadline passed; SMS not worth its cost for a "
                                       "NORMAL push (expected 0.02 < cost 0.05)")


def test_a_send_must_add_the_send_price_in_reads_whatever_its_money_cost() -> None:
    """At a price of 0.07 reads a send, a free app push on two phones must add 0.14 reads; an
    SMS worth its money must add 0.07 too; URGENT and a likely move (two misses in a row) go
    whatever they add."""
    price = 0.07
    assert not esc.worth_escalating("HIGH", VALUE, 0.0, 0.1, 0.0, least=2 * price).worth
    assert esc.worth_escalating("HIGH", VALUE, 0.0, 0.2, 0.0, least=2 * price).worth
    no = esc.worth_escalating("HIGH", VALUE, 0.05, 0.3, 0.8, least=price)  # adds 0.06
    assert not no.worth and no.expected >= no.cost  # its money it would be worth
    assert no.why("SMS", "HIGH") == ("read deadline passed; SMS not worth a send for a HIGH "
                                     "push (expected reads 0.06 < 0.07)")
    assert esc.worth_escalating("URGENT", VALUE, 0.0, 0.0, 1.0, least=price).worth
    assert esc.worth_escalating("HIGH", VALUE, 0.0, 0.0, 1.0, missed=2, least=price).worth


@given(st.sampled_from(["LOW", "NORMAL", "HIGH"]), st.floats(0, 1), st.floats(0, 1),
       st.floats(0, 1), st.floats(0, 1), st.floats(0, 1), st.floats(0, 0.5))
def test_worth_is_monotone(importance, cost, rate, still, more_rate, less_still, least) -> None:
    """A likelier read on the next channel, or a less likely late read on the silent one, or a
    cheaper channel, or a lower send price never turns an escalation down."""
    base = esc.worth_escalating(importance, VALUE, cost, rate, still, least=least).worth
    better = esc.worth_escalating(importance, VALUE, cost * (1 - less_still),
                                  min(1.0, rate + more_rate), still * (1 - less_still),
                                  least=least * (1 - less_still)).worth
    assert better or not base


# -- wired into the account and message ----------------------------------------------------------


def reader(delay: float, reads: int = 5, channel: str = "WECHAT") -> Account:
    """An established WeChat reader who read `reads` messages, each `delay` s after its send."""
    acc = Account("a1", lifecycle=ESTABLISHED, pushes=10, addresses=["WECHAT", "SMS"],
                  decayed={channel: 10.0})
    policy = ChannelPolicy(strategy="adaptive")
    for i in range(reads):
        m = Message(f"m{i}", "a1", "NORMAL", 0, sent=[channel])
        note_send(acc, m, channel, 100.0 * i)
        record_read(acc, m, channel, policy, now=100.0 * i + delay)
    return acc


def test_reads_teach_the_accounts_delays_and_rates() -> None:
    acc = reader(2.0)
    assert acc.delays["WECHAT"] == [2.0] * 5
    assert acc.counts["WECHAT"] == [5.0, 5.0]
    m = Message("late", "a1", "NORMAL", 0, sent=["WECHAT"])
    record_read(acc, m, "WECHAT", ChannelPolicy(strategy="adaptive"), now=5.0)
    assert acc.delays["WECHAT"] == [2.0] * 5  # no send time known: no delay learnt


def test_adaptive_waits_a_fast_readers_own_time_and_seed_the_deadline() -> None:
    acc = reader(100.0)
    deadlines = {"LOW": 86400.0, "NORMAL": 3600.0, "HIGH": 600.0, "URGENT": 60.0}
    adaptive = ChannelPolicy(strategy="adaptive", read_deadlines=deadlines)
    seed = ChannelPolicy(strategy="seed", read_deadlines=deadlines)
    assert read_wait(acc, "WECHAT", "HIGH", adaptive) == pytest.approx(125.0)
    assert read_wait(acc, "WECHAT", "URGENT", adaptive) == 0.0  # read after it: no use waiting
    assert read_wait(acc, "WECHAT", "HIGH", seed) == 600.0
    assert read_wait(acc, "SMS", "HIGH", adaptive) == 125.0  # no reads there: all its reads
    assert read_wait(reader(100.0, reads=2), "WECHAT", "HIGH", adaptive) == 600.0  # too few
    assert plan_push(acc, "HIGH", 1000.0, adaptive).deadline_at == 1125.0
    assert plan_push(acc, "HIGH", 1000.0, seed).deadline_at == 1600.0


def test_a_slow_readers_silence_at_the_deadline_is_not_escalated_to_a_costly_channel() -> None:
    policy = ChannelPolicy(strategy="adaptive", read_value=THRIFTY)
    slow, fast = reader(9.0), reader(1.0)
    for acc in (slow, fast):
        esc.count(acc.counts, "SMS", 3, 4)  # reads most of its SMS
    for importance, slow_worth, fast_worth in (("NORMAL", False, True), ("HIGH", True, True),
                                               ("URGENT", True, True)):
        for acc, expected in ((slow, slow_worth), (fast, fast_worth)):
            m = Message("now", "a1", importance, 0, sent=["WECHAT"])
            note_send(acc, m, "WECHAT", 0.0)
            target, worth = escalation_worth(acc, m, 3.0, policy)
            assert worth.worth is expected and target == ("SMS" if expected else None)


def test_a_costly_channel_not_worth_it_is_passed_over_for_a_cheaper_one_further_down() -> None:
    """A slow WeChat reader with an app: SMS ranks next but is not worth its cost for a NORMAL
    push while the WeChat read is still likely; the app push is free, so it goes instead."""
    policy = ChannelPolicy(strategy="adaptive", order=("WECHAT", "SMS", "APP"), read_value=THRIFTY)
    acc = reader(9.0)
    acc.devices = ["d1"]
    esc.count(acc.counts, "SMS", 3, 4)
    m = Message("now", "a1", "NORMAL", 0, sent=["WECHAT"])
    note_send(acc, m, "WECHAT", 0.0)
    assert [c for c in ranking(acc, policy) if c not in m.sent] == ["SMS", "APP"]
    target, worth = escalation_worth(acc, m, 3.0, policy)
    assert target == "APP" and not worth.worth  # the figures of the SMS it passed over
    assert acc.missed["WECHAT"] == 1  # one miss, however many channels were weighed
    m.sent.append("APP")
    note_send(acc, m, "APP", 3.0)
    assert escalation_worth(acc, m, 6.0, policy)[0] is None  # SMS still not worth it
    with pytest.raises(ValueError, match="no channel left"):
        escalation_worth(acc, Message("all", "a1", "NORMAL", 0,
                                      sent=["WECHAT", "SMS", "APP"]), 6.0, policy)


def test_only_the_primarys_silence_counts_as_a_miss_and_decides_a_move() -> None:
    """A WeChat reader with an app, escalated to SMS: that SMS left unread is no miss (it is
    not what the account reads; its silence tells nothing of a move), and two misses of SMS
    counted before do not make the next channel go whatever it costs; two of WeChat do."""
    policy = ChannelPolicy(strategy="adaptive", read_value=THRIFTY, send_price=0.6)
    acc = reader(1.0)
    acc.devices = ["d1"]
    acc.missed = {"SMS": 2}
    m = Message("now", "a1", "NORMAL", 0, sent=["WECHAT", "SMS"])
    note_send(acc, m, "WECHAT", 0.0)
    note_send(acc, m, "SMS", 3.0)
    assert escalation_worth(acc, m, 6.0, policy)[0] is None  # the app push adds < 0.6 reads
    assert acc.missed == {"SMS": 2}
    acc.missed["WECHAT"] = 2
    assert escalation_worth(acc, m, 6.0, policy)[0] == "APP"
    first = Message("first", "a1", "NORMAL", 0, sent=["WECHAT"])
    note_send(acc, first, "WECHAT", 0.0)
    escalation_worth(acc, first, 3.0, policy)
    assert acc.missed == {"SMS": 2, "WECHAT": 3}


def test_a_channel_without_reads_of_its_own_takes_the_accounts_timing() -> None:
    """A late reader on WeChat is taken as late on SMS too until SMS has reads of its own."""
    acc = reader(900.0)
    adaptive = ChannelPolicy(strategy="adaptive", read_deadlines={"HIGH": 600.0})
    assert timing(acc, "SMS") == [900.0] * 5
    assert read_wait(acc, "SMS", "HIGH", adaptive) == 0.0  # read after the deadline: at once
    assert timing(reader(900.0, reads=2), "SMS") == [900.0] * 2
    assert read_wait(reader(1300.0, reads=2), "SMS", "HIGH", adaptive) == 0.0  # late already
    assert read_wait(reader(900.0, reads=2), "SMS", "HIGH", adaptive) == 600.0  # not yet sure
    assert read_wait(reader(100.0, reads=2), "SMS", "HIGH", adaptive) == 600.0  # too few


def test_an_app_push_costs_one_send_per_phone() -> None:
    """PUSHCASCADE_CHANNEL_COST prices one send: an app push goes to every phone (as the
    demo's cost counts it), so a three-phone account's costs three times one phone's."""
    policy = ChannelPolicy(strategy="adaptive", costs={"APP": 0.01, "SMS": 0.05})
    acc = Account("a1", addresses=["SMS"], devices=["d1", "d2", "d3"])
    assert channel_cost(acc, "APP", policy) == pytest.approx(0.03)
    assert channel_cost(acc, "SMS", policy) == 0.05
    assert channel_cost(acc, "WECHAT", policy) == 0.0  # a channel left out costs nothing
    assert channel_cost(Account("a2", addresses=["SMS"]), "APP", policy) == 0.01

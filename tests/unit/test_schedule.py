"""adaptive's plan, pure: a schedule's worth, the next send, and the plan against the oracle."""

from __future__ import annotations

import math
from statistics import NormalDist

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streams.domain import schedule as sch
from streams.harness import bound as oracle
from streams.harness.crowd import Crowd

DEADLINE, WINDOW = 3.0, 10.0


def channel(rate: float, delays: list[float], price: float) -> sch.Channel:
    """A channel read at `rate` with those read delays, each send at `price` reads."""
    return sch.Channel(rate, sch.timing(delays, DEADLINE), price)


def plan(channels: dict[str, sch.Channel], sent: list[tuple[str, float]],
         now: float = 0.0) -> list[tuple[str, float]]:
    """Every send the plan makes from `sent` on, each made at its time (nothing read)."""
    schedule = list(sent)
    while True:
        step = sch.next_step(channels, schedule, now, DEADLINE, WINDOW)
        if step.channel is None:
            return schedule
        schedule.append((step.channel, step.at))
        now = step.at


def message_level(read: float, phones: int, within, price: float) -> sch.Channel:
    """A channel as an account's counts see it: read when any of its phones' sends is (the
    oracle's model reads each phone's on its own), its first read's timing."""
    rate = 1 - (1 - read) ** phones
    return sch.Channel(rate, lambda s: (1 - (1 - read * within(s)) ** phones) / (rate or 1),
                       price * phones)


def test_timing_is_log_normal_about_the_delays_median_and_falls_back_on_the_deadline() -> None:
    one = sch.timing([4.0], DEADLINE)  # one delay: its spread is the prior's
    assert one(4.0) == pytest.approx(0.5)
    assert one(4.0 * math.exp(sch.SPREAD)) == pytest.approx(NormalDist().cdf(1.0))
    assert sch.timing([1.0, 4.0], DEADLINE)(2.0) == pytest.approx(0.5)  # the median of logs
    close = [0.5, 0.55, 0.6, 0.5, 0.55, 0.6, 0.5, 0.55]  # eight delays that happen to lie close
    within = sch.timing(close, DEADLINE)
    assert within(max(close) * 1.25) < 0.95 and within(2 * max(close)) < 1.0  # still a tail
    assert within(0.0) == 0.0 and within(10 * max(close)) > 0.9999
    unknown = sch.timing([], DEADLINE)  # read within the deadline, evenly
    assert (unknown(0.0), unknown(1.5), unknown(6.0)) == (0.0, 0.5, 1.0)


@given(st.lists(st.floats(0, 100), max_size=8), st.floats(-5, 200), st.floats(0, 50))
def test_timing_is_a_distribution(delays, s, more) -> None:
    within = sch.timing(delays, DEADLINE)
    assert 0.0 <= within(s) <= within(s + more) <= 1.0


def test_a_schedules_worth_is_the_oracles_reach_less_its_sends_price() -> None:
    """The same closed form as `pushcascade bound`'s: reach within the window, each send made
    only when no read came before it."""
    read = {"WECHAT": 0.85, "SMS": 0.6, "APP": 0.5}
    delays = {"WECHAT": [1.0, 2.0, 9.0], "SMS": [0.5], "APP": [3.0, 4.0]}
    within = {c: sch.timing(d, DEADLINE) for c, d in delays.items()}
    channels = {c: sch.Channel(read[c], within[c], 0.07) for c in read}
    for schedule in [(("WECHAT", 0.0),), (("WECHAT", 0.0), ("SMS", 1.5)),
                     (("APP", 0.0), ("WECHAT", 0.0), ("SMS", 6.0))]:
        option = oracle.evaluate(schedule, read, dict.fromkeys(read, 1), within, WINDOW)
        assert sch.worth(schedule, channels, WINDOW) == pytest.approx(
            option.reach - 0.07 * option.sends)


@pytest.mark.parametrize("population", ["slow-readers", "default", "mixed"])
def test_with_an_accounts_habits_known_the_plan_is_as_good_as_the_oracles(population) -> None:
    """Given each kind of account's true read rates and read delays, the plan from its first
    send is worth (reach less the price of its sends) within 0.01 of the oracle's best schedule
    at that price, which tries every order of channels and every time of its grid."""
    crowd = Crowd.load(population)
    receipt = tuple(crowd.spec.routes.delay_s)
    seen = set()
    for member in crowd.members:
        for _, habit in oracle.habits(member, crowd):
            if habit in seen or not habit.read:
                continue
            seen.add(habit)
            read, count = dict(habit.read), dict(habit.count)
            within = {c: oracle.after_receipt(oracle.cdf(d), receipt) for c, d in habit.delays}
            for price in (0.05, 0.1):
                channels = {c: message_level(read[c], count[c], within[c], price)
                            for c in read}
                best = max(oracle.evaluate(s, read, count, within, WINDOW).reach
                           - price * oracle.evaluate(s, read, count, within, WINDOW).sends
                           for s in oracle.schedules(list(read)))
                first = max(read, key=lambda c: sch.worth([(c, 0.0)], channels, WINDOW))
                mine = plan(channels, [(first, 0.0)])
                assert sch.worth(mine, channels, WINDOW) >= best - 0.01, (member.segment, mine)


def test_the_next_send_waits_for_a_fast_readers_reads_and_not_for_a_slow_ones() -> None:
    fast = {"WECHAT": channel(0.9, [0.5, 0.6, 1.0], 0.05), "SMS": channel(0.5, [1.0], 0.07)}
    step = sch.next_step(fast, [("WECHAT", 0.0)], 0.0, DEADLINE, WINDOW)
    assert (step.channel, step.at) == ("SMS", DEADLINE)  # an SMS then is still read in time
    added = sch.worth([("WECHAT", 0.0), ("SMS", DEADLINE)], fast, WINDOW)
    assert step.gain == pytest.approx(added - sch.worth([("WECHAT", 0.0)], fast, WINDOW))
    short = sch.next_step(fast, [("WECHAT", 0.0)], 0.0, DEADLINE, 1.2 * DEADLINE)
    assert 0.0 < short.at < DEADLINE  # a short window: the SMS goes before the deadline
    slow = {"WECHAT": channel(0.9, [8.0, 8.5], 0.05), "SMS": channel(0.5, [8.0], 0.07)}
    assert sch.next_step(slow, [("WECHAT", 0.0)], 0.0, DEADLINE, WINDOW).at == 0.0
    # a send stamped a moment before now (the clocks' rounding) still leaves `now` to choose
    assert sch.next_step(slow, [("WECHAT", -0.0003)], 0.0, DEADLINE, WINDOW).at == 0.0


def test_a_channel_that_adds_less_than_its_price_is_not_sent_unless_it_must() -> None:
    channels = {"SMS": channel(0.95, [0.6], 0.05), "WECHAT": channel(0.02, [0.6], 0.05)}
    step = sch.next_step(channels, [("SMS", 0.0)], 0.0, DEADLINE, WINDOW)
    assert step.channel is None and step.best == "WECHAT" and step.gain < 0
    forced = sch.next_step(channels, [("SMS", 0.0)], 0.0, DEADLINE, WINDOW, must=True)
    assert forced.channel == "WECHAT"
    assert sch.next_step(channels, [("SMS", 0.0), ("WECHAT", 0.0)], 0.0, DEADLINE,
                         WINDOW, must=True) == sch.Step(None, 0.0)  # nothing left


def test_a_late_worker_sends_at_once_what_is_overdue() -> None:
    """Past the read deadline after the last send, the only time left is now."""
    channels = {"SMS": channel(0.9, [0.5], 0.05), "WECHAT": channel(0.9, [0.5], 0.05)}
    step = sch.next_step(channels, [("SMS", 0.0)], 7.0, DEADLINE, WINDOW, must=True)
    assert (step.channel, step.at) == ("WECHAT", 7.0)


rates = st.floats(0, 1)
delay_lists = st.lists(st.floats(0, 20), max_size=5)
prices = st.floats(0, 0.5)


@given(st.lists(st.tuples(rates, delay_lists, prices), min_size=1, max_size=4),
       st.integers(0, 3), st.floats(0, 12), st.booleans())
def test_the_next_send_is_a_channel_left_at_a_time_it_may_go(habits, sent, now, must) -> None:
    """A channel not sent yet, no sooner than now and no later than a read deadline after the
    last send (or now, when that has passed); with `must`, always one while any is left; a
    channel never read is sent only when it must be."""
    names = ["APP", "WECHAT", "SMS", "EMAIL"][:len(habits)]
    channels = {n: channel(r, d, p) for n, (r, d, p) in zip(names, habits, strict=True)}
    done = [(n, min(now, 1.0 * i)) for i, n in enumerate(names[:min(sent, len(names))])]
    step = sch.next_step(channels, done, now, DEADLINE, WINDOW, must)
    left = [n for n in names if n not in dict(done)]
    if step.channel is None:
        assert not (must and left)
        return
    assert step.channel in left
    assert step.gain == pytest.approx(  # what it adds to the schedule's worth
        sch.worth([*done, (step.channel, step.at)], channels, WINDOW)
        - sch.worth(done, channels, WINDOW), abs=1e-9)
    last = done[-1][1] if done else now
    assert now <= step.at <= max(now, last + DEADLINE) + 1e-9
    if channels[step.channel].rate == 0:
        assert must

"""The oracle's bound (streams/harness/bound.py): its closed form against the provider
simulator's own draws, and the properties a bound must have."""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from connectors.simulator.behaviour import Population
from streams.harness.bound import (
    Option,
    after_receipt,
    bound,
    bounds,
    cdf,
    evaluate,
    habits,
    schedules,
)
from streams.harness.crowd import Crowd, LogNormal, Spec

WINDOW = 10.0


def crowd(segments: list[dict[str, Any]], **extra: Any) -> Crowd:
    """A small crowd of these segments."""
    return Crowd(Spec.model_validate({
        "seed": 3, "accounts": 60, "manufacturers": {"Huawei": 0.5, "Xiaomi": 0.5},
        "segments": segments, **extra}))


SLOW_AND_FAST = [
    {"name": "fast", "share": 0.5, "read": {"WECHAT": 0.9, "SMS": 0.3},
     "read_delay_s": {"median": 0.5, "p90": 1.5}},
    {"name": "slow", "share": 0.5, "read": {"WECHAT": 0.85, "APP": 0.6, "SMS": 0.6},
     "read_delay_s": {"median": 9.0, "p90": 12.0}},
]


def test_a_log_normal_delay_has_its_median_and_p90_and_a_uniform_one_its_range():
    f = cdf(LogNormal(median=9.0, p90=12.0))
    assert f(9.0) == pytest.approx(0.5) and f(12.0) == pytest.approx(0.9)
    assert f(0.0) == 0.0 and f(-1.0) == 0.0
    u = cdf((1.0, 3.0))
    assert (u(0.5), u(2.0), u(4.0)) == (0.0, 0.5, 1.0)
    assert cdf((2.0, 2.0))(2.0) == 1.0 and cdf((2.0, 2.0))(1.9) == 0.0


def test_one_channel_and_a_second_only_when_the_first_is_unread():
    read, count = {"APP": 0.5, "SMS": 0.8}, {"APP": 2, "SMS": 1}
    at_once = {"APP": lambda t: 1.0 if t >= 0 else 0.0, "SMS": lambda t: 1.0 if t >= 0 else 0.0}
    one = evaluate([("APP", 0.0)], read, count, at_once, WINDOW)
    assert one == Option(pytest.approx(1 - 0.5 ** 2), 2.0)
    # SMS at 1 s goes out only when neither phone read (0.25 of the time)
    two = evaluate([("APP", 0.0), ("SMS", 1.0)], read, count, at_once, WINDOW)
    assert two.sends == pytest.approx(2 + 0.25)
    assert two.reach == pytest.approx(1 - 0.25 * 0.2)
    # sent after the window, it adds sends but no reach
    late = evaluate([("APP", 0.0), ("SMS", 11.0)], read, count, at_once, WINDOW)
    assert late.reach == pytest.approx(one.reach) and late.sends == pytest.approx(2.25)


def test_schedules_are_every_order_with_the_first_at_once_and_times_not_decreasing():
    found = list(schedules(["APP", "SMS"]))
    assert (("APP", 0.0),) in found and (("SMS", 0.0),) in found
    assert all(s[0][1] == 0.0 for s in found)
    assert all([t for _, t in s] == sorted(t for _, t in s) for s in found)
    assert len(found) == len(set(found)) == 2 + 2 * 9
    assert (("APP", 0.0), ("SMS", 0.0)) in found  # blast's, both at once


def simulated(c: Crowd, schedule: list[tuple[str, float]], messages: int) -> Option:
    """Reach within WINDOW and sends per message of a schedule, drawn by the simulator itself
    (Population.react), each account's APP going to each phone's best route."""
    doc = c.document(start=0.0, duration=c.duration)
    pop = Population.from_dict(doc)
    reached = sent = total = 0
    for m in c.members:
        for k in range(messages):
            reads: list[float] = []  # read times (s after the request)
            for channel, at in schedule:
                if not m.has(channel) or any(r <= at for r in reads):
                    continue
                targets = [(p.device_id, max(p.receipt, key=p.receipt.__getitem__))
                           for p in m.phones] if channel == "APP" else [(None, channel)]
                for device, target in targets:
                    sid = f"{m.account_id}/{k}/{channel}/{device}"
                    reaction = pop.react(11, sid, target, channel, m.account_id, device,
                                         address="", now=0.0)
                    sent += 1
                    if reaction.read_after is not None:
                        reads.append(at + reaction.read_after)  # seconds
            reached += any(r <= WINDOW for r in reads)
            total += 1
    return Option(reached / total, sent / total)


def test_the_closed_form_agrees_with_the_simulators_draws():
    c = crowd(SLOW_AND_FAST)
    c.duration = 100.0
    found = bound(c, WINDOW)
    everything = [("APP", 0.0), ("WECHAT", 0.0), ("SMS", 0.0)]
    drawn = simulated(c, everything, messages=80)
    assert found.blast.reach == pytest.approx(drawn.reach, abs=0.02)
    assert found.blast.sends == pytest.approx(drawn.sends, abs=1e-9)  # blast sends all
    # a ladder: WeChat, then SMS 2 s later unless read by then
    ladder = [("WECHAT", 0.0), ("SMS", 2.0)]
    drawn = simulated(c, ladder, messages=80)
    receipt = tuple(c.spec.routes.delay_s)
    model_reach = model_sends = 0.0
    for m in c.members:
        (_, habit), = habits(m, c)
        read, count = dict(habit.read), dict(habit.count)
        within = {ch: after_receipt(cdf(d), receipt) for ch, d in habit.delays}  # type: ignore[arg-type]
        one = evaluate(ladder, read, count, within, WINDOW)
        model_reach += one.reach / len(c.members)
        model_sends += one.sends / len(c.members)
    assert model_reach == pytest.approx(drawn.reach, abs=0.02)
    assert model_sends == pytest.approx(drawn.sends, abs=0.03)


def test_slow_readers_get_everything_at_once_and_fast_ones_a_ladder():
    c = crowd(SLOW_AND_FAST)
    found = bound(c, WINDOW)
    rows = {r.segment: r for r in found.rows}
    assert found.oracle.reach == pytest.approx(0.98 * found.blast.reach)
    assert rows["fast"].oracle.sends < 1.5 < 2.5 < rows["slow"].oracle.sends
    assert found.ratio == pytest.approx(found.oracle.sends / found.blast.sends)


def test_nobody_reads_costs_the_oracle_one_send():
    c = crowd([{"name": "never", "share": 1.0, "read": {}}])
    found = bound(c, WINDOW)
    assert found.blast.reach == 0.0 and found.oracle.sends == pytest.approx(1.0)


def test_a_change_of_mind_splits_the_account_at_its_time():
    c = crowd([{"name": "movers", "share": 1.0, "read": {"WECHAT": 0.9},
                "later": {"after": 0.25, "read": {"SMS": 0.9}}}])
    c.duration = 200.0
    (first, before), (second, after) = habits(c.members[0], c)
    assert (first, second) == (pytest.approx(0.25), pytest.approx(0.75))
    assert dict(before.read)["WECHAT"] > 0 and dict(after.read)["WECHAT"] == 0.0


def test_bounds_average_the_seeds():
    crowds = [crowd(SLOW_AND_FAST), Crowd(crowd(SLOW_AND_FAST).spec.model_copy(
        update={"seed": 4}))]
    one = [bound(c, WINDOW) for c in crowds]
    found = bounds(crowds, WINDOW, duration=100.0)
    assert found["sends"] == pytest.approx(sum(b.oracle.sends for b in one) / 2)
    assert set(found["segments"]) == {"fast", "slow"}


probability = st.floats(0.0, 1.0)
delay = st.one_of(
    st.tuples(st.floats(0.0, 5.0), st.floats(0.0, 10.0)).map(lambda t: [min(t), max(t)]),
    st.tuples(st.floats(0.1, 10.0), st.floats(1.0, 3.0)).map(
        lambda t: {"median": t[0], "p90": t[0] * t[1]}))


@settings(max_examples=25, deadline=None)
@given(st.lists(st.tuples(st.dictionaries(st.sampled_from(["APP", "WECHAT", "SMS"]),
                                          probability, max_size=3), delay),
                min_size=1, max_size=3),
       st.floats(0.5, 1.0))
@example([({"APP": 1e-06}, [0.0, 0.0])], 1.0)  # a reach so small no modest price buys it
@example([({"WECHAT": 0.318, "APP": 0.5, "SMS": 0.791}, [0.0, 0.0]), ({}, [0.0, 0.0])],
         1.0)  # blast's reach itself, equalled in exact arithmetic by cheaper schedules
def test_the_oracle_never_needs_more_than_blast_and_more_reach_costs_more(
        segments: list[tuple[dict[str, float], Any]], share: float) -> None:
    shares = [1 / len(segments)] * len(segments)
    shares[-1] = 1 - sum(shares[:-1])
    c = crowd([{"name": f"s{i}", "share": s, "read": read, "read_delay_s": d}
               for i, (s, (read, d)) in enumerate(zip(shares, segments, strict=True))])
    lower, higher = bound(c, WINDOW, share * 0.9), bound(c, WINDOW, share)
    assert higher.oracle.reach >= share * higher.blast.reach - 1e-9
    assert higher.oracle.sends <= higher.blast.sends + 1e-9
    assert lower.oracle.sends <= higher.oracle.sends + 1e-9
    assert not math.isnan(higher.ratio)


def test_the_command_prints_each_segment_and_refuses_an_unknown_population():
    from click.testing import CliRunner

    from streams.cli import commands

    result = CliRunner().invoke(commands(), ["bound", "--population", "never-readers",
                                             "--seeds", "2"])
    assert result.exit_code == 0, result.output
    assert "never read" in result.output and "of blast's" in result.output
    assert "learner" not in result.output
    result = CliRunner().invoke(commands(), ["bound", "--population", "never-readers",
                                             "--pushes", "12"])
    assert result.exit_code == 0, result.output
    assert "learner" in result.output and "pushes an" in result.output
    assert "fan-out" not in result.output
    result = CliRunner().invoke(commands(), ["bound", "--population", "never-readers",
                                             "--pushes", "12", "--fanout"])
    assert result.exit_code == 0 and "first push a fan-out" in result.output, result.output
    result = CliRunner().invoke(commands(), ["bound", "--population", "never-readers",
                                             "--fanout"])
    assert result.exit_code != 0 and "--pushes" in result.output
    result = CliRunner().invoke(commands(), ["bound", "--population", "nobody-at-all"])
    assert result.exit_code != 0 and "nobody-at-all" in result.output


APP_OR_SMS = [{"name": "app", "share": 0.5, "read": {"APP": 0.95}},
              {"name": "sms", "share": 0.5, "read": {"SMS": 0.95}}]


def test_accounts_that_look_alike_share_their_first_push():
    c = crowd(APP_OR_SMS, devices_per_account=[1, 1])
    oracle = bound(c, WINDOW)
    blind = bound(c, WINDOW, pushes=1)  # every message is an account's first
    assert oracle.oracle.sends < 1.2  # it knows whom to send the app push, whom the SMS
    # the learner cannot tell them apart: one schedule for both, a second send for one of them
    assert blind.oracle.sends > oracle.oracle.sends + 0.2
    assert blind.oracle.reach == pytest.approx(0.98 * blind.blast.reach)
    rows = {r.segment: r.oracle for r in blind.rows}
    assert rows["app"].sends > 1.0 and rows["sms"].sends > 1.0
    # a tenth of the messages first pushes: a tenth of the difference, at most
    tenth = bound(c, WINDOW, pushes=10)
    assert oracle.oracle.sends < tenth.oracle.sends <= oracle.oracle.sends + (
        blind.oracle.sends - oracle.oracle.sends) / 10 + 1e-6


def test_a_learner_that_fans_out_first_spends_blasts_sends_on_first_pushes():
    c = crowd(APP_OR_SMS, devices_per_account=[1, 1])
    every = bound(c, WINDOW, pushes=1, fanout=True)  # every message a first push, fanned out
    assert every.oracle == every.blast
    free, fanned = bound(c, WINDOW, pushes=4), bound(c, WINDOW, pushes=4, fanout=True)
    assert free.oracle.sends < fanned.oracle.sends < every.blast.sends
    assert fanned.oracle.reach == pytest.approx(0.98 * fanned.blast.reach)
    assert bound(c, WINDOW, fanout=True) == bound(c, WINDOW)  # no first pushes: the oracle


def test_a_learner_of_accounts_all_alike_needs_no_more_than_the_oracle():
    c = crowd([{"name": "sms", "share": 1.0, "read": {"SMS": 0.9, "WECHAT": 0.3}}],
              devices_per_account=[1, 1])
    assert bound(c, WINDOW, pushes=1).oracle.sends == pytest.approx(bound(c, WINDOW).oracle.sends)


@settings(max_examples=20, deadline=None)
@given(st.lists(st.tuples(st.dictionaries(st.sampled_from(["APP", "WECHAT", "SMS"]),
                                          probability, max_size=3), delay),
                min_size=1, max_size=3),
       st.floats(1.0, 5.0), st.floats(1.0, 5.0))
def test_a_learner_needs_at_least_the_oracle_and_no_more_with_more_pushes(
        segments: list[tuple[dict[str, float], Any]], fewer: float, more: float) -> None:
    shares = [1 / len(segments)] * len(segments)
    shares[-1] = 1 - sum(shares[:-1])
    c = crowd([{"name": f"s{i}", "share": s, "read": read, "read_delay_s": d}
               for i, (s, (read, d)) in enumerate(zip(shares, segments, strict=True))])
    oracle = bound(c, WINDOW)
    few, many = bound(c, WINDOW, pushes=fewer), bound(c, WINDOW, pushes=fewer + more)
    tolerance = 1e-6 * max(1.0, few.blast.sends)
    assert oracle.oracle.sends <= many.oracle.sends + tolerance
    assert many.oracle.sends <= few.oracle.sends + tolerance
    assert few.oracle.sends <= few.blast.sends + tolerance
    assert few.oracle.reach >= 0.98 * few.blast.reach - 1e-9


def test_bounds_put_the_learner_beside_the_oracle():
    found = bounds([crowd(APP_OR_SMS, devices_per_account=[1, 1])], WINDOW, duration=100.0,
                   pushes=4)
    assert found["pushes"] == 4 and found["sends"] < found["learner_sends"]
    assert found["learner_ratio"] == pytest.approx(found["learner_sends"] / found["blast_sends"])
    assert {"learner_reach", "learner_sends"} <= set(found["segments"]["app"])

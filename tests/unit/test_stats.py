"""The demo's arithmetic over seeds: intervals, paired checks, segments, clear routes, movers."""

from __future__ import annotations

import math
import statistics

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from streams.harness.stats import (
    T975,
    by_segment,
    clear_best,
    followed,
    interval,
    paired,
    t975,
)

values = st.lists(st.floats(min_value=-1e3, max_value=1e3, allow_nan=False), min_size=2,
                  max_size=30)


def test_the_t_table_is_student_t() -> None:
    assert t975(1) == 12.706 and t975(2) == 4.303 and t975(30) == 2.042
    assert t975(35) == T975[30] and t975(1000) == 1.96  # between entries: the smaller df
    assert all(t975(d) >= t975(d + 1) for d in range(1, 200))
    with pytest.raises(ValueError):
        t975(0)


def test_an_interval_by_hand() -> None:
    got = interval([0.80, 0.84, 0.82])
    assert got is not None
    sd = statistics.stdev([0.80, 0.84, 0.82])
    assert got.mean == pytest.approx(0.82)
    half = 4.303 * sd / math.sqrt(3)
    assert got.half == pytest.approx(half)
    assert (got.lo, got.hi) == (pytest.approx(0.82 - half), pytest.approx(0.82 + half))
    one = interval([0.5, None])
    assert one is not None and (one.mean, one.half, one.lo, one.n) == (0.5, None, None, 1)
    assert one.show("{:.1%}") == "50.0%" and got.show("{:.1%}") == "82.0% ± 5.0%"
    assert interval([]) is None and interval([None]) is None


@given(values)
def test_the_interval_contains_the_mean(xs: list[float]) -> None:
    got = interval(xs)
    assert got is not None and got.lo is not None and got.hi is not None
    assert got.lo <= got.mean <= got.hi
    assert min(xs) - 1e-6 <= got.mean <= max(xs) + 1e-6


@given(values)
def test_the_interval_shrinks_as_the_same_data_repeats(xs: list[float]) -> None:
    assume(statistics.pstdev(xs) > 1e-6)
    once, twice = interval(xs), interval(xs * 2)
    assert once is not None and twice is not None
    assert once.half is not None and twice.half is not None
    assert twice.mean == pytest.approx(once.mean, abs=1e-9)
    assert twice.half < once.half


@given(values, values)
def test_the_paired_check_is_symmetric_under_swapping(a: list[float], b: list[float]) -> None:
    n = min(len(a), len(b))
    a, b = a[:n], b[:n]
    flip = {"better": "worse", "worse": "better", "undecided": "undecided"}
    for higher in (True, False):
        assert paired(b, a, higher) == flip[paired(a, b, higher)]
        assert paired(a, b, not higher) == flip[paired(a, b, higher)]


def test_the_paired_check_judges_the_difference_not_the_spread() -> None:
    # the two series overlap widely, but adaptive is ahead by 1-2 points on every seed
    seed = [0.70, 0.80, 0.90, 0.75]
    adaptive = [0.72, 0.81, 0.92, 0.76]
    assert paired(adaptive, seed, higher_is_better=True) == "better"
    assert paired(adaptive, seed, higher_is_better=False) == "worse"
    assert paired([0.72, 0.79, 0.92, 0.74], seed, True) == "undecided"  # ahead, behind
    with pytest.raises(ValueError):
        paired([1.0], [0.5], True)  # one pair: no interval


def test_a_clear_best_route_leads_the_next_best_by_the_margin() -> None:
    huawei = {"JPUSH": 0.85, "GETUI": 0.75, "FCM": 0.30, "HUAWEI": 0.95}
    assert clear_best(huawei, "HUAWEI")  # 0.85 - 0.75 is 0.1 give or take a float
    assert not clear_best({"JPUSH": 0.85, "GETUI": 0.80, "XIAOMI": 0.05}, "XIAOMI")
    assert clear_best({"JPUSH": 0.2, "APNS": 0.95}, "APNS")  # the only alternative
    assert not clear_best({"APNS": 0.95}, "APNS")  # no alternative: nothing to learn
    # the original itself does not count, however good
    assert clear_best({"JPUSH": 0.85, "GETUI": 0.70, "FCM": 0.84}, "FCM")


@given(st.dictionaries(st.sampled_from(["JPUSH", "GETUI", "FCM", "HUAWEI"]),
                       st.floats(min_value=0, max_value=1), min_size=1),
       st.sampled_from(["JPUSH", "GETUI", "FCM", "HUAWEI"]))
def test_a_clear_best_route_does_not_depend_on_the_order_of_the_routes(receipt, original):
    assert clear_best(receipt, original) == clear_best(dict(reversed(receipt.items())),
                                                       original)


def test_segments_sum_their_accounts() -> None:
    accounts = {"a": {"messages": 10, "reached": 9, "deliveries": 20, "sms": 2, "cost": 0.1},
                "b": {"messages": 10, "reached": 5, "deliveries": 30, "sms": 6, "cost": 0.3},
                "c": {"messages": 4, "reached": 0, "deliveries": 8, "sms": 4, "cost": 0.2},
                "x": {"messages": 99, "reached": 99, "deliveries": 1, "sms": 0, "cost": 0.0}}
    got = by_segment(accounts, {"a": "app", "b": "app", "c": "never"})
    assert list(got) == ["app", "never"]  # x has no segment: left out
    assert got["app"] == {"accounts": 2, "messages": 20, "reach": 0.7, "sends_per_message": 2.5,
                          "sms_per_message": 0.4, "cost_per_message": pytest.approx(0.02)}
    assert got["never"]["reach"] == 0 and got["never"]["sms_per_message"] == 1.0


@given(st.dictionaries(st.text(min_size=1, max_size=4),
                       st.tuples(st.integers(1, 50), st.integers(0, 50), st.sampled_from("AB")),
                       max_size=20))
def test_segments_weigh_back_to_the_whole(rows) -> None:
    accounts = {a: {"messages": m, "reached": min(r, m), "deliveries": 2 * m, "sms": 0,
                    "cost": 0.0} for a, (m, r, _) in rows.items()}
    got = by_segment(accounts, {a: seg for a, (_, _, seg) in rows.items()})
    assert sum(s["accounts"] for s in got.values()) == len(rows)
    assert sum(s["messages"] for s in got.values()) == sum(m for m, _, _ in rows.values())
    reached = sum(s["reach"] * s["messages"] for s in got.values())
    assert reached == pytest.approx(sum(min(r, m) for m, r, _ in rows.values()))


def test_movers_count_from_the_sixth_push_after_their_change() -> None:
    # m1 changes at t=100: pushes at 100..109 (and two before); from the 6th on (t >= 105)
    pushes = {"m1": [(float(t), f"p{t}") for t in (90, 95, *range(100, 110))],
              "m2": [(float(t), f"q{t}") for t in range(0, 10)]}
    primaries = {"m1": {f"p{t}": "WECHAT" if t < 106 else "SMS" for t in
                        (90, 95, *range(100, 110))} | {"p108": "WECHAT"},
                 "m2": {f"q{t}": "SMS" for t in range(10)}}
    hits, counted = followed(pushes, primaries, {"m1": 100.0, "m2": 1000.0},
                             {"m1": "SMS", "m2": "SMS"})
    # p105 WECHAT, p106 p107 SMS, p108 WECHAT, p109 SMS; m2 changes after its last push
    assert (hits, counted) == (3, 5)
    del primaries["m1"]["p105"]  # a push without a PRIMARY send (e.g. still fanning out)
    assert followed(pushes, primaries, {"m1": 100.0}, {"m1": "SMS"}) == (3, 4)
    assert followed(pushes, primaries, {"m1": 100.0}, {"m1": None}) == (0, 0)
    assert followed(pushes, primaries, {"m1": 100.0}, {"m1": "SMS"}, grace=0) == (3, 9)

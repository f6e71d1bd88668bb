"""Fleet route priors: computation with minimum samples, lookup per device, use in ranking."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streams.domain.handlers import Context, RouterConfig
from streams.domain.priors import (
    SHRINK_Z,
    FleetRate,
    PriorBook,
    changed,
    compute,
    shrink,
)
from streams.domain.probing import ProbeBudget
from streams.domain.routes import fallback_routes, original_route, register_device


def rate(maker: str, model: str, route: str, sends: int, receipts: int) -> FleetRate:
    return FleetRate(maker, model, route, sends, receipts)


def test_manufacturer_priors_sum_models_and_model_priors_need_their_own_samples():
    priors = compute([rate("Xiaomi", "14", "JPUSH", 40, 0), rate("xiaomi ", "13", "JPUSH", 20, 2),
                      rate("Xiaomi", "14", "GETUI", 30, 27)], min_samples=30)
    got = {(p.manufacturer, p.model, p.route): (p.success_rate, p.samples) for p in priors}
    assert got == {("*", None, "JPUSH"): (2 / 60, 60), ("*", None, "GETUI"): (0.9, 30),
                   ("xiaomi", None, "JPUSH"): (2 / 60, 60),
                   ("xiaomi", "14", "JPUSH"): (0.0, 40),
                   ("xiaomi", None, "GETUI"): (0.9, 30),
                   ("xiaomi", "14", "GETUI"): (0.9, 30)}
    assert [p.key for p in priors] == sorted(p.key for p in priors)
    assert priors[0].key == "*/*/GETUI"  # the route's rate across the fleet


def test_the_fleets_rate_of_a_route_counts_it_only_where_it_is_an_alternative():
    """FCM is a Google phone's own route (0.95) and other phones' poor alternative (0.30): the
    route-wide rate an alternative is drawn toward leaves the Google phones' sends out."""
    priors = compute([rate("Google", "Pixel 8", "FCM", 1000, 950),
                      rate("Huawei", "P60", "FCM", 100, 30),
                      rate("Apple", "iPhone", "APNS", 500, 490)], min_samples=50)
    got = {p.key: (p.success_rate, p.samples) for p in priors}
    assert got["*/*/FCM"] == (0.30, 100)
    assert "*/*/APNS" not in got and got["google/*/FCM"] == (0.95, 1000)


def test_too_few_samples_give_no_prior_and_bad_input_is_refused():
    assert compute([rate("Oppo", "A1", "FCM", 29, 29)], min_samples=30) == []
    assert compute([rate("", "A1", "FCM", 99, 9)], min_samples=1) == []
    with pytest.raises(ValueError, match="inconsistent"):
        compute([rate("Oppo", "A1", "FCM", 3, 4)], min_samples=1)
    with pytest.raises(ValueError, match="min_samples"):
        compute([], min_samples=0)


@given(st.lists(st.tuples(st.sampled_from(["a", "B", "b "]), st.sampled_from(["", "m1", "M2"]),
                          st.sampled_from(["FCM", "JPUSH"]), st.integers(0, 50),
                          st.floats(0, 1)), max_size=30), st.integers(1, 60))
def test_every_prior_is_a_rate_over_at_least_min_samples(rows, min_samples):
    rates = [rate(m, mo, r, n, int(n * f)) for m, mo, r, n, f in rows]
    for p in compute(rates, min_samples):
        assert p.samples >= min_samples and 0.0 <= p.success_rate <= 1.0
        same = [r for r in rates if p.manufacturer in ("*", r.manufacturer.strip().lower())
                and r.route == p.route and (p.model is None or r.model.lower() == p.model)
                and (p.manufacturer != "*" or original_route(r.manufacturer, r.model).route
                     != r.route)]
        assert sum(r.sends for r in same) == p.samples
        assert p.success_rate == pytest.approx(sum(r.receipts for r in same) / p.samples)


def dated(maker: str, route: str, at: float, sends: int, receipts: int) -> FleetRate:
    return FleetRate(maker, f"{maker} phone", route, sends, receipts, at)


def test_the_fleets_rate_follows_its_recent_sends_and_a_group_is_judged_against_the_fleet():
    """JPUSH delivers 85% to every phone but vivo's (5%) and goes down for everyone at
    t=100..130; the fleet stops sending it vivo after t=60. At t=140 (half-life 10 s) the
    fleet's JPUSH rate is its outage's; once it is back, vivo is still known to fail where the
    fleet receives, and Huawei, hit by the outage like everyone, is not marked down for it."""
    rows = [dated("Huawei", "JPUSH", t, 20, 17) for t in range(0, 100, 10)]
    rows += [dated("vivo", "JPUSH", t, 20, 1) for t in range(0, 60, 10)]
    rows += [dated("Huawei", "JPUSH", t, 40, 0) for t in range(100, 140, 10)]
    got = {p.key: p for p in compute(rows, 20, now=140.0, half_life=10.0)}
    fleet, vivo, huawei = got["*/*/JPUSH"], got["vivo/*/JPUSH"], got["huawei/*/JPUSH"]
    assert fleet.success_rate < 0.05 and 30 <= fleet.samples < 45  # the newest sends weigh
    assert vivo.samples == 120 and huawei.samples == 360  # a group counts every send
    assert vivo.success_rate < 0.01 and huawei.success_rate < 0.05  # the route is down
    rows += [dated("Huawei", "JPUSH", t, 40, 34) for t in range(140, 200, 10)]
    later = {p.key: p for p in compute(rows, 20, now=200.0, half_life=10.0)}
    assert later["*/*/JPUSH"].success_rate == pytest.approx(0.85, abs=0.02)  # it came back
    assert later["vivo/*/JPUSH"].success_rate == pytest.approx(0.05, abs=0.01)
    assert later["vivo/vivo phone/JPUSH"] == replace(later["vivo/*/JPUSH"], model="vivo phone")
    assert later["huawei/*/JPUSH"].success_rate == pytest.approx(0.85, abs=0.02)


def test_after_an_outage_the_fleets_rate_counts_only_the_sends_since_it_ended():
    """JPUSH delivers 85%, nothing at t=100..140, then 85% again: 10 s after it came back
    (half-life 10 s), its rate is the recovery's, not held down by the outage's failures."""
    rows = [dated(maker, "JPUSH", t, 20, 17) for maker in ("Huawei", "vivo")
            for t in range(0, 100, 5)]
    rows += [dated("Huawei", "JPUSH", t, 20, 0) for t in range(100, 140, 5)]
    rows += [dated(maker, "JPUSH", t, 20, 17) for maker in ("Huawei", "vivo")
             for t in (140, 145)]
    triples = [(r, ("x", None, "JPUSH"), ("x", "y", "JPUSH")) for r in rows]
    assert changed(triples, 20) == 135  # the newest split: after the outage's last sends
    assert changed(triples[:-4], 20) == 95  # before it came back: the outage began
    assert changed(triples[:40], 20) is None  # steady: no change
    fleet = {p.key: p for p in compute(rows, 20, now=150.0, half_life=10.0)}["*/*/JPUSH"]
    assert fleet.success_rate == pytest.approx(0.85)
    assert compute(rows, 20, now=150.0)[0].success_rate < 0.75  # without a half-life: all


def test_a_route_unused_since_its_outage_is_withdrawn_within_a_few_half_lives():
    """Everyone left JPUSH during its outage (t=0..30): its fleet rate fades below
    min_samples, and every level of it is withdrawn (devices try it again)."""
    rows = [dated(maker, "JPUSH", t, 30, 0) for maker in ("Huawei", "vivo")
            for t in range(0, 30, 10)]
    assert {p.key for p in compute(rows, 20, now=30.0, half_life=10.0)} == {
        "*/*/JPUSH", "huawei/*/JPUSH", "huawei/huawei phone/JPUSH", "vivo/*/JPUSH",
        "vivo/vivo phone/JPUSH"}
    assert compute(rows, 20, now=80.0, half_life=10.0) == []


@given(st.lists(st.tuples(st.sampled_from(["Huawei", "vivo", "Xiaomi"]),
                          st.sampled_from(["JPUSH", "GETUI"]), st.integers(0, 20),
                          st.integers(1, 40), st.floats(0, 1)), max_size=40),
       st.floats(0, 30), st.integers(1, 60))
def test_dated_priors_are_rates_and_a_route_without_its_fleet_rate_has_no_group(
        rows, half_life, min_samples):
    rates = [dated(m, r, t * 5.0, n, int(n * f)) for m, r, t, n, f in rows]
    priors = compute(rates, min_samples, now=100.0, half_life=half_life)
    fleet = {p.route for p in priors if p.manufacturer == "*"}
    for p in priors:
        assert 0.0 <= p.success_rate <= 1.0 and p.samples >= min_samples
        assert p.route in fleet  # (each of these phones' routes is an alternative)


@given(st.lists(st.floats(0.05, 1.0), min_size=2, max_size=5),
       st.lists(st.floats(0.1, 1.0), min_size=2, max_size=3), st.floats(1.0, 60.0))
def test_where_receipts_are_a_rate_per_time_times_a_factor_per_maker_the_fit_finds_it(
        at_rates, factors, half_life):
    """Whatever the route's rate at each time, two makers' priors stand in the ratio of
    their own factors (large counts: the receipts are the products, rounded)."""
    makers = ["Huawei", "vivo", "Xiaomi"][:len(factors)]
    rows = [dated(maker, "JPUSH", t * 10.0, 1_000_000, round(1_000_000 * b * f))
            for t, b in enumerate(at_rates) for maker, f in zip(makers, factors, strict=True)]
    got = {p.manufacturer: p.success_rate
           for p in compute(rows, 20, now=10.0 * len(at_rates), half_life=half_life)
           if p.model is None and p.manufacturer != "*"}
    for maker, f in zip(makers[1:], factors[1:], strict=True):
        assert got[maker.lower()] / got["huawei"] == pytest.approx(f / factors[0], rel=1e-3)


def test_a_device_takes_its_models_prior_else_its_manufacturers():
    book = PriorBook()
    book.put("Xiaomi", None, "JPUSH", 0.1)
    book.put("Xiaomi", None, "GETUI", 0.9)
    book.put("XIAOMI", "14", "JPUSH", 0.7)
    assert book.for_device("xiaomi", "14", ["JPUSH", "GETUI", "FCM"]) == {
        "JPUSH": 0.7, "GETUI": 0.9}
    assert book.for_device("Xiaomi", "13", ["JPUSH"]) == {"JPUSH": 0.1}
    assert book.for_device("Huawei", "P60", ["JPUSH"]) == {}
    book.remove("xiaomi", "14", "JPUSH")
    assert book.for_device("xiaomi", "14", ["JPUSH"]) == {"JPUSH": 0.1}
    assert len(book) == 2


def test_adaptive_draws_a_small_groups_rate_toward_its_parents():
    """The route's rate across the fleet, then the manufacturer's and the model's, each drawn
    toward the level above: a group keeps the part of its distance beyond SHRINK_Z standard
    errors of its own sends. 30 sends of a model 0.05 off the fleet are noise; a manufacturer
    whose route is broken, or a model measured at length, keeps its rate."""
    book = PriorBook()
    book.put("*", None, "JPUSH", 0.85, 5000)
    book.put("*", None, "GETUI", 0.75, 5000)
    book.put("Huawei", None, "JPUSH", 0.80, 50)
    book.put("Huawei", "P60", "JPUSH", 0.76, 30)
    book.put("Huawei", "P60", "GETUI", 0.81, 30)
    got = book.shrunk("huawei", "p60", ["JPUSH", "GETUI", "FCM"])
    assert got == {"JPUSH": 0.85, "GETUI": 0.75}  # within the noise of 50 and 30 sends
    assert book.for_device("huawei", "p60", ["JPUSH", "GETUI"]) == {"JPUSH": 0.76, "GETUI": 0.81}
    book.put("Vivo", None, "JPUSH", 0.05, 40)  # broken for one manufacturer
    noise = SHRINK_Z ** 2 * 0.85 * 0.15 / 40
    assert book.shrunk("vivo", "", ["JPUSH"])["JPUSH"] == pytest.approx(
        0.85 - (1 - noise / 0.8 ** 2) * 0.8)
    assert book.shrunk("vivo", "", ["JPUSH"])["JPUSH"] < 0.1
    book.put("Huawei", "P60", "GETUI", 0.85, 1_000_000)  # a model measured at length
    assert book.shrunk("Huawei", "P60", ["GETUI"])["GETUI"] == pytest.approx(0.85, abs=1e-4)
    assert book.shrunk("Oppo", "", ["JPUSH"]) == {"JPUSH": 0.85}  # only the fleet's rate


@given(st.floats(0, 1), st.floats(0, 1), st.floats(1, 1e6), st.floats(1.01, 100))
def test_a_group_keeps_more_of_its_rate_the_more_sends_it_has(rate_, parent, samples, more):
    """Shrinking lies between the group's rate and its parent's, and more sends at the same
    rate never draw it closer to the parent."""
    fewer, many = shrink(rate_, samples, parent), shrink(rate_, samples * more, parent)
    assert min(rate_, parent) - 1e-12 <= fewer <= max(rate_, parent) + 1e-12
    assert abs(many - parent) >= abs(fewer - parent) - 1e-12
    assert shrink(rate_, samples, None) == rate_


@given(st.lists(st.tuples(st.floats(0, 1), st.floats(0, 1e6)), min_size=1, max_size=3))
def test_a_shrunk_prior_lies_within_its_levels_rates(levels):
    book = PriorBook()
    for (rate_, samples), (maker, model) in zip(levels, [("*", None), ("m", None), ("m", "x")],
                                                strict=False):
        book.put(maker, model, "R", rate_, samples)
    got = book.shrunk("m", "x", ["R"])["R"]
    assert min(r for r, _ in levels) - 1e-9 <= got <= max(r for r, _ in levels) + 1e-9


def test_fallback_ranks_unmeasured_routes_by_the_fleet_prior():
    device = register_device("d", "a", "Xiaomi", "14", ["XIAOMI", "JPUSH", "GETUI"]).device
    ctx = Context(RouterConfig(), 0.0, 0, ProbeBudget(1, 1, 1))
    assert fallback_routes(device, ctx.ranking(device)) == ["JPUSH"]  # registration order
    ctx.priors.put("Xiaomi", None, "JPUSH", 0.0)
    assert fallback_routes(device, ctx.ranking(device)) == ["GETUI"]  # GETUI keeps 0.5
    ctx.priors.put("Xiaomi", None, "GETUI", 0.2)
    ctx.priors.put("Xiaomi", "14", "JPUSH", 0.3)
    assert fallback_routes(device, ctx.ranking(device)) == ["JPUSH"]  # the model's own rate


def test_a_prior_whose_window_has_too_few_sends_now_is_withdrawn() -> None:
    """After an outage JPUSH is barely used: its window has too few sends for a prior, so the
    outage's rate is withdrawn (a tombstone) instead of standing; a key still there stays."""
    from connectors.clickhouse.priors import retired

    during = compute([FleetRate("Xiaomi", "Mi 13", "JPUSH", 60, 6),
                      FleetRate("Xiaomi", "Mi 13", "GETUI", 60, 45)], 50)
    after = compute([FleetRate("Xiaomi", "Mi 13", "JPUSH", 8, 7),
                     FleetRate("Xiaomi", "Mi 13", "GETUI", 90, 68)], 50)
    assert retired({p.key for p in during}, after) == ["*/*/JPUSH", "xiaomi/*/JPUSH",
                                                        "xiaomi/mi 13/JPUSH"]
    assert retired({p.key for p in after}, after) == []
    assert retired((), during) == []

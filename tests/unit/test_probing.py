"""Unit tests of streams.domain.probing: schedule, rate limits, re-probing and target changes."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streams.domain.probing import (
    Probe,
    ProbeBudget,
    ProbeConfig,
    TargetReason,
    evaluate_target,
    plan_probes,
    probe_cost,
    take,
)
from streams.domain.routes import (
    DeviceRoutes,
    ProbeKind,
    ReceiptOutcome,
    fallback_routes,
    record_probe,
    record_receipt,
    register_device,
    success_rate,
)

HOUR = 3600.0


def cfg(**overrides: object) -> ProbeConfig:
    base: dict[str, object] = dict(
        probe_count_first=10,
        probe_count_again=5,
        min_route_success=0.6,
        reprobe_interval_s=HOUR,
        per_device_probes_per_hour=1000.0,
        global_probes_per_second=1000.0,
        probe_timeout_s=60.0,
        max_probes_per_plan=100,
    )
    base.update(overrides)
    return ProbeConfig(**base)  # type: ignore[arg-type]


def device(alternatives: list[str]) -> DeviceRoutes:
    return register_device("d1", "a1", "huawei", "", ["HUAWEI", *alternatives]).device


def budget(c: ProbeConfig) -> ProbeBudget:
    return ProbeBudget.from_config(c)


def measure_first(dev: DeviceRoutes, route: str, acked: int, now: float = 0.0) -> None:
    """Record a full first window (10 probes) on route, ack `acked` of them, let the rest expire."""
    for i in range(10):
        record_probe(dev, f"{route}-f{i}", route, ProbeKind.FIRST, now, 10)
    for i in range(acked):
        record_receipt(dev, f"{route}-f{i}", now + 1)
    for i in range(acked, 10):
        dev.pending.pop(f"{route}-f{i}")
        dev.stats[route].probes_lost += 1
    dev.stats[route].probed_at = now + 1


def ack_probes(dev: DeviceRoutes, probes: list[Probe], acked: int, now: float) -> None:
    for probe in probes[:acked]:
        assert record_receipt(dev, probe.send_id, now).outcome is ReceiptOutcome.COUNTED


def measured_device(rates: dict[str, int], c: ProbeConfig) -> DeviceRoutes:
    """A device whose alternatives were measured (acks of 10) and whose first target is set."""
    dev = device(list(rates))
    for route, acked in rates.items():
        measure_first(dev, route, acked)
    change = evaluate_target(dev, c)
    assert change is not None and change.reason is TargetReason.INITIAL
    return dev


def run_reprobe_round(dev: DeviceRoutes, c: ProbeConfig, acked: int, now: float) -> list[Probe]:
    probes = plan_probes(dev, now, c, budget(c))
    assert [p.kind for p in probes] == [ProbeKind.AGAIN] * c.probe_count_again
    ack_probes(dev, probes, acked, now + 1)
    plan_probes(dev, now + 1 + c.probe_timeout_s, c, budget(c))
    return probes


# ---------------------------------------------------------------- config


def test_config_defaults_follow_the_seed_and_validate() -> None:
    assert ProbeConfig().probe_count_first == 100
    for bad in (
        dict(probe_count_first=0),
        dict(probe_count_again=0),
        dict(min_route_success=1.5),
        dict(per_device_probes_per_hour=0),
        dict(global_probes_per_second=-1),
        dict(probe_timeout_s=0),
        dict(max_probes_per_plan=0),
        dict(target_count=0),
    ):
        with pytest.raises(ValueError):
            cfg(**bad)


# ---------------------------------------------------------------- first-window schedule


def test_first_window_probes_round_robin_over_alternatives() -> None:
    c = cfg(max_probes_per_plan=5)
    dev = device(["JPUSH", "GETUI"])
    probes = plan_probes(dev, 0.0, c, budget(c))
    assert [(p.route, p.kind) for p in probes] == [
        ("JPUSH", ProbeKind.FIRST),
        ("GETUI", ProbeKind.FIRST),
        ("JPUSH", ProbeKind.FIRST),
        ("GETUI", ProbeKind.FIRST),
        ("JPUSH", ProbeKind.FIRST),
    ]
    assert len({p.send_id for p in probes}) == 5
    assert all(p.send_id in dev.pending for p in probes)
    assert dev.stats["JPUSH"].probes_sent == 3 and dev.stats["GETUI"].probes_sent == 2


def test_first_window_stops_at_probe_count_first() -> None:
    c = cfg()
    dev = device(["JPUSH", "GETUI"])
    probes = plan_probes(dev, 0.0, c, budget(c))
    assert len(probes) == 20
    assert plan_probes(dev, 1.0, c, budget(c)) == []
    assert dev.stats["JPUSH"].probes_sent == 10 and "HUAWEI" not in {p.route for p in probes}


def test_no_alternatives_no_probes() -> None:
    c = cfg()
    assert plan_probes(device([]), 0.0, c, budget(c)) == []


def test_full_first_window_gives_rate_and_initial_target() -> None:
    c = cfg()
    dev = device(["JPUSH", "GETUI"])
    probes = plan_probes(dev, 0.0, c, budget(c))
    jpush = [p for p in probes if p.route == "JPUSH"]
    getui = [p for p in probes if p.route == "GETUI"]
    ack_probes(dev, jpush, 7, 1.0)
    ack_probes(dev, getui, 9, 1.0)
    assert evaluate_target(dev, c) is None  # unacked probes are not settled yet
    assert success_rate(dev.stats["JPUSH"], 10) is None
    plan_probes(dev, 100.0, c, budget(c))  # expires the 4 silent probes as lost
    assert success_rate(dev.stats["JPUSH"], 10) == pytest.approx(0.7)
    assert success_rate(dev.stats["GETUI"], 10) == pytest.approx(0.9)
    change = evaluate_target(dev, c)
    assert change is not None
    assert (change.previous, change.target, change.reason) == ([], ["GETUI"], TargetReason.INITIAL)
    assert dev.target == ["GETUI"] and fallback_routes(dev, c) == ["GETUI"]
    assert probe_cost(dev).sent == 20 and probe_cost(dev).acked == 16


def test_initial_target_can_be_top_two() -> None:
    c = cfg(target_count=2)
    dev = device(["JPUSH", "GETUI", "FCM"])
    for route, acked in (("JPUSH", 5), ("GETUI", 9), ("FCM", 8)):
        measure_first(dev, route, acked)
    change = evaluate_target(dev, c)
    assert change is not None and change.target == ["GETUI", "FCM"]


# ---------------------------------------------------------------- rate limits


def test_per_device_limit_and_refill() -> None:
    c = cfg(per_device_probes_per_hour=4.0)
    dev = device(["JPUSH"])
    assert len(plan_probes(dev, 0.0, c, budget(c))) == 4
    assert plan_probes(dev, 1.0, c, budget(c)) == []
    assert dev.probes_deferred == 6 + 6  # held back on each call
    assert len(plan_probes(dev, 1.0 + HOUR / 4, c, budget(c))) == 1
    assert len(plan_probes(dev, 1.0 + 10 * HOUR, c, budget(c))) == 4  # capped at capacity


def test_global_budget_limits_across_devices() -> None:
    c = cfg(global_probes_per_second=3.0)
    shared = budget(c)
    first, second = device(["JPUSH"]), device(["GETUI"])
    assert len(plan_probes(first, 0.0, c, shared)) == 3
    assert plan_probes(second, 0.0, c, shared) == []
    assert (shared.granted, shared.denied) == (3, 7 + 10)
    assert len(plan_probes(second, 1.0, c, shared)) == 3
    assert second.probes_deferred == 10 + 7


def test_max_probes_per_plan_caps_each_call() -> None:
    c = cfg(max_probes_per_plan=2)
    dev = device(["JPUSH"])
    assert len(plan_probes(dev, 0.0, c, budget(c))) == 2
    assert dev.probes_deferred == 0


def test_budget_take_refills_from_now_and_ignores_clock_going_back() -> None:
    b = ProbeBudget(rate_per_s=2.0, capacity=4.0, tokens=4.0)
    assert take(b, 10, 100.0) == 4
    assert take(b, 1, 99.0) == 0
    assert take(b, 10, 101.0) == 2
    assert take(b, 10, 1000.0) == 4
    assert take(b, 0, 1000.0) == 0
    assert (b.granted, b.denied) == (4 + 2 + 4, 6 + 1 + 8 + 6)
    assert ProbeBudget.from_dict(json.loads(json.dumps(b.to_dict()))) == b


@given(
    st.floats(0.1, 50.0),
    st.lists(st.tuples(st.floats(0.0, 10.0), st.integers(0, 20)), max_size=30),
)
def test_budget_never_grants_more_than_capacity_plus_refill(
    rate: float, calls: list[tuple[float, int]]
) -> None:
    b = ProbeBudget(rate_per_s=rate, capacity=max(1.0, rate), tokens=max(1.0, rate))
    now, granted = 0.0, 0
    for step, wanted in calls:
        now += step
        got = take(b, wanted, now)
        assert 0 <= got <= wanted
        granted += got
    assert granted <= max(1.0, rate) + rate * now + 1e-6


# ---------------------------------------------------------------- re-probing


def test_reprobe_not_due_before_interval() -> None:
    c = cfg()
    dev = measured_device({"JPUSH": 9, "GETUI": 7}, c)
    assert plan_probes(dev, HOUR - 10, c, budget(c)) == []


def test_reprobe_below_min_replaces_target_with_best_other() -> None:
    c = cfg()
    dev = measured_device({"JPUSH": 9, "GETUI": 6, "FCM": 8}, c)
    assert dev.target == ["JPUSH"]
    run_reprobe_round(dev, c, acked=2, now=2 * HOUR)  # 2/5 = 0.4 < 0.6
    change = evaluate_target(dev, c)
    assert change is not None
    assert change.reason is TargetReason.REPROBE_BELOW_MIN
    assert (change.previous, change.target) == (["JPUSH"], ["FCM"])
    assert change.reprobe_rate == pytest.approx(0.4)
    assert dev.target == ["FCM"]
    assert dev.stats["JPUSH"].reprobe_rate == pytest.approx(0.4)
    assert fallback_routes(dev, c, top_n=3) == ["FCM", "GETUI", "JPUSH"]
    assert evaluate_target(dev, c) is None


def test_reprobe_at_or_above_min_keeps_target() -> None:
    c = cfg()
    dev = measured_device({"JPUSH": 9, "GETUI": 6}, c)
    run_reprobe_round(dev, c, acked=3, now=2 * HOUR)  # 3/5 = 0.6, not below 0.6
    assert evaluate_target(dev, c) is None
    assert dev.target == ["JPUSH"]
    assert dev.stats["JPUSH"].reprobe_rate == pytest.approx(0.6)
    assert dev.stats["JPUSH"].reprobe_sent == 0  # round closed


def test_reprobe_round_waits_until_every_probe_settles() -> None:
    c = cfg()
    dev = measured_device({"JPUSH": 9, "GETUI": 6}, c)
    probes = plan_probes(dev, 2 * HOUR, c, budget(c))
    ack_probes(dev, probes, 4, 2 * HOUR + 1)
    assert evaluate_target(dev, c) is None
    assert dev.stats["JPUSH"].reprobe_sent == 5  # round still open
    assert plan_probes(dev, 2 * HOUR + 2, c, budget(c)) == []  # no second round meanwhile


def test_reprobe_with_no_other_route_keeps_target() -> None:
    c = cfg()
    dev = measured_device({"JPUSH": 9}, c)
    run_reprobe_round(dev, c, acked=0, now=2 * HOUR)
    assert evaluate_target(dev, c) is None
    assert dev.target == ["JPUSH"]


def test_next_reprobe_is_scheduled_from_the_last_round() -> None:
    c = cfg()
    dev = measured_device({"JPUSH": 9, "GETUI": 6}, c)
    run_reprobe_round(dev, c, acked=5, now=2 * HOUR)
    assert evaluate_target(dev, c) is None
    settled = dev.stats["JPUSH"].probed_at
    assert settled is not None
    assert plan_probes(dev, settled + HOUR - 1, c, budget(c)) == []
    assert len(plan_probes(dev, settled + HOUR, c, budget(c))) == 5


def test_reprobes_come_before_first_window_probes() -> None:
    c = cfg(max_probes_per_plan=6)
    dev = measured_device({"JPUSH": 9}, c)
    dev = register_device("d1", "a1", "huawei", "", ["HUAWEI", "JPUSH", "GETUI"], dev).device
    probes = plan_probes(dev, 2 * HOUR, c, budget(c))
    assert [(p.route, p.kind) for p in probes] == [("JPUSH", ProbeKind.AGAIN)] * 5 + [
        ("GETUI", ProbeKind.FIRST)
    ]


def test_probe_cost_counts_every_probe() -> None:
    c = cfg()
    dev = measured_device({"JPUSH": 9, "GETUI": 6}, c)
    run_reprobe_round(dev, c, acked=4, now=2 * HOUR)
    cost = probe_cost(dev)
    assert (cost.sent, cost.acked) == (20 + 5, 15 + 4)

"""Unit tests of streams.domain.routes: mapping, alternatives, stats, receipts, ranking."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streams.domain import routes
from streams.domain.routes import (
    KNOWN_ROUTES,
    MAX_PENDING,
    DeviceRoutes,
    ProbeKind,
    ReceiptOutcome,
    RouteMapping,
    RouteStats,
    SendKind,
    SendOutcome,
    alternative_routes,
    effective_rate,
    expire_pending,
    fallback_routes,
    load_mapping,
    normalise_route,
    original_route,
    parse_mapping,
    rank_alternatives,
    record_probe,
    record_receipt,
    record_send,
    register_device,
    success_rate,
)


@dataclass(frozen=True)
class Cfg:
    probe_count_first: int = 10
    prior: float = 0.5


def device(alternatives: list[str], original: str = "HUAWEI") -> DeviceRoutes:
    return register_device("d1", "a1", original.lower(), "", [original, *alternatives]).device


def measure(dev: DeviceRoutes, route: str, acked: int, sent: int = 10, now: float = 0.0) -> None:
    """Send `sent` FIRST probes on route, ack the first `acked`, let the rest expire."""
    ids = [f"{route}-{dev.probe_seq + i}" for i in range(sent)]
    dev.probe_seq += sent
    for sid in ids:
        assert record_probe(dev, sid, route, ProbeKind.FIRST, now, 10) is SendOutcome.RECORDED
    for sid in ids[:acked]:
        assert record_receipt(dev, sid, now + 1).outcome is ReceiptOutcome.COUNTED
    expire_pending(dev, now + 1000, 500)


# ---------------------------------------------------------------- mapping table


@pytest.mark.parametrize(
    ("manufacturer", "route"),
    [
        ("huawei", "HUAWEI"),
        ("HUAWEI", "HUAWEI"),
        ("honor", "HONOR"),
        ("HONOR", "HONOR"),
        ("Xiaomi", "XIAOMI"),
        ("Redmi", "XIAOMI"),
        ("POCO", "XIAOMI"),
        ("OPPO", "OPPO"),
        ("OnePlus", "OPPO"),
        ("realme", "OPPO"),
        ("vivo", "VIVO"),
        ("iQOO", "VIVO"),
        ("Apple", "APNS"),
        ("iPhone", "APNS"),
        ("iPad", "APNS"),
    ],
)
def test_every_listed_brand_maps_to_its_route(manufacturer: str, route: str) -> None:
    assert original_route(manufacturer) == RouteMapping(route, True)


@pytest.mark.parametrize("manufacturer", ["samsung", "Google", "motorola", "", None, "   "])
def test_unmapped_manufacturer_is_fcm_and_not_matched(manufacturer: str | None) -> None:
    assert original_route(manufacturer) == RouteMapping("FCM", False)


def test_mapping_is_case_and_whitespace_insensitive() -> None:
    assert original_route("  HuAwEi  ") == RouteMapping("HUAWEI", True)
    assert original_route("Huawei   Technologies Co., Ltd") == RouteMapping("HUAWEI", True)


def test_pattern_needs_a_word_boundary() -> None:
    assert original_route("vivobook").matched is False
    assert original_route("oppo-cn").route == "OPPO"


def test_model_is_used_when_manufacturer_is_unmapped() -> None:
    assert original_route("", "iPhone14,2") == RouteMapping("APNS", True)
    assert original_route("unknown", "Redmi Note 9") == RouteMapping("XIAOMI", True)
    assert original_route("Xiaomi", "iPhone") == RouteMapping("XIAOMI", True)


def test_packaged_table_routes_are_known_and_default_is_fcm() -> None:
    table = load_mapping()
    assert table.default == "FCM"
    assert {r.route for r in table.rules} == {
        "HUAWEI",
        "HONOR",
        "XIAOMI",
        "OPPO",
        "VIVO",
        "APNS",
    }
    assert all(r.route in KNOWN_ROUTES for r in table.rules)
    assert {"JPUSH", "GETUI"} <= set(KNOWN_ROUTES)


def test_custom_table_and_bad_table() -> None:
    table = parse_mapping("# c\nmanufacturer_pattern,route,note\nacme,jpush,x\n*,GETUI,d\n")
    assert original_route("ACME", table=table) == RouteMapping("JPUSH", True)
    assert original_route("other", table=table) == RouteMapping("GETUI", False)
    with pytest.raises(ValueError):
        parse_mapping("manufacturer_pattern,route,note\nacme,NOPE,x\n")
    with pytest.raises(ValueError):
        parse_mapping("brand,route\nacme,FCM\n")


# ---------------------------------------------------------------- route names and alternatives


def test_normalise_route() -> None:
    assert normalise_route(" jpush ") == "JPUSH"
    assert normalise_route("PIGEON") is None
    assert normalise_route(None) is None
    assert normalise_route(3) is None


def test_alternatives_keep_order_drop_original_duplicates_and_unknowns() -> None:
    alts, unknown = alternative_routes(
        "HUAWEI", ["HUAWEI", "jpush", "FCM", "PIGEON", "JPUSH", "getui", "", None]
    )
    assert alts == ["JPUSH", "FCM", "GETUI"]
    assert unknown == ["PIGEON", "", "None"]


def test_alternatives_of_nothing() -> None:
    assert alternative_routes("FCM", None) == ([], [])


def test_register_device_reports_unmapped_and_unknown() -> None:
    reg = register_device("d9", "a9", "Nokia", "3310", ["FCM", "JPUSH", "BOGUS"])
    assert reg.matched is False and reg.device.mapped is False
    assert reg.device.original == "FCM"
    assert reg.device.alternatives == ["JPUSH"]
    assert reg.unknown_routes == ["BOGUS"] == reg.device.unknown_routes
    assert set(reg.device.stats) == {"FCM", "JPUSH"}


def test_reregistration_keeps_stats_of_remaining_routes() -> None:
    dev = device(["JPUSH", "GETUI"])
    measure(dev, "JPUSH", 7)
    dev.target = ["GETUI"]
    again = register_device("d1", "a1", "huawei", "", ["HUAWEI", "JPUSH"], previous=dev).device
    assert again.alternatives == ["JPUSH"]
    assert again.stats["JPUSH"].probes_acked == 7
    assert "GETUI" not in again.stats
    assert again.target == []


# ---------------------------------------------------------------- success rate


def test_seven_acks_of_ten_probes_is_0_7() -> None:
    dev = device(["JPUSH"])
    measure(dev, "JPUSH", 7)
    assert success_rate(dev.stats["JPUSH"], 10) == pytest.approx(0.7)


def test_rate_is_none_until_window_complete_and_settled() -> None:
    stats = RouteStats(probes_sent=9, probes_acked=9)
    assert success_rate(stats, 10) is None
    stats = RouteStats(probes_sent=10, probes_acked=6, probes_lost=3)
    assert success_rate(stats, 10) is None
    stats.probes_lost = 4
    assert success_rate(stats, 10) == pytest.approx(0.6)
    assert success_rate(stats, 0) is None


def test_probes_beyond_first_window_do_not_change_rate() -> None:
    dev = device(["JPUSH"])
    measure(dev, "JPUSH", 7)
    for i in range(5):
        assert (
            record_probe(dev, f"x{i}", "JPUSH", ProbeKind.FIRST, 2000, 10) is SendOutcome.RECORDED
        )
        result = record_receipt(dev, f"x{i}", 2001)
        assert result.kind is SendKind.EXTRA
    stats = dev.stats["JPUSH"]
    assert (stats.probes_sent, stats.probes_acked) == (10, 7)
    assert success_rate(stats, 10) == pytest.approx(0.7)
    assert (stats.probes_total, stats.probes_acked_total) == (15, 12)


def test_effective_rate_prefers_last_reprobe_round() -> None:
    stats = RouteStats(probes_sent=10, probes_acked=9, probes_lost=1)
    assert effective_rate(stats, 10) == pytest.approx(0.9)
    stats.reprobe_rate = 0.2
    assert effective_rate(stats, 10) == pytest.approx(0.2)


@given(st.integers(0, 50), st.integers(0, 50), st.integers(0, 50), st.integers(1, 50))
def test_success_rate_within_unit_interval(sent: int, acked: int, lost: int, window: int) -> None:
    rate = success_rate(RouteStats(probes_sent=sent, probes_acked=acked, probes_lost=lost), window)
    assert rate is None or 0.0 <= rate <= 1.0


# ---------------------------------------------------------------- sends and receipts


def test_send_and_receipt_on_original_route() -> None:
    dev = device(["JPUSH"])
    assert record_send(dev, "s1", "huawei", 10.0) is SendOutcome.RECORDED
    result = record_receipt(dev, "s1", 11.0)
    assert (result.outcome, result.route, result.kind) == (
        ReceiptOutcome.COUNTED,
        "HUAWEI",
        SendKind.SEND,
    )
    assert (dev.stats["HUAWEI"].sends, dev.stats["HUAWEI"].receipts) == (1, 1)


def test_duplicate_receipt_is_counted_once() -> None:
    dev = device(["JPUSH"])
    record_probe(dev, "p1", "JPUSH", ProbeKind.FIRST, 0.0, 10)
    assert record_receipt(dev, "p1", 1.0).outcome is ReceiptOutcome.COUNTED
    assert record_receipt(dev, "p1", 2.0).outcome is ReceiptOutcome.DUPLICATE
    assert record_receipt(dev, "p1", 3.0).outcome is ReceiptOutcome.DUPLICATE
    assert dev.stats["JPUSH"].probes_acked == 1
    assert dev.duplicate_receipts == 2


def test_unknown_and_missing_send_ids_are_reported() -> None:
    dev = device(["JPUSH"])
    assert record_receipt(dev, "nope", 1.0).outcome is ReceiptOutcome.UNKNOWN_SEND
    assert record_receipt(dev, None, 1.0).outcome is ReceiptOutcome.MISSING_SEND_ID
    assert record_receipt(dev, "", 1.0).outcome is ReceiptOutcome.MISSING_SEND_ID
    assert dev.unmatched_receipts == 3


def test_send_rejections() -> None:
    dev = device(["JPUSH"])
    assert record_send(dev, "s1", "PIGEON", 0.0) is SendOutcome.UNKNOWN_ROUTE
    assert record_send(dev, None, "FCM", 0.0) is SendOutcome.MISSING_SEND_ID
    assert record_send(dev, "s1", "FCM", 0.0) is SendOutcome.RECORDED
    assert record_send(dev, "s1", "FCM", 0.0) is SendOutcome.DUPLICATE
    record_receipt(dev, "s1", 1.0)
    assert record_send(dev, "s1", "FCM", 2.0) is SendOutcome.DUPLICATE
    assert dev.stats["FCM"].sends == 1


def test_late_receipt_after_expiry_counts_as_lost() -> None:
    dev = device(["JPUSH"])
    record_probe(dev, "p1", "JPUSH", ProbeKind.FIRST, 0.0, 10)
    assert expire_pending(dev, 100.0, 60.0) == 1
    assert record_receipt(dev, "p1", 101.0).outcome is ReceiptOutcome.UNKNOWN_SEND
    stats = dev.stats["JPUSH"]
    assert (stats.probes_acked, stats.probes_lost, stats.probed_at) == (0, 1, 100.0)


def test_pending_is_bounded_and_evicted_probes_are_lost() -> None:
    dev = device(["JPUSH"])
    for i in range(MAX_PENDING + 5):
        record_probe(dev, f"p{i}", "JPUSH", ProbeKind.FIRST, float(i), 1000)
    assert len(dev.pending) == MAX_PENDING
    assert dev.stats["JPUSH"].probes_lost == 5
    assert "p0" not in dev.pending and f"p{MAX_PENDING + 4}" in dev.pending


def test_recent_acked_is_bounded() -> None:
    dev = device(["JPUSH"])
    for i in range(routes.RECENT_ACKED + 10):
        record_send(dev, f"s{i}", "FCM", 0.0)
        record_receipt(dev, f"s{i}", 1.0)
    assert len(dev.recent_acked) == routes.RECENT_ACKED
    assert dev.stats["FCM"].receipts == routes.RECENT_ACKED + 10


@given(st.lists(st.sampled_from([f"p{i}" for i in range(8)] + ["zz", ""]), max_size=40))
def test_receipts_never_exceed_probes(receipts: list[str]) -> None:
    dev = device(["JPUSH"])
    for i in range(8):
        record_probe(dev, f"p{i}", "JPUSH", ProbeKind.FIRST, 0.0, 10)
    for sid in receipts:
        record_receipt(dev, sid, 1.0)
    stats = dev.stats["JPUSH"]
    assert stats.probes_acked == len({s for s in receipts if s.startswith("p")})
    assert stats.probes_acked <= stats.probes_sent


# ---------------------------------------------------------------- ranking and fallback


def test_rank_by_rate_best_first() -> None:
    dev = device(["JPUSH", "GETUI", "FCM"])
    measure(dev, "JPUSH", 3)
    measure(dev, "GETUI", 9)
    measure(dev, "FCM", 6)
    assert rank_alternatives(dev, 10) == ["GETUI", "FCM", "JPUSH"]


def test_rank_ties_keep_registration_order() -> None:
    dev = device(["GETUI", "JPUSH", "FCM"])
    for route in ("GETUI", "JPUSH", "FCM"):
        measure(dev, route, 5)
    assert rank_alternatives(dev, 10) == ["GETUI", "JPUSH", "FCM"]


def test_unmeasured_routes_use_the_prior() -> None:
    dev = device(["JPUSH", "GETUI", "FCM"])
    measure(dev, "JPUSH", 4)
    measure(dev, "FCM", 6)
    assert rank_alternatives(dev, 10) == ["FCM", "GETUI", "JPUSH"]
    assert rank_alternatives(dev, 10, prior=0.0) == ["FCM", "JPUSH", "GETUI"]
    assert rank_alternatives(dev, 10, prior={"GETUI": 0.95}) == ["GETUI", "FCM", "JPUSH"]
    assert rank_alternatives(device(["JPUSH", "GETUI"]), 10) == ["JPUSH", "GETUI"]


def test_fallback_routes_targets_first_then_ranking() -> None:
    dev = device(["JPUSH", "GETUI", "FCM"])
    measure(dev, "JPUSH", 9)
    measure(dev, "GETUI", 8)
    measure(dev, "FCM", 7)
    assert fallback_routes(dev, Cfg()) == ["JPUSH"]
    assert fallback_routes(dev, Cfg(), top_n=2) == ["JPUSH", "GETUI"]
    dev.target = ["FCM"]
    assert fallback_routes(dev, Cfg(), top_n=2) == ["FCM", "JPUSH"]
    assert fallback_routes(dev, Cfg(), top_n=0) == []
    assert fallback_routes(device([]), Cfg()) == []


@given(
    st.lists(st.sampled_from(list(KNOWN_ROUTES)), unique=True, max_size=8),
    st.lists(st.integers(0, 10), min_size=8, max_size=8),
    st.lists(st.booleans(), min_size=8, max_size=8),
)
def test_rank_is_a_permutation_of_alternatives(
    alts: list[str], acks: list[int], measured: list[bool]
) -> None:
    original = "HUAWEI" if "HUAWEI" not in alts else "HONOR"
    dev = device(alts, original=original)
    alternatives = list(dev.alternatives)
    for route, acked, is_measured in zip(alternatives, acks, measured, strict=False):
        if is_measured:
            measure(dev, route, acked)
    ranked = rank_alternatives(dev, 10)
    assert sorted(ranked) == sorted(alternatives)
    rates = [effective_rate(dev.stats[r], 10) for r in ranked]
    values = [0.5 if r is None else r for r in rates]
    assert values == sorted(values, reverse=True)


# ---------------------------------------------------------------- serialisation


def test_device_round_trips_through_json() -> None:
    dev = device(["JPUSH", "GETUI"])
    measure(dev, "JPUSH", 7)
    record_send(dev, "s1", "HUAWEI", 5.0)
    record_probe(dev, "p1", "GETUI", ProbeKind.FIRST, 6.0, 10)
    dev.target = ["JPUSH"]
    dev.probe_tokens, dev.probe_tokens_at = 2.5, 6.0
    data = json.loads(json.dumps(dev.to_dict()))
    back = DeviceRoutes.from_dict(data)
    assert back == dev
    assert record_receipt(back, "p1", 7.0).kind is SendKind.FIRST


def test_from_dict_tolerates_missing_optional_keys() -> None:
    back = DeviceRoutes.from_dict({"device_id": "d", "account_id": "a", "original": "FCM"})
    assert back.alternatives == [] and back.pending == {} and back.target == []
    assert RouteStats.from_dict({"sends": 2}) == RouteStats(sends=2)

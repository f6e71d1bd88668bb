"""Unit tests of streams.domain.campaigns: tallies and the campaign fallback decision."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from streams.domain.campaigns import (
    CampaignReceipt,
    CampaignTally,
    decide,
    record_receipt,
    record_target,
)

DEVICES = [f"dev{i:02d}" for i in range(10)]


def tally_with(acked: int, targeted: list[str] = DEVICES) -> CampaignTally:
    tally = CampaignTally("c1")
    for device_id in targeted:
        record_target(tally, device_id)
    for device_id in targeted[:acked]:
        assert record_receipt(tally, device_id, "HUAWEI", "HUAWEI") is CampaignReceipt.COUNTED
    return tally


def test_eight_of_ten_acked_above_threshold_no_fallback() -> None:
    decision = decide(tally_with(8), 0.5)
    assert (decision.targeted, decision.acked, decision.ratio) == (10, 8, 0.8)
    assert decision.fallback is False
    assert decision.fallback_devices == []
    assert decision.silent_devices == ["dev08", "dev09"]


def test_three_of_ten_acked_falls_back_for_exactly_the_seven_silent() -> None:
    decision = decide(tally_with(3), 0.5)
    assert decision.ratio == 0.3 and decision.fallback is True
    assert decision.silent_devices == DEVICES[3:]
    assert decision.fallback_devices == DEVICES[3:]


def test_ratio_equal_to_threshold_does_not_fall_back() -> None:
    decision = decide(tally_with(5), 0.5)
    assert decision.ratio == 0.5 and decision.fallback is False


def test_zero_targeted_never_falls_back() -> None:
    decision = decide(CampaignTally("empty"), 0.5)
    assert (decision.targeted, decision.acked, decision.ratio) == (0, 0, None)
    assert decision.fallback is False and decision.silent_devices == []


def test_receipts_from_non_targeted_devices_are_ignored() -> None:
    tally = tally_with(3)
    assert record_receipt(tally, "stranger", "HUAWEI", "HUAWEI") is CampaignReceipt.NOT_TARGETED
    decision = decide(tally, 0.5)
    assert (decision.targeted, decision.acked) == (10, 3)
    assert "stranger" not in decision.silent_devices


def test_receipt_before_target_counts_once_the_target_arrives() -> None:
    tally = CampaignTally("c1")
    assert record_receipt(tally, "dev00", "XIAOMI", "XIAOMI") is CampaignReceipt.NOT_TARGETED
    assert decide(tally, 0.5).acked == 0
    record_target(tally, "dev00")
    assert decide(tally, 0.5).acked == 1


def test_only_original_route_receipts_count() -> None:
    tally = tally_with(0)
    outcome = record_receipt(tally, "dev00", "JPUSH", "HUAWEI")
    assert outcome is CampaignReceipt.NOT_ORIGINAL_ROUTE
    assert record_receipt(tally, "dev01", None, "HUAWEI") is CampaignReceipt.NOT_ORIGINAL_ROUTE
    assert record_receipt(tally, "dev02", "PIGEON", "HUAWEI") is CampaignReceipt.NOT_ORIGINAL_ROUTE
    assert record_receipt(tally, "dev03", " huawei ", "HUAWEI") is CampaignReceipt.COUNTED
    assert tally.acked == {"dev03"} and tally.ignored_receipts == 3


def test_duplicate_receipts_and_targets_are_idempotent() -> None:
    tally = tally_with(2)
    assert record_receipt(tally, "dev00", "HUAWEI", "HUAWEI") is CampaignReceipt.DUPLICATE
    assert record_target(tally, "dev00") is False
    assert tally.duplicate_receipts == 1
    assert (decide(tally, 0.5).targeted, decide(tally, 0.5).acked) == (10, 2)


def test_tally_and_decision_round_trip_through_json() -> None:
    tally = tally_with(4)
    record_receipt(tally, "early", "HUAWEI", "HUAWEI")
    back = CampaignTally.from_dict(json.loads(json.dumps(tally.to_dict())))
    assert back == tally
    decision = decide(back, 0.5)
    assert json.loads(json.dumps(decision.to_dict()))["silent_devices"] == DEVICES[4:]


@given(st.integers(0, 10), st.sampled_from([0.0, 0.1, 0.3, 0.5, 0.8, 1.0]))
def test_fallback_iff_ratio_below_threshold(acked: int, threshold: float) -> None:
    decision = decide(tally_with(acked), threshold)
    assert decision.fallback == (acked / 10 < threshold)
    assert decision.acked + len(decision.silent_devices) == decision.targeted == 10

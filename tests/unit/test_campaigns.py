"""Unit tests of streams.domain.campaigns: the campaign owner's tallies, decision and telling."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.domain.campaigns import (
    SETTLE,
    Campaign,
    CampaignDecision,
    decide,
    partitions_to_tell,
    record_tally,
)

T0 = 1_700_000_000.0


def owner(*tallies: tuple[int, int, int, float]) -> Campaign:
    """A campaign's owner that took these (partition, targeted, acked, due_at) tallies."""
    campaign = Campaign("c1", 0)
    for partition, targeted, acked, due_at in tallies:
        record_tally(campaign, partition, targeted, acked, due_at)
    return campaign


# --- record_tally --------------------------------------------------------------------------------


def test_a_tally_replaces_the_partitions_previous_one_and_partitions_add_up() -> None:
    campaign = owner((0, 3, 1, T0), (1, 2, 2, T0 + 1), (0, 5, 4, T0 + 2))
    assert campaign.parts == {"0": [5, 4, T0 + 2], "1": [2, 2, T0 + 1]}
    assert (campaign.targeted, campaign.acked) == (7, 6)


def test_the_same_tally_twice_changes_nothing() -> None:
    campaign = owner((0, 3, 1, T0), (2, 4, 0, T0 + 5))
    before = campaign.to_dict()
    assert record_tally(campaign, 2, 4, 0, T0 + 5) is False
    assert record_tally(campaign, 0, 3, 1, T0) is False
    assert campaign.to_dict() == before


def test_acked_never_counts_more_than_targeted() -> None:
    campaign = owner((0, 2, 5, T0))
    assert (campaign.targeted, campaign.acked) == (2, 2)


def test_the_decision_time_is_the_latest_receipt_deadline_plus_settle() -> None:
    campaign = Campaign("c1", 0)
    assert record_tally(campaign, 0, 1, 0, T0 + 30) is True
    assert campaign.due_at == T0 + 30 + SETTLE
    assert record_tally(campaign, 1, 1, 0, T0 + 10) is False  # earlier: no new timer
    assert campaign.due_at == T0 + 30 + SETTLE
    assert record_tally(campaign, 1, 2, 0, T0 + 45) is True   # later: the timer moves
    assert campaign.due_at == T0 + 45 + SETTLE


def test_a_later_tally_after_the_decision_asks_for_no_timer() -> None:
    campaign = owner((0, 2, 0, T0))
    decide(campaign, 0.5)
    assert record_tally(campaign, 1, 1, 0, T0 + 100) is False
    assert campaign.decided and campaign.fallback


def test_settle_is_a_short_positive_wait() -> None:
    assert 0 < SETTLE <= 5


# --- decide --------------------------------------------------------------------------------------


@pytest.mark.parametrize(("targeted", "acked", "threshold", "fallback", "ratio"), [
    (10, 4, 0.5, True, 0.4),
    (10, 5, 0.5, False, 0.5),     # equal: no fallback
    (10, 6, 0.5, False, 0.6),
    (4, 0, 0.1, True, 0.0),
    (4, 4, 1.0, False, 1.0),      # everything acked: never below 1.0
    (4, 3, 1.0, True, 0.75),
    (4, 0, 0.0, False, 0.0),      # threshold 0: never falls back
    (0, 0, 0.5, False, None),     # nothing targeted: no fallback, no ratio
    (0, 0, 1.0, False, None),
])
def test_decide_falls_back_only_below_the_threshold(targeted, acked, threshold, fallback,
                                                    ratio) -> None:
    campaign = owner((0, targeted, acked, T0)) if targeted else Campaign("c1", 0)
    decision = decide(campaign, threshold)
    assert decision == CampaignDecision("c1", targeted, acked, ratio, threshold, fallback)
    assert (campaign.decided, campaign.fallback) == (True, fallback)


def test_decide_counts_every_partition() -> None:
    campaign = owner((0, 4, 4, T0), (1, 4, 0, T0), (2, 2, 1, T0))  # 5 / 10
    assert decide(campaign, 0.5).fallback is False
    assert decide(campaign, 0.51).fallback is True


# --- partitions_to_tell --------------------------------------------------------------------------


def test_each_partition_is_told_once() -> None:
    campaign = owner((3, 1, 0, T0), (0, 1, 0, T0), (7, 1, 1, T0))
    decide(campaign, 0.5)
    assert partitions_to_tell(campaign) == [0, 3, 7]
    assert partitions_to_tell(campaign) == []
    record_tally(campaign, 3, 2, 0, T0 + 1)   # more devices in a told partition
    assert partitions_to_tell(campaign) == []
    record_tally(campaign, 5, 1, 0, T0 + 1)   # a partition that had none yet
    assert partitions_to_tell(campaign) == [5]
    assert sorted(campaign.told) == [0, 3, 5, 7]


def test_what_was_told_survives_a_round_trip_through_json() -> None:
    campaign = owner((1, 1, 0, T0), (2, 1, 0, T0))
    decide(campaign, 0.5)
    assert partitions_to_tell(campaign) == [1, 2]
    restored = Campaign.from_dict(json.loads(json.dumps(campaign.to_dict())))
    assert restored == campaign
    assert partitions_to_tell(restored) == []


# --- properties ----------------------------------------------------------------------------------


@st.composite
def partition_tallies(draw: st.DrawFn) -> list[tuple[int, int, float]]:
    """One account partition's successive tallies: counts and deadline never go down."""
    steps = draw(st.lists(st.tuples(st.integers(0, 5), st.integers(0, 5), st.integers(0, 60)),
                          min_size=1, max_size=6))
    tallies, targeted, acked, due_at = [], 0, 0, T0
    for more, receipts, later in steps:
        targeted += more
        acked = min(targeted, acked + receipts)
        due_at += later
        tallies.append((targeted, acked, due_at))
    return tallies


@st.composite
def delivered(draw: st.DrawFn) -> tuple[dict[int, list[tuple[int, int, float]]],
                                        list[tuple[int, tuple[int, int, float]]]]:
    """Tallies per partition, and the order the owner sees them: each partition's in order,
    with repeats and a replay from an earlier offset, interleaved with the other partitions."""
    parts = draw(st.dictionaries(st.integers(0, 7), partition_tallies(), min_size=1,
                                 max_size=4))
    queues: dict[int, list[tuple[int, int, float]]] = {}
    for p, tallies in parts.items():
        k = draw(st.integers(0, len(tallies)))
        j = draw(st.integers(0, k))
        seen = tallies[:k] + tallies[j:]                  # replayed from offset j
        repeats = draw(st.lists(st.integers(0, len(seen) - 1), max_size=3))
        for i in sorted(repeats, reverse=True):
            seen.insert(i, seen[i])                       # delivered twice in a row
        queues[p] = seen
    order = []
    while any(queues.values()):
        p = draw(st.sampled_from(sorted(q for q, v in queues.items() if v)))
        order.append((p, queues[p].pop(0)))
    return parts, order


@settings(max_examples=200, deadline=None)
@given(data=delivered(), threshold=st.sampled_from([0.0, 0.25, 0.5, 0.75, 1.0]))
def test_totals_are_the_sum_of_each_partitions_latest_tally_whatever_the_repeats(
        data, threshold) -> None:
    parts, order = data
    campaign = Campaign("c1", 0)
    for p, (targeted, acked, due_at) in order:
        record_tally(campaign, p, targeted, acked, due_at)
    latest = {p: tallies[-1] for p, tallies in parts.items()}
    targeted = sum(t for t, _, _ in latest.values())
    acked = sum(a for _, a, _ in latest.values())
    assert (campaign.targeted, campaign.acked) == (targeted, acked)
    assert campaign.due_at == round(max(d for _, _, d in latest.values()) + SETTLE, 3)
    decision = decide(campaign, threshold)
    assert decision.fallback == (targeted > 0 and acked / targeted < threshold)
    assert decision.ratio == (acked / targeted if targeted else None)
    assert partitions_to_tell(campaign) == sorted(parts)


@given(data=delivered(), decided=st.booleans())
def test_a_campaign_survives_a_round_trip_through_json(data, decided) -> None:
    _, order = data
    campaign = Campaign("c-✓", 5)
    for p, (targeted, acked, due_at) in order:
        record_tally(campaign, p, targeted, acked, due_at)
    if decided:
        decide(campaign, 0.5)
        partitions_to_tell(campaign)
    restored = Campaign.from_dict(json.loads(json.dumps(campaign.to_dict())))
    assert restored == campaign
    assert (restored.targeted, restored.acked) == (campaign.targeted, campaign.acked)

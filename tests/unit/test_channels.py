"""Unit tests of streams.domain.channels: Method A scoring, ranking, plans, reads, escalation."""

from __future__ import annotations

import copy
import dataclasses
import itertools
import json
import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streams.domain.channels import (
    ESTABLISHED,
    NEW,
    Account,
    ChannelPolicy,
    Message,
    PushPlan,
    Send,
    escalation_target,
    importance_base,
    is_due,
    plan_push,
    rank,
    ranking,
    record_read,
    send_id,
)

ALL = ("APP", "WECHAT", "SMS", "EMAIL")
IMPORTANCES = ("LOW", "NORMAL", "HIGH", "URGENT")
DEADLINES = {"LOW": 7200.0, "NORMAL": 900.0, "HIGH": 120.0, "URGENT": 15.0}


def account(
    *,
    devices: tuple[str, ...] = ("d1",),
    addresses: tuple[str, ...] = ("WECHAT", "SMS", "EMAIL"),
    feedback: dict[str, int] | None = None,
    first: dict[str, int] | None = None,
    **kw,
) -> Account:
    """An account with the given devices, address channels and statistics."""
    return Account("acc-1", devices=list(devices), addresses=list(addresses),
                   feedback_count=dict(feedback or {}), first_feedback=dict(first or {}), **kw)


def established(**kw) -> Account:
    """An account that is past its new-account pushes."""
    return account(pushes=10, lifecycle=ESTABLISHED, **kw)


def message(
    *,
    sent: tuple[str, ...] = ("APP",),
    deadline_at: float | None = 100.0,
    **kw,
) -> Message:
    """A message of acc-1 that went out on `sent`."""
    return Message("m-1", "acc-1", kw.pop("importance", "NORMAL"), kw.pop("partition", 0),
                   sent=list(sent), deadline_at=deadline_at, **kw)


# --- policy defaults -----------------------------------------------------------------------------


def test_policy_defaults_match_the_documented_order_and_deadlines() -> None:
    policy = ChannelPolicy()
    assert policy.order == ALL
    assert policy.new_account_pushes == 5
    assert (policy.k1, policy.k2) == (1.0, 2.0)
    assert set(policy.read_deadlines) == set(IMPORTANCES)
    deadlines = [policy.read_deadlines[i] for i in IMPORTANCES]
    assert deadlines == sorted(deadlines, reverse=True)  # more important -> shorter deadline
    assert all(d > 0 for d in deadlines)


def test_policy_default_deadlines_are_not_shared_between_instances() -> None:
    a, b = ChannelPolicy(), ChannelPolicy()
    assert a.read_deadlines == b.read_deadlines
    assert a.read_deadlines is not b.read_deadlines


# --- importance_base -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("k1", "k2", "feedback", "first", "expected"),
    [
        (1.0, 2.0, {"WECHAT": 5, "APP": 2}, {"WECHAT": 3, "APP": 1}, {"WECHAT": 11.0, "APP": 4.0}),
        (0.5, 3.0, {"WECHAT": 5, "APP": 2}, {"WECHAT": 3, "APP": 1}, {"WECHAT": 11.5, "APP": 4.0}),
        (0.5, 3.0, {"SMS": 4}, {"EMAIL": 2}, {"SMS": 2.0, "EMAIL": 6.0}),
        (1.0, 2.0, {"SMS": 4, "APP": 1}, {"APP": 1}, {"SMS": 4.0, "APP": 3.0}),
        (2.0, 0.0, {"WECHAT": 1}, {"WECHAT": 1, "APP": 7}, {"WECHAT": 2.0, "APP": 0.0}),
        (0.0, 1.0, {"WECHAT": 9, "SMS": 3}, {"SMS": 3}, {"WECHAT": 0.0, "SMS": 3.0}),
        (1.0, 2.0, {}, {}, {}),
    ],
)
def test_importance_base_hand_computed(k1, k2, feedback, first, expected) -> None:
    acc = account(feedback=feedback, first=first)
    assert importance_base(acc, k1, k2) == expected


def test_importance_base_only_reports_channels_seen_and_does_not_mutate() -> None:
    acc = account(feedback={"WECHAT": 2}, first={"WECHAT": 1})
    before = copy.deepcopy(acc.to_dict())
    scores = importance_base(acc, 1.0, 2.0)
    assert set(scores) == {"WECHAT"}  # APP, SMS, EMAIL are enabled but unscored
    assert scores["WECHAT"] == 4.0
    assert acc.to_dict() == before


@given(
    k1=st.floats(0, 10, allow_nan=False),
    k2=st.floats(0, 10, allow_nan=False),
    feedback=st.dictionaries(st.sampled_from(ALL), st.integers(0, 1000)),
    first=st.dictionaries(st.sampled_from(ALL), st.integers(0, 1000)),
)
def test_importance_base_property(k1, k2, feedback, first) -> None:
    scores = importance_base(account(feedback=feedback, first=first), k1, k2)
    assert set(scores) == set(feedback) | set(first)
    for c, s in scores.items():
        assert s == pytest.approx(k1 * feedback.get(c, 0) + k2 * first.get(c, 0))


# --- rank ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("enabled", list(itertools.permutations(ALL)))
def test_rank_ties_follow_the_default_order(enabled) -> None:
    assert rank({}, enabled, ALL) == list(ALL)
    assert rank({c: 3.0 for c in ALL}, set(enabled), ALL) == list(ALL)


@pytest.mark.parametrize(
    "order",
    [("SMS", "EMAIL", "WECHAT", "APP"), ("EMAIL", "APP", "SMS", "WECHAT"), ("WECHAT", "APP")],
)
def test_rank_ties_follow_a_custom_order(order) -> None:
    enabled = set(order)
    assert rank({}, enabled, order) == list(order)
    assert rank({c: 1.5 for c in order}, enabled, order) == list(order)


def test_rank_highest_score_first() -> None:
    scores = {"SMS": 3.0, "WECHAT": 5.0, "APP": 1.0, "EMAIL": 4.0}
    assert rank(scores, set(ALL), ALL) == ["WECHAT", "EMAIL", "SMS", "APP"]


def test_rank_partial_tie_among_scored_channels() -> None:
    scores = {"SMS": 2.0, "EMAIL": 2.0, "APP": 1.0}
    assert rank(scores, set(ALL), ALL) == ["SMS", "EMAIL", "APP", "WECHAT"]
    custom = ("EMAIL", "WECHAT", "SMS", "APP")
    assert rank(scores, set(ALL), custom) == ["EMAIL", "SMS", "APP", "WECHAT"]


def test_rank_unscored_enabled_channels_come_last_by_order() -> None:
    assert rank({"EMAIL": 1.0}, set(ALL), ALL) == ["EMAIL", "APP", "WECHAT", "SMS"]
    custom = ("SMS", "WECHAT", "EMAIL", "APP")
    assert rank({"APP": 0.5}, set(ALL), custom) == ["APP", "SMS", "WECHAT", "EMAIL"]


def test_rank_zero_score_ties_with_unscored() -> None:
    assert rank({"EMAIL": 0.0}, set(ALL), ALL) == list(ALL)


def test_rank_excludes_disabled_channels_even_with_high_scores() -> None:
    scores = {"EMAIL": 100.0, "WECHAT": 50.0, "SMS": 1.0}
    assert rank(scores, {"APP", "SMS"}, ALL) == ["SMS", "APP"]
    assert rank(scores, set(), ALL) == []


def test_rank_channel_missing_from_order_goes_after_ordered_ties() -> None:
    assert rank({}, {"FAX", "SMS", "APP"}, ALL) == ["APP", "SMS", "FAX"]
    assert rank({"FAX": 1.0}, {"FAX", "SMS", "APP"}, ALL) == ["FAX", "APP", "SMS"]


@given(
    scores=st.dictionaries(st.sampled_from(ALL), st.floats(0, 100, allow_nan=False)),
    enabled=st.sets(st.sampled_from(ALL)),
    order=st.permutations(ALL),
)
def test_rank_property(scores, enabled, order) -> None:
    ranked = rank(scores, enabled, order)
    assert sorted(ranked) == sorted(enabled)
    for a, b in itertools.pairwise(ranked):
        sa, sb = scores.get(a, 0.0), scores.get(b, 0.0)
        assert sa > sb or (sa == sb and order.index(a) < order.index(b))


# --- Account.enabled -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("devices", "addresses", "expected"),
    [
        ((), (), set()),
        (("d1",), (), {"APP"}),
        (("d1", "d2", "d3"), (), {"APP"}),
        ((), ("WECHAT",), {"WECHAT"}),
        ((), ("SMS", "EMAIL"), {"SMS", "EMAIL"}),
        (("d1",), ("WECHAT", "SMS", "EMAIL"), set(ALL)),
        (("d1",), ("SMS",), {"APP", "SMS"}),
    ],
)
def test_enabled(devices, addresses, expected) -> None:
    assert account(devices=devices, addresses=addresses).enabled() == expected


def test_enabled_follows_device_and_address_changes() -> None:
    acc = account(devices=(), addresses=())
    assert acc.enabled() == set()
    acc.devices.append("d1")
    assert acc.enabled() == {"APP"}
    acc.addresses = ["WECHAT"]
    assert acc.enabled() == {"APP", "WECHAT"}
    acc.devices = []
    assert acc.enabled() == {"WECHAT"}


# --- ranking (learned + override) ----------------------------------------------------------------


def learned_account(**kw) -> Account:
    """Learned ranking with the default policy: WECHAT (9), APP (4), SMS (1), EMAIL (0)."""
    return established(feedback={"WECHAT": 3, "APP": 2, "SMS": 1}, first={"WECHAT": 3, "APP": 1},
                       **kw)


LEARNED = ["WECHAT", "APP", "SMS", "EMAIL"]


def test_ranking_learned() -> None:
    assert ranking(learned_account(), ChannelPolicy()) == LEARNED


def test_ranking_without_statistics_is_the_configured_order() -> None:
    assert ranking(account(), ChannelPolicy()) == list(ALL)
    custom = ChannelPolicy(order=("EMAIL", "SMS", "WECHAT", "APP"))
    assert ranking(account(), custom) == ["EMAIL", "SMS", "WECHAT", "APP"]


def test_ranking_uses_policy_weights() -> None:
    acc = established(feedback={"APP": 3}, first={"WECHAT": 1})
    assert ranking(acc, ChannelPolicy(k1=1.0, k2=2.0))[:2] == ["APP", "WECHAT"]  # 3 > 2
    assert ranking(acc, ChannelPolicy(k1=1.0, k2=5.0))[:2] == ["WECHAT", "APP"]  # 5 > 3


def test_ranking_excludes_disabled_channels_with_scores() -> None:
    acc = established(devices=(), addresses=("SMS",), feedback={"APP": 50, "WECHAT": 40},
                      first={"APP": 20})
    assert ranking(acc, ChannelPolicy()) == ["SMS"]


def test_ranking_override_primary_and_secondary_win() -> None:
    acc = learned_account(primary="SMS", secondary="EMAIL")
    assert ranking(acc, ChannelPolicy()) == ["SMS", "EMAIL", "WECHAT", "APP"]
    acc = learned_account(primary="EMAIL", secondary="APP")
    assert ranking(acc, ChannelPolicy()) == ["EMAIL", "APP", "WECHAT", "SMS"]


def test_ranking_override_of_only_primary() -> None:
    acc = learned_account(primary="SMS")
    assert ranking(acc, ChannelPolicy()) == ["SMS", "WECHAT", "APP", "EMAIL"]


def test_ranking_override_equal_to_learned_keeps_learned_order() -> None:
    acc = learned_account(primary="WECHAT", secondary="APP")
    assert ranking(acc, ChannelPolicy()) == LEARNED


def test_ranking_override_same_channel_twice_is_not_duplicated() -> None:
    acc = learned_account(primary="SMS", secondary="SMS")
    assert ranking(acc, ChannelPolicy()) == ["SMS", "WECHAT", "APP", "EMAIL"]


def test_ranking_override_primary_not_enabled_is_skipped() -> None:
    acc = learned_account(addresses=("WECHAT", "SMS"), primary="EMAIL", secondary="SMS")
    # an unusable primary override leaves the learned primary first; the secondary stays second
    assert ranking(acc, ChannelPolicy()) == ["WECHAT", "SMS", "APP"]
    assert "EMAIL" not in ranking(acc, ChannelPolicy())


def test_ranking_override_secondary_not_enabled_is_skipped() -> None:
    acc = learned_account(devices=(), primary="SMS", secondary="APP")
    assert ranking(acc, ChannelPolicy()) == ["SMS", "WECHAT", "EMAIL"]


def test_ranking_override_entirely_disabled_falls_back_to_learned() -> None:
    acc = learned_account(addresses=("WECHAT",), primary="SMS", secondary="EMAIL")
    assert ranking(acc, ChannelPolicy()) == ["WECHAT", "APP"]


def test_ranking_clearing_the_override_restores_the_learned_ranking() -> None:
    acc = learned_account(primary="EMAIL", secondary="SMS")
    assert ranking(acc, ChannelPolicy())[:2] == ["EMAIL", "SMS"]
    acc.primary, acc.secondary = None, None
    assert ranking(acc, ChannelPolicy()) == LEARNED


def test_ranking_override_of_only_secondary_keeps_learned_primary() -> None:
    acc = learned_account(secondary="EMAIL")
    assert ranking(acc, ChannelPolicy())[:2] == ["WECHAT", "EMAIL"]


@given(
    feedback=st.dictionaries(st.sampled_from(ALL), st.integers(0, 20)),
    first=st.dictionaries(st.sampled_from(ALL), st.integers(0, 20)),
    devices=st.booleans(),
    addresses=st.sets(st.sampled_from(ALL[1:])),
    primary=st.none() | st.sampled_from(ALL),
    secondary=st.none() | st.sampled_from(ALL),
)
def test_ranking_is_a_permutation_of_enabled_channels(
    feedback, first, devices, addresses, primary, secondary
) -> None:
    acc = established(devices=("d1",) if devices else (), addresses=tuple(addresses),
                      feedback=feedback, first=first, primary=primary, secondary=secondary)
    ranked = ranking(acc, ChannelPolicy())
    assert sorted(ranked) == sorted(acc.enabled())
    if primary in acc.enabled():
        assert ranked[0] == primary


# --- plan_push -----------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [1, 2, 3, 5])
def test_plan_push_new_account_fans_out_for_exactly_n_pushes(n) -> None:
    policy = ChannelPolicy(new_account_pushes=n, read_deadlines=DEADLINES)
    acc = account()
    fanout = tuple(Send(c, "FANOUT", 0) for c in ALL)
    for i in range(1, n + 1):
        plan = plan_push(acc, "HIGH", 1000.0 + i, policy)
        assert plan == PushPlan(fanout, None, established=(i == n), unreachable=False)
        assert acc.pushes == i
        assert acc.lifecycle == (ESTABLISHED if i == n else NEW)
    for i, imp in enumerate(IMPORTANCES * 2, start=n + 1):
        now = 5000.0 + i
        plan = plan_push(acc, imp, now, policy)
        assert plan == PushPlan((Send("APP", "PRIMARY", 0),), now + DEADLINES[imp],
                                established=False, unreachable=False)
        assert acc.pushes == i
        assert acc.lifecycle == ESTABLISHED


def test_plan_push_default_policy_is_five_fanouts_then_primary() -> None:
    acc = account(devices=(), addresses=("SMS", "WECHAT"))
    plans = [plan_push(acc, "NORMAL", 0.0, ChannelPolicy()) for _ in range(7)]
    assert [p.established for p in plans] == [False] * 4 + [True, False, False]
    assert [len(p.sends) for p in plans] == [2] * 5 + [1, 1]
    assert all(s.reason == "FANOUT" for p in plans[:5] for s in p.sends)
    assert [p.deadline_at for p in plans[5:]] == [3600.0, 3600.0]


@pytest.mark.parametrize("importance", IMPORTANCES)
def test_plan_push_deadline_per_importance_default(importance) -> None:
    policy = ChannelPolicy()
    plan = plan_push(established(), importance, 1_700_000_000.5, policy)
    assert plan.deadline_at == 1_700_000_000.5 + policy.read_deadlines[importance]
    assert plan.sends == (Send("APP", "PRIMARY", 0),)


@pytest.mark.parametrize("now", [1_700_000_000.1234567, 0.0004, 12.3456, 1_699_999_999.9999])
def test_plan_push_deadline_is_whole_milliseconds(now) -> None:
    plan = plan_push(established(), "HIGH", now, ChannelPolicy())
    assert plan.deadline_at is not None
    assert abs(plan.deadline_at - (now + 600.0)) <= 0.0005 + 1e-9
    assert plan.deadline_at == round(plan.deadline_at, 3)
    millis = plan.deadline_at * 1000
    assert abs(millis - round(millis)) < 1e-3


def test_plan_push_zero_new_account_pushes_is_established_from_the_first_push() -> None:
    policy = ChannelPolicy(new_account_pushes=0, read_deadlines=DEADLINES)
    acc = account()
    first = plan_push(acc, "URGENT", 10.0, policy)
    assert first == PushPlan((Send("APP", "PRIMARY", 0),), 25.0, established=True,
                             unreachable=False)
    assert (acc.pushes, acc.lifecycle) == (1, ESTABLISHED)
    second = plan_push(acc, "LOW", 20.0, policy)
    assert second == PushPlan((Send("APP", "PRIMARY", 0),), 7220.0, established=False,
                              unreachable=False)
    assert acc.pushes == 2


def test_plan_push_fanout_only_on_enabled_channels_in_configured_order() -> None:
    order = ("EMAIL", "SMS", "WECHAT", "APP")
    policy = ChannelPolicy(new_account_pushes=2, order=order)
    acc = account(addresses=("WECHAT", "EMAIL"))
    plan = plan_push(acc, "NORMAL", 0.0, policy)
    assert plan.sends == (Send("EMAIL", "FANOUT", 0), Send("WECHAT", "FANOUT", 0),
                          Send("APP", "FANOUT", 0))


def test_plan_push_fanout_ignores_learned_scores_and_override() -> None:
    policy = ChannelPolicy(new_account_pushes=3)
    acc = account(addresses=("WECHAT", "SMS"), feedback={"SMS": 9}, first={"SMS": 9},
                  primary="WECHAT", secondary="SMS")
    plan = plan_push(acc, "NORMAL", 0.0, policy)
    assert [s.channel for s in plan.sends] == ["APP", "WECHAT", "SMS"]
    assert {s.reason for s in plan.sends} == {"FANOUT"}
    assert {s.attempt for s in plan.sends} == {0}


@pytest.mark.parametrize("lifecycle", [NEW, ESTABLISHED])
def test_plan_push_unreachable_account_is_not_counted(lifecycle) -> None:
    policy = ChannelPolicy(new_account_pushes=1)
    acc = account(devices=(), addresses=(), pushes=3 if lifecycle == ESTABLISHED else 0,
                  lifecycle=lifecycle, primary="SMS")
    before = copy.deepcopy(acc.to_dict())
    for imp in IMPORTANCES:
        plan = plan_push(acc, imp, 50.0, policy)
        assert plan == PushPlan((), None, established=False, unreachable=True)
    assert acc.to_dict() == before


def test_plan_push_counting_starts_when_account_becomes_reachable() -> None:
    policy = ChannelPolicy(new_account_pushes=2)
    acc = account(devices=(), addresses=())
    for _ in range(5):
        assert plan_push(acc, "NORMAL", 0.0, policy).unreachable
    acc.addresses = ["SMS"]
    plans = [plan_push(acc, "NORMAL", 0.0, policy) for _ in range(3)]
    assert [p.sends[0].reason for p in plans] == ["FANOUT", "FANOUT", "PRIMARY"]
    assert [p.established for p in plans] == [False, True, False]
    assert not any(p.unreachable for p in plans)


def test_plan_push_primary_follows_the_learned_ranking() -> None:
    policy = ChannelPolicy()
    acc = established(feedback={"SMS": 1}, first={"SMS": 1})
    assert plan_push(acc, "NORMAL", 0.0, policy).sends == (Send("SMS", "PRIMARY", 0),)
    acc.feedback_count["EMAIL"] = 4  # 4 > 1 + 2
    assert plan_push(acc, "NORMAL", 0.0, policy).sends == (Send("EMAIL", "PRIMARY", 0),)


def test_plan_push_primary_follows_the_override() -> None:
    acc = learned_account(primary="EMAIL", secondary="SMS")
    assert plan_push(acc, "HIGH", 0.0, ChannelPolicy()).sends == (Send("EMAIL", "PRIMARY", 0),)
    acc.primary = acc.secondary = None
    assert plan_push(acc, "HIGH", 0.0, ChannelPolicy()).sends == (Send("WECHAT", "PRIMARY", 0),)


def test_plan_push_established_account_stays_established_when_policy_grows() -> None:
    acc = account(pushes=2, lifecycle=ESTABLISHED)
    plan = plan_push(acc, "NORMAL", 0.0, ChannelPolicy(new_account_pushes=10))
    assert plan.sends == (Send("APP", "PRIMARY", 0),)
    assert not plan.established
    assert (acc.pushes, acc.lifecycle) == (3, ESTABLISHED)


def test_plan_push_new_account_past_a_lowered_threshold_is_established_at_once() -> None:
    acc = account(pushes=4, lifecycle=NEW)
    plan = plan_push(acc, "NORMAL", 100.0, ChannelPolicy(new_account_pushes=2))
    assert plan.sends == (Send("APP", "PRIMARY", 0),)
    assert plan.deadline_at == 3700.0
    assert plan.established
    assert (acc.pushes, acc.lifecycle) == (5, ESTABLISHED)


def test_plan_push_single_channel_account() -> None:
    acc = established(devices=(), addresses=("EMAIL",))
    plan = plan_push(acc, "URGENT", 1.0, ChannelPolicy())
    assert plan == PushPlan((Send("EMAIL", "PRIMARY", 0),), 61.0, False, False)


# --- record_read ---------------------------------------------------------------------------------


def test_record_read_first_read_counts_first_feedback_and_cancels_the_deadline() -> None:
    acc = established(feedback={"APP": 2}, first={"APP": 1})
    msg = message(sent=("APP",), deadline_at=500.0)
    assert record_read(acc, msg, "APP") is True
    assert acc.feedback_count == {"APP": 3}
    assert acc.first_feedback == {"APP": 2}
    assert msg.deadline_at is None
    assert msg.reads == ["APP"]
    assert msg.sent == ["APP"]
    assert msg.escalated is False


def test_record_read_later_read_on_another_channel_counts_feedback_only() -> None:
    acc = established()
    msg = message(sent=("APP", "WECHAT"), deadline_at=500.0)
    assert record_read(acc, msg, "WECHAT")
    assert record_read(acc, msg, "APP")
    assert acc.feedback_count == {"WECHAT": 1, "APP": 1}
    assert acc.first_feedback == {"WECHAT": 1}
    assert msg.reads == ["WECHAT", "APP"]
    assert msg.deadline_at is None


def test_record_read_later_read_does_not_touch_a_deadline() -> None:
    acc = established()
    msg = message(deadline_at=500.0)
    msg.reads = ["SMS"]  # state read back with a read already counted
    assert record_read(acc, msg, "APP")
    assert msg.deadline_at == 500.0
    assert acc.first_feedback == {}
    assert acc.feedback_count == {"APP": 1}


@pytest.mark.parametrize("repeat", ["APP", "WECHAT"])
def test_record_read_duplicate_changes_nothing(repeat) -> None:
    acc = established()
    msg = message(sent=("APP", "WECHAT"), deadline_at=500.0)
    assert record_read(acc, msg, "APP")
    assert record_read(acc, msg, "WECHAT")
    acc_before, msg_before = copy.deepcopy(acc.to_dict()), copy.deepcopy(msg.to_dict())
    assert record_read(acc, msg, repeat) is False
    assert acc.to_dict() == acc_before
    assert msg.to_dict() == msg_before


def test_record_read_duplicate_right_after_first_read() -> None:
    acc = established()
    msg = message(deadline_at=500.0)
    assert record_read(acc, msg, "SMS")
    assert record_read(acc, msg, "SMS") is False
    assert acc.feedback_count == {"SMS": 1}
    assert acc.first_feedback == {"SMS": 1}
    assert msg.reads == ["SMS"]


def test_record_read_counts_accumulate_over_messages() -> None:
    acc = established()
    for i, (first_ch, *later) in enumerate([("SMS", "APP"), ("APP",), ("SMS",), ("APP", "SMS")]):
        msg = Message(f"m-{i}", "acc-1", "NORMAL", 0, sent=list(ALL), deadline_at=1.0)
        assert record_read(acc, msg, first_ch)
        for ch in later:
            assert record_read(acc, msg, ch)
    assert acc.first_feedback == {"SMS": 2, "APP": 2}
    assert acc.feedback_count == {"SMS": 3, "APP": 3}


def test_worked_example_reads_mostly_and_first_on_wechat_make_wechat_primary() -> None:
    policy = ChannelPolicy(new_account_pushes=4)
    acc = account(addresses=("WECHAT", "SMS"))
    reads = [("WECHAT", "APP"), ("WECHAT",), ("APP", "WECHAT"), ("WECHAT", "SMS")]
    for i, channels in enumerate(reads):
        plan = plan_push(acc, "NORMAL", float(i), policy)
        assert [s.channel for s in plan.sends] == ["APP", "WECHAT", "SMS"]
        msg = Message(f"m-{i}", acc.account_id, "NORMAL", 0,
                      sent=[s.channel for s in plan.sends], deadline_at=plan.deadline_at)
        for ch in channels:
            assert record_read(acc, msg, ch)
    assert acc.lifecycle == ESTABLISHED
    assert acc.feedback_count == {"WECHAT": 4, "APP": 2, "SMS": 1}
    assert acc.first_feedback == {"WECHAT": 3, "APP": 1}
    assert importance_base(acc, policy.k1, policy.k2) == {"WECHAT": 10.0, "APP": 4.0, "SMS": 1.0}
    assert ranking(acc, policy) == ["WECHAT", "APP", "SMS"]
    plan = plan_push(acc, "HIGH", 1000.0, policy)
    assert plan.sends == (Send("WECHAT", "PRIMARY", 0),)
    assert plan.deadline_at == 1000.0 + policy.read_deadlines["HIGH"]
    msg = Message("m-next", acc.account_id, "HIGH", 0, sent=["WECHAT"],
                  deadline_at=plan.deadline_at)
    assert escalation_target(acc, msg, policy) == "APP"


# --- escalation_target ---------------------------------------------------------------------------


def test_escalation_target_is_the_secondary_after_the_primary() -> None:
    acc = learned_account()
    assert escalation_target(acc, message(sent=("WECHAT",)), ChannelPolicy()) == "APP"


def test_escalation_target_skips_every_channel_already_sent() -> None:
    acc = learned_account()
    policy = ChannelPolicy()
    assert escalation_target(acc, message(sent=("WECHAT", "APP")), policy) == "SMS"
    assert escalation_target(acc, message(sent=("APP", "SMS", "WECHAT")), policy) == "EMAIL"
    assert escalation_target(acc, message(sent=("APP",)), policy) == "WECHAT"


def test_escalation_target_none_when_nothing_is_left() -> None:
    policy = ChannelPolicy()
    assert escalation_target(learned_account(), message(sent=ALL), policy) is None
    single = established(devices=(), addresses=("SMS",))
    assert escalation_target(single, message(sent=("SMS",)), policy) is None
    unreachable = established(devices=(), addresses=())
    assert escalation_target(unreachable, message(sent=("SMS",)), policy) is None


def test_escalation_target_respects_override_secondary() -> None:
    acc = learned_account(primary="SMS", secondary="EMAIL")
    assert escalation_target(acc, message(sent=("SMS",)), ChannelPolicy()) == "EMAIL"
    acc.primary, acc.secondary = None, None
    assert escalation_target(acc, message(sent=("SMS",)), ChannelPolicy()) == "WECHAT"


def test_escalation_target_skips_a_disabled_override_secondary() -> None:
    acc = learned_account(addresses=("WECHAT", "SMS"), primary="SMS", secondary="EMAIL")
    assert escalation_target(acc, message(sent=("SMS",)), ChannelPolicy()) == "WECHAT"


def test_escalation_target_never_picks_a_channel_disabled_since_the_send() -> None:
    acc = learned_account(addresses=("SMS",))  # WECHAT address removed after the send
    assert escalation_target(acc, message(sent=("SMS",)), ChannelPolicy()) == "APP"


def test_escalation_target_does_not_mutate() -> None:
    acc, msg = learned_account(), message(sent=("WECHAT",))
    before = (copy.deepcopy(acc.to_dict()), copy.deepcopy(msg.to_dict()))
    escalation_target(acc, msg, ChannelPolicy())
    assert (acc.to_dict(), msg.to_dict()) == before


# --- is_due --------------------------------------------------------------------------------------


def test_is_due_before_at_and_after_the_due_time() -> None:
    msg = message(deadline_at=100.0)
    assert not is_due(msg, 100.0, 0.0)
    assert not is_due(msg, 100.0, 99.999)
    assert is_due(msg, 100.0, 100.0)
    assert is_due(msg, 100.0, 100.001)
    assert is_due(msg, 100.0, 1e9)


def test_is_due_false_after_a_read() -> None:
    msg = message(deadline_at=100.0)
    assert record_read(established(), msg, "APP")
    assert not is_due(msg, 100.0, 200.0)


def test_is_due_false_when_read_even_if_deadline_still_set() -> None:
    msg = message(deadline_at=100.0)
    msg.reads = ["APP"]
    assert not is_due(msg, 100.0, 200.0)


def test_is_due_false_after_escalation() -> None:
    msg = message(deadline_at=100.0, escalated=True)
    assert not is_due(msg, 100.0, 200.0)


@pytest.mark.parametrize("deadline_at", [None, 99.0, 100.5, 200.0])
def test_is_due_false_for_a_stale_entry(deadline_at) -> None:
    msg = message(deadline_at=deadline_at)
    assert not is_due(msg, 100.0, 500.0)


def test_is_due_after_a_json_round_trip() -> None:
    plan = plan_push(established(), "HIGH", 1_700_000_000.123, ChannelPolicy())
    assert plan.deadline_at is not None
    raw = json.loads(json.dumps(message(deadline_at=plan.deadline_at).to_dict()))
    assert is_due(Message.from_dict(raw), plan.deadline_at, plan.deadline_at)


# --- send_id -------------------------------------------------------------------------------------


def test_send_id_is_deterministic_and_a_uuid5() -> None:
    a = send_id("acc-1", "m-1", "APP", "dev-1", 0)
    assert a == send_id("acc-1", "m-1", "APP", "dev-1", 0)
    assert uuid.UUID(a).version == 5
    assert str(uuid.UUID(a)) == a


def test_send_id_is_stable_across_releases() -> None:
    # Downstream recognises a repeated send by this id: a change of namespace or format breaks it.
    assert send_id("acc-1", "m-1", "APP", "dev-1", 0) == "fdd0a524-6cdd-5369-a8c8-ec1c114c1af1"
    assert send_id("acc-1", "m-1", "WECHAT", None, 1) == "157480f6-87bf-515d-b8d1-3470f9733c42"


@given(account=st.text(), message=st.text(), device=st.none() | st.text(),
       attempt=st.integers(0, 10**6))
def test_send_id_is_the_stdlib_uuid5_of_the_json_parts(account, message, device, attempt) -> None:
    # the hand-built uuid5 and the shared encoder give what uuid.uuid5 and json.dumps give
    parts = json.dumps([account, message, "SMS", device, attempt], separators=(",", ":"),
                       ensure_ascii=False)
    namespace = uuid.UUID("6f1c5a3e-8a51-4b7e-9a0e-3c2d1b0a9f87")
    assert send_id(account, message, "SMS", device, attempt) == str(uuid.uuid5(namespace, parts))


def test_send_id_distinct_across_account_message_channel_device_and_attempt() -> None:
    combos = list(itertools.product(["a-1", "a-2"], ["m-1", "m-2"], ALL, [None, "d1", "d2"],
                                    [0, 1, 2]))
    ids = {send_id(*c) for c in combos}
    assert len(ids) == len(combos)


def test_send_id_of_crafted_separators_and_empty_devices_do_not_collide() -> None:
    assert send_id("x", "a", "APP", "b\x1fAPP\x1fc", 0) != send_id("x", "a\x1fAPP\x1fb", "APP",
                                                                   "c", 0)
    assert send_id("x", "m", "APP", None, 0) != send_id("x", "m", "APP", "", 0)
    assert send_id("a", "b,c", "APP", None, 0) != send_id("a,b", "c", "APP", None, 0)
    assert send_id('a"', "b", "APP", None, 0) != send_id("a", '"b', "APP", None, 0)


SEPARATORS = st.sampled_from(["\x1f", ",", '"', "\\", "[", "]", ":", "", "null"])
PART = st.lists(SEPARATORS | st.text(max_size=3), max_size=4).map("".join)


@given(
    a=st.tuples(PART, PART, st.sampled_from(ALL), st.none() | PART, st.integers(0, 3)),
    b=st.tuples(PART, PART, st.sampled_from(ALL), st.none() | PART, st.integers(0, 3)),
)
def test_send_id_distinct_for_distinct_inputs(a, b) -> None:
    # parts built from separators and JSON syntax, empty strings and nulls: no crafted collision
    assert (send_id(*a) == send_id(*b)) == (a == b)


# --- to_dict / from_dict -------------------------------------------------------------------------


def full_account() -> Account:
    """An account with every field set away from its default."""
    return Account("acc-9", pushes=7, lifecycle=ESTABLISHED,
                   feedback_count={"APP": 3, "WECHAT": 5}, first_feedback={"WECHAT": 2},
                   primary="SMS", secondary="WECHAT", devices=["d1", "d2"],
                   addresses=["WECHAT", "SMS"], delays={"WECHAT": [0.5, 1.25]},
                   counts={"WECHAT": [3.0, 4.0]}, missed={"SMS": 1},
                   pending=[["m-1", "SMS", 12.5]])


def test_account_round_trip_through_json() -> None:
    acc = full_account()
    data = acc.to_dict()
    assert set(data) == {"account_id", "pushes", "lifecycle", "feedback_count", "first_feedback",
                         "primary", "secondary", "devices", "addresses", "waiting", "recent",
                         "decayed", "delays", "counts", "missed", "pending"}
    back = Account.from_dict(json.loads(json.dumps(data)))
    assert back == acc
    assert back.enabled() == acc.enabled()
    assert Account.from_dict(json.loads(json.dumps(Account("a").to_dict()))) == Account("a")


@pytest.mark.parametrize("deadline_at", [None, 1_700_000_000.123])
def test_message_round_trip_through_json(deadline_at) -> None:
    msg = Message("m-9", "acc-9", "URGENT", 11, sent=["APP", "SMS"], reads=["SMS"],
                  deadline_at=deadline_at, escalated=True, device_ids=["d-1"], campaign_id="c",
                  deliveries={"d-1": {"route": "HUAWEI", "attempt": 0, "due_at": 1.5,
                                      "receipt": False, "done": False}},
                  sent_at={"APP": 1.5, "SMS": 4.25}, kind="late")
    data = msg.to_dict()
    assert set(data) == {"message_id", "account_id", "importance", "partition", "sent", "reads",
                         "deadline_at", "escalated", "device_ids", "campaign_id", "deliveries",
                         "created_at", "waiting_until", "fanout", "expires_at", "content",
                         "sent_at", "kind"}
    assert Message.from_dict(json.loads(json.dumps(data))) == msg


def test_to_dict_is_a_copy() -> None:
    acc = full_account()
    data = acc.to_dict()
    data["feedback_count"]["APP"] = 99
    data["devices"].clear()
    assert acc.feedback_count["APP"] == 3
    assert acc.devices == ["d1", "d2"]
    msg = message(sent=("APP",))
    mdata = msg.to_dict()
    mdata["sent"].append("SMS")
    assert msg.sent == ["APP"]


def test_from_dict_rejects_unknown_fields() -> None:
    with pytest.raises(TypeError):
        Account.from_dict({**Account("a").to_dict(), "bogus": 1})


@given(
    pushes=st.integers(0, 10**6),
    lifecycle=st.sampled_from([NEW, ESTABLISHED]),
    feedback=st.dictionaries(st.sampled_from(ALL), st.integers(0, 10**6)),
    first=st.dictionaries(st.sampled_from(ALL), st.integers(0, 10**6)),
    primary=st.none() | st.sampled_from(ALL),
    devices=st.lists(st.text(min_size=1, max_size=5), max_size=3),
    deadline=st.none() | st.floats(0, 1e12, allow_nan=False),
    reads=st.lists(st.sampled_from(ALL), unique=True),
)
def test_round_trip_property(pushes, lifecycle, feedback, first, primary, devices, deadline,
                             reads) -> None:
    acc = Account("a", pushes=pushes, lifecycle=lifecycle, feedback_count=feedback,
                  first_feedback=first, primary=primary, devices=devices, addresses=["SMS"])
    assert Account.from_dict(json.loads(json.dumps(acc.to_dict()))) == acc
    msg = Message("m", "a", "LOW", 3, sent=list(ALL), reads=reads, deadline_at=deadline)
    assert Message.from_dict(json.loads(json.dumps(msg.to_dict()))) == msg


def stored(acc: Account) -> dict:
    """asdict without what a handler sets on an account it loads (its kind's prior)."""
    value = dataclasses.asdict(acc)
    assert value.pop("prior") == acc.prior and value.pop("prior_strength") == acc.prior_strength
    return value


@given(
    feedback=st.dictionaries(st.sampled_from(ALL), st.integers(0, 1000)),
    devices=st.lists(st.text(max_size=5), max_size=3),
    recent=st.lists(st.tuples(st.text(max_size=5), st.floats(0, 1e9)).map(list), max_size=3),
)
def test_account_to_dict_is_asdict_and_shares_nothing(feedback, devices, recent) -> None:
    acc = Account("a", pushes=3, feedback_count=feedback, first_feedback=dict(feedback),
                  devices=devices, addresses=["SMS"], waiting=["m"], recent=recent,
                  decayed={"APP": 0.5})
    value = acc.to_dict()
    assert value == stored(acc)  # every stored field, by hand
    assert Account.from_dict(value) == acc
    acc.feedback_count["APP"] = -1
    acc.devices.append("new")
    for r in acc.recent:
        r.append("x")
    assert value == stored(Account.from_dict(value))
    assert "new" not in value["devices"] and all(len(r) == 2 for r in value["recent"])


# -- adaptive: a late reader's ranking ---------------------------------------------------------

QUICK = {"LOW": 10.0, "NORMAL": 5.0, "HIGH": 3.0, "URGENT": 2.0}


def late_or_timely(delay: float) -> Account:
    """Two phones and WeChat, all sent together each push: the app push is read first more
    often (two phones), WeChat is read more often (9 of 12 against 7 of 12); reads `delay`
    seconds after the send."""
    return established(devices=("d1", "d2"), addresses=("WECHAT",),
                       decayed={"APP": 6.0, "WECHAT": 4.0},
                       counts={"APP": [7.0, 12.0], "WECHAT": [9.0, 12.0]},
                       delays={"APP": [delay] * 7, "WECHAT": [delay] * 8})


def test_a_late_reader_is_ranked_by_read_rate_not_by_which_read_came_first() -> None:
    policy = ChannelPolicy(strategy="adaptive", read_deadlines=QUICK)
    assert ranking(late_or_timely(delay=9.0), policy)[0] == "WECHAT"  # read at 9 s: late
    # a timely reader is sent one channel at a time: the first read tells its channel
    assert ranking(late_or_timely(delay=1.0), policy)[0] == "APP"
    # the other strategies rank by their importance_base, late or not
    seed = ChannelPolicy(strategy="seed", read_deadlines=QUICK)
    late = late_or_timely(delay=9.0)
    assert ranking(late, seed) == rank(importance_base(late, seed.k1, seed.k2),
                                       late.enabled(), seed.order)


@given(st.dictionaries(st.sampled_from(("APP", "WECHAT", "SMS")),
                       st.tuples(st.integers(0, 12), st.integers(0, 12)), min_size=1))
def test_a_late_readers_first_channel_has_its_best_read_rate(tallies) -> None:
    counts = {c: [float(min(r, s)), float(s)] for c, (r, s) in tallies.items()}
    acc = established(devices=("d1",), addresses=("WECHAT", "SMS"), counts=counts,
                      decayed={"APP": 9.0}, delays={"SMS": [30.0, 40.0]})
    best = ranking(acc, ChannelPolicy(strategy="adaptive", read_deadlines=QUICK))[0]
    rates = {c: (r + 1.0) / (s + 2.0) for c, (r, s) in counts.items()}  # never sent: 1/2
    assert rates.get(best, 0.5) == max(rates.get(c, 0.5) for c in ("APP", "WECHAT", "SMS"))

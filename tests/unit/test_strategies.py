"""The channel strategies: blast and fixed-fallback (the baselines), seed (Method A as
specified) and adaptive (ours), pure and through the handlers."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streams.domain.channels import (
    ESTABLISHED,
    NEW,
    STRATEGIES,
    Account,
    ChannelPolicy,
    Message,
    climbs,
    escalation_target,
    plan_push,
    ranking,
    record_read,
)
from tests.unit.partition import DEADLINES, Partition, brief, config, of, sends

ALL = ("APP", "WECHAT", "SMS", "EMAIL")


def account(**kw: object) -> Account:
    """An account with a device and every address (all four channels enabled)."""
    return Account("a1", devices=["d1"], addresses=["WECHAT", "SMS", "EMAIL"], **kw)  # type: ignore[arg-type]


def read_messages(acc: Account, policy: ChannelPolicy, channels: list[str]) -> None:
    """One message per channel, each read first (and only) on it."""
    for i, channel in enumerate(channels):
        record_read(acc, Message(f"m{i}", acc.account_id, "NORMAL", 0), channel, policy)


def test_an_unknown_strategy_is_refused_naming_the_known_ones() -> None:
    with pytest.raises(ValueError, match="blast, fixed-fallback, seed, adaptive"):
        ChannelPolicy(strategy="spray")


@given(st.integers(0, 4), st.integers(1, 12))
def test_blast_sends_every_enabled_channel_every_time_and_is_established_once(
        n: int, pushes: int) -> None:
    policy = ChannelPolicy(new_account_pushes=n, strategy="blast")
    acc = account()
    became = []
    for _ in range(pushes):
        plan = plan_push(acc, "HIGH", 100.0, policy)
        assert [(s.channel, s.reason) for s in plan.sends] == [(c, "FANOUT") for c in ALL]
        assert plan.deadline_at is None
        became.append(plan.established)
    assert sum(became) == (1 if pushes >= max(n, 1) else 0)
    assert acc.lifecycle == (ESTABLISHED if pushes >= max(n, 1) else NEW)


def test_fixed_fallback_never_fans_out_and_ignores_what_reads_taught() -> None:
    policy = ChannelPolicy(new_account_pushes=5, strategy="fixed-fallback")
    acc = account()
    read_messages(acc, policy, ["SMS"] * 6)
    plan = plan_push(acc, "NORMAL", 100.0, policy)
    assert [(s.channel, s.reason) for s in plan.sends] == [("APP", "PRIMARY")]
    assert plan.established and plan.deadline_at == 100.0 + 3600.0
    assert ranking(acc, policy) == list(ALL)
    acc.primary = "EMAIL"  # the user's own choice still wins
    assert ranking(acc, policy)[0] == "EMAIL"


def test_seed_keeps_the_channel_with_most_reads_after_the_user_moved() -> None:
    seed, adaptive = ChannelPolicy(strategy="seed"), ChannelPolicy(strategy="adaptive")
    history = ["WECHAT"] * 10 + ["SMS"] * 3
    a_seed, a_adaptive = account(), account()
    read_messages(a_seed, seed, history)
    read_messages(a_adaptive, adaptive, history)
    assert ranking(a_seed, seed)[0] == "WECHAT"  # 30 points against 9
    assert ranking(a_adaptive, adaptive)[0] == "SMS"  # older reads faded: 0.6 per message
    assert a_seed.feedback_count == a_adaptive.feedback_count  # both keep the raw counts


def test_decayed_scores_fade_only_at_a_message_first_read() -> None:
    policy = ChannelPolicy(strategy="adaptive", k1=1.0, k2=2.0, decay=0.5)
    acc = account()
    m1 = Message("m1", "a1", "NORMAL", 0)
    record_read(acc, m1, "WECHAT", policy)
    assert acc.decayed == {"WECHAT": 3.0}
    record_read(acc, m1, "SMS", policy)  # a second read of the same message: no fading
    assert acc.decayed == {"WECHAT": 3.0, "SMS": 1.0}
    record_read(acc, Message("m2", "a1", "NORMAL", 0), "SMS", policy)
    assert acc.decayed == {"WECHAT": 1.5, "SMS": 0.5 + 3.0}
    assert not record_read(acc, m1, "SMS", policy)  # a repeat changes nothing
    assert acc.decayed == {"WECHAT": 1.5, "SMS": 3.5}


def test_adaptive_is_established_by_its_first_read_and_seed_after_n_pushes() -> None:
    for strategy, fanouts in (("adaptive", 1), ("seed", 5)):
        policy = ChannelPolicy(new_account_pushes=5, strategy=strategy)
        acc = account()
        assert plan_push(acc, "NORMAL", 0.0, policy).sends[0].reason == "FANOUT"
        assert plan_push(account(), "NORMAL", 0.0, policy).sends[0].reason == "FANOUT"
        read_messages(acc, policy, ["WECHAT"])
        plans = [plan_push(acc, "NORMAL", 0.0, policy) for _ in range(5)]
        assert [p.sends[0].reason for p in plans] == ["FANOUT"] * (fanouts - 1) + ["PRIMARY"] * (
            6 - fanouts), strategy
        first = plans[fanouts - 1]
        assert [(s.channel, s.reason) for s in first.sends] == [("WECHAT", "PRIMARY")]
        assert acc.lifecycle == ESTABLISHED
        assert first.established is (strategy == "adaptive")  # seed's came with its 5th fan-out


def test_adaptive_keeps_learning_while_reads_disagree_and_seed_waits_for_n_pushes() -> None:
    for strategy in ("adaptive", "seed"):
        policy = ChannelPolicy(new_account_pushes=5, strategy=strategy)
        acc = account()
        read_messages(acc, policy, ["WECHAT", "SMS", "WECHAT"] if strategy == "adaptive"
                      else ["WECHAT", "WECHAT"])
        reasons = [plan_push(acc, "NORMAL", 0.0, policy).sends[0].reason for _ in range(6)]
        assert reasons == ["FANOUT"] * 5 + ["PRIMARY"], strategy


def test_adaptive_does_not_escalate_for_an_account_that_never_read() -> None:
    acc = account()
    message = Message("m1", "a1", "NORMAL", 0, sent=["APP"])
    assert escalation_target(acc, message, ChannelPolicy(strategy="adaptive")) is None
    assert escalation_target(acc, message, ChannelPolicy(strategy="seed")) == "WECHAT"
    read_messages(acc, ChannelPolicy(strategy="adaptive"), ["APP"])
    assert escalation_target(acc, message, ChannelPolicy(strategy="adaptive")) == "WECHAT"


def test_which_strategies_climb_a_ladder_of_escalations() -> None:
    assert [s for s in STRATEGIES if climbs(ChannelPolicy(strategy=s))] == [
        "fixed-fallback", "adaptive"]


def test_adaptive_climbs_past_the_secondary_for_an_account_that_reads() -> None:
    policy = ChannelPolicy(strategy="adaptive")
    acc = account()
    read_messages(acc, policy, ["WECHAT", "SMS", "WECHAT"])
    message = Message("m9", "a1", "NORMAL", 0, sent=["WECHAT"])
    assert escalation_target(acc, message, policy) == "SMS"
    message.sent.append("SMS")
    assert escalation_target(acc, message, policy) == "APP"  # it may have moved there
    message.sent += ["APP", "EMAIL"]
    assert escalation_target(acc, message, policy) is None


# -- through the handlers ------------------------------------------------------------------------


def test_fixed_fallback_climbs_the_whole_order_one_deadline_at_a_time() -> None:
    p = Partition(config(strategy="fixed-fallback"))
    p.profile("a1", wechat="ow-1", phone="+86-1", email="a@example.org")
    first = p.request("a1", "m1", importance="HIGH")
    assert brief(sends(first)) == [("WECHAT", None, None, "PRIMARY", 0)]
    steps = []
    for attempt, channel in enumerate(["SMS", "EMAIL"], 1):
        due = p.due("READ", "a1", "m1")
        p.advance(DEADLINES["HIGH"])
        fx = p.fire(due)
        assert brief(sends(fx)) == [(channel, None, None, "ESCALATION", attempt)]
        steps.append([(e["from_channel"], e["to_channel"]) for e in of("Escalation", fx)])
    assert steps == [[("WECHAT", "SMS")], [("SMS", "EMAIL")]]
    message = p.message("a1", "m1")
    assert message is not None and message["escalated"] and message["deadline_at"] is None
    # the first PRIMARY deadline and the one after the first step; none after the last
    assert [kind for kind, _, _ in p.dues_of("a1", "m1")] == ["EXPIRE", "READ", "READ"]


def test_a_read_stops_the_ladder_and_a_stale_deadline_changes_nothing() -> None:
    p = Partition(config(strategy="fixed-fallback"))
    p.profile("a1", wechat="ow-1", phone="+86-1", email="a@example.org")
    p.request("a1", "m1")
    due = p.due("READ", "a1", "m1")
    p.advance(DEADLINES["NORMAL"])
    p.fire(due)
    second = p.due("READ", "a1", "m1")
    assert second.due_at == p.now + DEADLINES["NORMAL"]
    p.read("a1", "m1", "SMS")
    p.advance(DEADLINES["NORMAL"])
    fx = p.fire(second)
    assert fx.outputs == [] and fx.counts["deadline_stale"] == 1
    assert p.fire(due).outputs == []


def test_seed_escalates_once_whatever_is_left() -> None:
    p = Partition(config(new_account_pushes=0))
    p.profile("a1", wechat="ow-1", phone="+86-1", email="a@example.org")
    p.request("a1", "m1")
    p.advance(DEADLINES["NORMAL"])
    fx = p.fire(p.due("READ", "a1", "m1"))
    assert brief(sends(fx)) == [("SMS", None, None, "ESCALATION", 1)]
    assert fx.dues == []

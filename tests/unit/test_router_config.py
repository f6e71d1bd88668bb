"""Wiring: every setting reaches the handlers' configuration, and the handlers act on it."""

from __future__ import annotations

import os

import pytest

from streams.domain import handlers as h
from streams.domain.channels import ChannelPolicy
from streams.domain.probing import ProbeConfig
from streams.router import router_config
from streams.settings import Settings
from tests.unit.partition import T0, Partition, brief, read_history, sends

#: Every tuning value the handlers use, each distinct from every other and from its default.
DISTINCT = {
    "new_account_pushes": 7, "score_k1": 1.5, "score_k2": 4.25,
    "read_deadline_low": 401.0, "read_deadline_normal": 302.0, "read_deadline_high": 203.0,
    "read_deadline_urgent": 104.0, "receipt_deadline": 11.0, "reach_grace": 12.0,
    "message_retention": 13.0, "probe_count_first": 17, "probe_count_again": 9,
    "min_route_success": 0.65, "probe_interval": 1234.0, "probe_device_per_hour": 7.5,
    "probe_global_per_second": 33.0, "probe_timeout": 77.0,
    "channel_order": "sms, email,app,WECHAT",
    "channel_cost": "SMS=0.07,WECHAT=0.02", "read_value": "NORMAL=0.3,HIGH=2",
    "route_half_life": 99.0, "route_prior_strength": 3.5,
}


@pytest.fixture(autouse=True)
def no_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Settings come from the arguments only."""
    for name in list(os.environ):
        if name.startswith("PUSHCASCADE_"):
            monkeypatch.delenv(name)


def test_every_setting_reaches_its_field() -> None:
    cfg = router_config(Settings(**DISTINCT))
    policy, probe = cfg.policy, cfg.probe
    assert policy.new_account_pushes == 7
    assert (policy.k1, policy.k2) == (1.5, 4.25)
    assert dict(policy.read_deadlines) == {"LOW": 401.0, "NORMAL": 302.0, "HIGH": 203.0,
                                           "URGENT": 104.0}
    assert policy.order == ("SMS", "EMAIL", "APP", "WECHAT")
    assert dict(policy.costs) == {"APP": 0.0, "WECHAT": 0.02, "SMS": 0.07, "EMAIL": 0.0}
    assert dict(policy.read_value) == {"LOW": 0.0, "NORMAL": 0.3, "HIGH": 2.0,
                                       "URGENT": float("inf")}
    assert (cfg.receipt_deadline, cfg.reach_grace, cfg.retention) == (11.0, 12.0, 13.0)
    assert (probe.probe_count_first, probe.probe_count_again) == (17, 9)
    assert probe.min_route_success == 0.65
    assert probe.reprobe_interval_s == 1234.0
    assert probe.per_device_probes_per_hour == 7.5
    assert probe.global_probes_per_second == 33.0
    assert probe.probe_timeout_s == 77.0
    assert (probe.half_life_s, probe.prior_strength, probe.bandit) == (99.0, 3.5, False)
    # and nothing else differs from the defaults
    assert cfg == h.RouterConfig(
        ChannelPolicy(7, 1.5, 4.25, ("SMS", "EMAIL", "APP", "WECHAT"),
                      {"LOW": 401.0, "NORMAL": 302.0, "HIGH": 203.0, "URGENT": 104.0},
                      costs=policy.costs, read_value=policy.read_value),
        ProbeConfig(17, 9, 0.65, 1234.0, 7.5, 33.0, 77.0, half_life_s=99.0,
                    prior_strength=3.5),
        receipt_deadline=11.0, reach_grace=12.0, retention=13.0)


def test_the_default_settings_give_the_default_configuration() -> None:
    assert router_config(Settings()) == h.RouterConfig()


@pytest.mark.parametrize("setting", sorted(DISTINCT))
def test_changing_one_setting_changes_the_configuration(setting) -> None:
    assert router_config(Settings(**{setting: DISTINCT[setting]})) != h.RouterConfig()


def test_the_handlers_use_the_configured_deadlines_and_channel_order() -> None:
    p = Partition(router_config(Settings(**DISTINCT)))
    p.request("a1", "m-wait")
    assert p.due("GRACE", "a1", "m-wait").due_at == T0 + 12.0
    p.device("a1", "d1")
    p.profile("a1", wechat="ow-1", phone="+86-1", email="a@example.org")
    fx = p.request("a1", "m1")
    assert [s["channel"] for s in sends(fx) if s["device_id"] is None] == [
        "SMS", "EMAIL", "APP", "WECHAT"]
    assert p.due("RECEIPT", "a1", "m1", "d1").due_at == T0 + 11.0
    assert p.due("EXPIRE", "a1", "m1").due_at == T0 + 12.0 + 302.0 + 11.0 + 13.0


@pytest.mark.parametrize(("importance", "deadline"), [
    ("LOW", 401.0), ("NORMAL", 302.0), ("HIGH", 203.0), ("URGENT", 104.0)])
def test_each_importance_gets_its_configured_read_deadline(importance, deadline) -> None:
    p = Partition(router_config(Settings(**{**DISTINCT, "new_account_pushes": 0})))
    p.profile("a1", phone="+86-1")
    p.request("a1", "m1", importance=importance)
    assert p.due("READ", "a1", "m1").due_at == T0 + deadline


@pytest.mark.parametrize(("k1", "k2", "primary"), [(1.0, 3.0, "SMS"), (3.0, 1.0, "WECHAT")])
def test_swapping_k1_and_k2_changes_the_learned_primary(k1, k2, primary) -> None:
    # feedback SMS 3, WECHAT 5; first SMS 3, WECHAT 2:
    # K1=1, K2=3 -> SMS 12 > WECHAT 11; K1=3, K2=1 -> WECHAT 17 > SMS 12
    p = Partition(router_config(Settings(score_k1=k1, score_k2=k2, new_account_pushes=5)))
    read_history(p)
    p.advance(1)
    assert brief(sends(p.request("a1", "m1"))) == [(primary, None, None, "PRIMARY", 0)]


def test_adaptive_chooses_routes_by_their_posteriors_and_the_others_by_probe_windows() -> None:
    assert router_config(Settings(strategy="adaptive")).probe.bandit
    assert not any(router_config(Settings(strategy=s)).probe.bandit
                   for s in ("seed", "blast", "fixed-fallback"))

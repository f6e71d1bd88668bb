"""Settings: defaults, environment variables, and clear errors."""

from __future__ import annotations

import pytest

from streams.settings import Settings, SettingsError


def test_defaults_are_valid():
    s = Settings()
    assert s.tuning.channels == ("APP", "WECHAT", "SMS", "EMAIL")
    assert s.tuning.read_deadline("URGENT") == 60.0


def test_environment_variables(monkeypatch):
    monkeypatch.setenv("PUSHCASCADE_NEW_ACCOUNT_PUSHES", "3")
    monkeypatch.setenv("PUSHCASCADE_CHANNEL_ORDER", "wechat, app,sms")
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "k:9092")
    s = Settings()
    assert s.tuning.new_account_pushes == 3
    assert s.tuning.channels == ("WECHAT", "APP", "SMS")
    assert s.connections.kafka_bootstrap_servers == "k:9092"


@pytest.mark.parametrize("var,value", [
    ("PUSHCASCADE_SCORE_K2", "-1"),
    ("PUSHCASCADE_MIN_ROUTE_SUCCESS", "1.5"),
    ("PUSHCASCADE_CHANNEL_ORDER", "APP,FAX"),
    ("PUSHCASCADE_CHANNEL_ORDER", "APP,APP"),
    ("PUSHCASCADE_CHANNEL_COST", "SMS=-1"),
    ("PUSHCASCADE_CHANNEL_COST", "FAX=0.1"),
    ("PUSHCASCADE_CHANNEL_COST", "SMS=cheap"),
    ("PUSHCASCADE_CHANNEL_COST", "SMS=inf"),
    ("PUSHCASCADE_READ_VALUE", "CRITICAL=1"),
    ("PUSHCASCADE_READ_DEADLINE_HIGH", "soon"),
    ("PUSHCASCADE_PROBE_COUNT_FIRST", "0"),
])
def test_bad_values_name_the_variable(monkeypatch, var, value):
    monkeypatch.setenv(var, value)
    with pytest.raises(SettingsError, match=var):
        Settings()


def test_a_receipt_deadline_beyond_the_probe_timeout_is_refused_naming_both() -> None:
    with pytest.raises(SettingsError, match="PUSHCASCADE_RECEIPT_DEADLINE=400 must not exceed "
                                            "PUSHCASCADE_PROBE_TIMEOUT=300"):
        Settings(receipt_deadline=400, probe_timeout=300)
    assert Settings(receipt_deadline=300, probe_timeout=300).tuning.receipt_deadline == 300


def test_channel_costs_parse_and_default_to_zero(monkeypatch) -> None:
    monkeypatch.setenv("PUSHCASCADE_CHANNEL_COST", " sms=0.04, wechat = 0.01 ")
    assert Settings().tuning.costs == {"APP": 0.0, "WECHAT": 0.01, "SMS": 0.04, "EMAIL": 0.0}


def test_read_values_per_importance_and_urgent_without_bound(monkeypatch) -> None:
    monkeypatch.setenv("PUSHCASCADE_READ_VALUE", "normal=0.2")
    assert Settings().tuning.read_values == {"LOW": 0.0, "NORMAL": 0.2, "HIGH": 0.0,
                                             "URGENT": float("inf")}

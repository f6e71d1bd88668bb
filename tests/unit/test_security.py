"""Security findings of issue 19, each reproduced: built-in keys, analyst SQL, link scanners,
personal data in error text, secrets in tracebacks, key rotation."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from connectors.adapters.config import ProviderConfig
from connectors.adapters.registry import Registry
from connectors.settings import ConnectorSettings
from streams.cli import commands

ROOT = Path(__file__).parents[2]
#: The development key every copy of pushcascade once fell back to (published in its history).
OLD_DEV_KEY = "pushcascade-development-ack-key-change-me-0001"


def test_the_gateway_and_dispatcher_refuse_to_start_without_signing_keys(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """No built-in key: one line naming the setting, exit code 1, nothing served."""
    monkeypatch.delenv("PUSHCASCADE_ACK_KEYS", raising=False)
    env = {k: v for k, v in os.environ.items() if k != "PUSHCASCADE_ACK_KEYS"}
    env.update({"KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:9", "PUSHCASCADE_GATEWAY_PORT": "0"})
    for command in ("acks-gateway", "dispatch"):
        try:
            run = subprocess.run([sys.executable, "-m", "streams.cli", command], env=env,
                                 capture_output=True, text=True, timeout=60, check=False)
        except subprocess.TimeoutExpired:
            pytest.fail(f"`pushcascade {command}` started without PUSHCASCADE_ACK_KEYS")
        lines = run.stderr.strip().splitlines()
        assert run.returncode == 1 and len(lines) == 1, (command, run.stderr)
        assert "PUSHCASCADE_ACK_KEYS is not set" in lines[0], (command, lines)


@pytest.mark.parametrize("keys", [
    f'{{"dev": "{OLD_DEV_KEY}"}}',
    yaml.safe_load((ROOT / "deploy" / "secrets.example.yaml").read_text())["stringData"][
        "PUSHCASCADE_ACK_KEYS"],
])
def test_published_keys_are_refused(monkeypatch: pytest.MonkeyPatch, keys: str) -> None:
    monkeypatch.setenv("PUSHCASCADE_ACK_KEYS", keys)
    with pytest.raises(ValueError, match="published placeholder or development key"):
        ConnectorSettings().keys  # noqa: B018


def test_providers_fail_closed_without_their_real_credentials(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A real vendor's base URL with a development secret or bundled key is refused; only the
    simulator (no base URL) takes them."""
    assert Registry(ProviderConfig()).adapter("fcm").name == "fcm"  # the simulator
    monkeypatch.setenv("PUSHCASCADE_PROVIDER_FCM_BASE_URL", "https://fcm.googleapis.com")
    monkeypatch.setenv("PUSHCASCADE_PROVIDER_HUAWEI_BASE_URL",
                       "https://push-api.cloud.huawei.com")
    registry = Registry(ProviderConfig())
    with pytest.raises(ValueError, match="PUSHCASCADE_PROVIDER_FCM_PRIVATE_KEY is not set"):
        registry.adapter("fcm")
    with pytest.raises(ValueError, match="PUSHCASCADE_PROVIDER_HUAWEI_CLIENT_SECRET"):
        registry.adapter("huawei")
    with pytest.raises(ValueError, match="PUSHCASCADE_PROVIDER_"):
        registry.check_credentials()
    monkeypatch.setenv("PUSHCASCADE_PROVIDER_HUAWEI_CLIENT_SECRET", "a-real-secret")
    assert Registry(ProviderConfig()).adapter("huawei").name == "huawei"
    monkeypatch.setenv("PUSHCASCADE_PROVIDER_FCM_PRIVATE_KEY", "-----BEGIN PRIVATE KEY-----")
    with pytest.raises(ValueError, match="PUSHCASCADE_PROVIDER_FCM_PROJECT_ID is still the dev"):
        Registry(ProviderConfig()).adapter("fcm")


def test_the_dispatcher_checks_every_providers_credentials_at_start(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PUSHCASCADE_PROVIDER_EMAIL_BASE_URL", "https://api.sendgrid.com")
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9")
    result = CliRunner().invoke(commands(), ["dispatch"])
    assert result.exit_code == 1
    assert "PUSHCASCADE_PROVIDER_EMAIL_API_KEY" in result.output

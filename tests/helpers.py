"""Test helpers: run the CLI as users do, read topics back, build the records tests send."""

from __future__ import annotations

import subprocess
import sys
import time
from typing import Any

from connectors.producer import RecordProducer
from streams.harness import Tap
from streams.settings import Settings


def run_cli(*args: str, env: dict[str, str], stdin: str = "", timeout: float = 60,
            cwd: Any = None) -> Any:
    """Run `pushcascade ARGS` in a subprocess; returns the CompletedProcess."""
    return subprocess.run([sys.executable, "-m", "streams.cli", *args], input=stdin, env=env,
                          capture_output=True, text=True, timeout=timeout, cwd=cwd)


def read_topic(settings: Settings, name: str, *, expect: int | None = None,
               timeout: float = 30.0) -> list[Any]:
    """A topic's records from the beginning, decoded: once `expect` have come, or (without
    `expect`) all it holds now."""
    with Tap(settings, name) as tap:
        if expect is None:
            return tap.drain(timeout)
        return tap.wait_for(lambda rs: len(rs) >= expect, timeout)


def now_ms() -> int:
    """Epoch milliseconds."""
    return int(time.time() * 1000)


def register(producer: RecordProducer, account: str, devices: int = 1,
             wechat: bool = True, sms: bool = True, email: bool = False) -> None:
    """Give an account devices and addresses (enabling APP, WECHAT, SMS, EMAIL as asked)."""
    for i in range(devices):
        producer.send("device.registry", device(account, f"{account}-d{i}", ["XIAOMI", "JPUSH"]))
    producer.send("account.profiles", {
        "account_id": account, "phone": "+8613800000000" if sms else None,
        "wechat_openid": f"o-{account}" if wechat else None,
        "email": f"{account}@example.com" if email else None, "updated_at": now_ms()})
    producer.flush()


def device(account: str, device_id: str, routes: list[str], manufacturer: str = "Xiaomi",
           active: bool = True) -> dict[str, Any]:
    """A DeviceRegistration."""
    return {"device_id": device_id, "account_id": account, "manufacturer": manufacturer,
            "model": "14", "routes": routes, "active": active, "registered_at": now_ms()}


def request(message_id: str, account: str, importance: str = "HIGH") -> dict[str, Any]:
    """A valid PushRequest."""
    return {"message_id": message_id, "account_id": account, "importance": importance,
            "title": "t", "body": "b", "read_action": "BUTTON", "campaign_id": None,
            "device_ids": [], "created_at": now_ms()}


def read_ack(message_id: str, account: str, channel: str) -> dict[str, Any]:
    """A READ ack."""
    return {"message_id": message_id, "account_id": account, "channel": channel, "kind": "READ",
            "device_id": None, "route": None, "send_id": None, "acked_at": now_ms()}

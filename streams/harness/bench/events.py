"""A mix of every event the sink stores, with distinct identities (tests and the benchmark)."""

from __future__ import annotations

import random
import time
import zlib
from collections import Counter

from schemas import Codec
from streams.harness.bench.common import Record

CHANNELS = ("APP", "WECHAT", "SMS")
ROUTES = ("XIAOMI", "HUAWEI", "JPUSH", "GETUI", "FCM")


def mixed_events(codec: Codec, messages: int, tag: str = "mix",
                 seed: int = 7) -> tuple[list[Record], Counter[str]]:
    """About 11 records per message over all twelve stored topics; returns them and how many
    of each topic (each one a distinct row of its table)."""
    rnd = random.Random(seed)
    now = int(time.time() * 1000)
    out: list[Record] = []

    def add(topic: str, key: str, name: str, value: dict[str, object]) -> None:
        out.append((topic, key.encode(), codec.encode(name, value)))

    for i in range(messages):
        account, message = f"{tag}-a{i % 997}", f"{tag}-m{i}"
        device, route = f"{tag}-d{i}", ROUTES[i % len(ROUTES)]
        t = now - rnd.randrange(0, 3_600_000)
        add("push.requests", account, "PushRequest", {
            "message_id": message, "account_id": account, "importance": "HIGH",
            "title": "t", "body": "b", "read_action": "BUTTON", "link": None,
            "campaign_id": f"{tag}-c{i % 10}" if i % 3 == 0 else None, "device_ids": [],
            "created_at": t})
        for attempt, channel in enumerate(("APP", CHANNELS[1 + i % 2])):
            sid = f"{message}:{channel}:{attempt}"
            add("push.sends", account, "ChannelSend", {
                "send_id": sid, "message_id": message, "account_id": account,
                "channel": channel, "device_id": device if channel == "APP" else None,
                "route": route if channel == "APP" else None,
                "reason": "PRIMARY" if attempt == 0 else "ESCALATION", "attempt": attempt,
                "importance": "HIGH", "title": "t", "body": "b", "read_action": "BUTTON",
                "link": None, "sent_at": t + attempt * 1000})
            add("push.outcomes", account, "ProviderOutcome", {
                "send_id": sid, "message_id": message, "account_id": account,
                "channel": channel, "device_id": None, "route": None, "provider": "sim",
                "status": "ACCEPTED", "provider_message_id": f"p{i}", "error_code": None,
                "attempts": 1, "latency_ms": rnd.randrange(5, 200), "at": t + 50})
        add("push.acks", account, "Ack", {
            "message_id": message, "account_id": account, "channel": "APP", "kind": "RECEIPT",
            "device_id": device, "route": route, "send_id": f"{message}:APP:0",
            "acked_at": t + 300})
        add("push.acks", account, "Ack", {
            "message_id": message, "account_id": account, "channel": "APP", "kind": "READ",
            "device_id": device, "route": route, "send_id": None, "acked_at": t + 2000})
        add("push.escalations", account, "Escalation", {
            "message_id": message, "account_id": account, "from_channel": "APP",
            "to_channel": CHANNELS[1 + i % 2], "deadline_at": t + 1000, "fired_at": t + 1001})
        add("push.results", account, "DeliveryResult", {
            "message_id": message, "account_id": account, "status": "READ", "channel": "APP",
            "device_id": device, "route": route, "send_id": None, "detail": "", "at": t + 2000})
        add("device.registry", device, "DeviceRegistration", {
            "device_id": device, "account_id": account, "manufacturer": "Xiaomi",
            "model": f"M{i % 4}", "routes": ["XIAOMI", "JPUSH"], "push_tokens": {"XIAOMI": "tok"},
            "active": True, "registered_at": t - 10})
        if i % 10 == 0:
            add("device.route-changes", device, "RouteChange", {
                "device_id": device, "account_id": account, "from_route": None,
                "to_route": "JPUSH", "success_rate": 0.9, "reason": "INITIAL", "changed_at": t})
            add("account.lifecycle", account, "AccountLifecycle", {
                "account_id": f"{tag}-l{i}", "lifecycle": "ESTABLISHED", "pushes": 5,
                "changed_at": t})
            add("account.settings", f"{tag}-s{i}", "AccountSettings", {
                "account_id": f"{tag}-s{i}", "primary": "SMS", "secondary": None,
                "updated_at": t})
            add("push.dlq", account, "DeadLetter", {
                "key": None, "value": None, "topic": "push.requests", "partition": 0,
                "offset": zlib.crc32(tag.encode()) * 1_000_000 + i, "error": "test",
                "failed_at": t})
        if i % 100 == 0:
            add("campaign.decisions", f"{tag}-k{i}", "CampaignDecision", {
                "campaign_id": f"{tag}-k{i}", "targeted": 10, "acked": 3, "ratio": 0.3,
                "threshold": 0.5, "fallback": True, "decided_at": t})
    return out, Counter(topic for topic, _, _ in out)

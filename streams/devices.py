"""The device stage of the router: Method B's routes, receipts, fallback and probes (plumbing)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

from streams.domain.channels import Message, send_id
from streams.domain.deadlines import Due
from streams.domain.probing import ProbeBudget, ProbeConfig, evaluate_target, plan_probes
from streams.domain.routes import (
    DeviceRoutes,
    ReceiptOutcome,
    effective_rate,
    fallback_routes,
    record_receipt,
    record_send,
    register_device,
)
from streams.metrics import Counts
from streams.settings import Settings

Emit = Callable[..., None]


def ms(t: float) -> int:
    """Epoch seconds to epoch milliseconds."""
    return round(t * 1000)


def probe_config(settings: Settings) -> ProbeConfig:
    """Method B's probing parameters from the settings."""
    t = settings.tuning
    return ProbeConfig(
        probe_count_first=t.probe_count_first, probe_count_again=t.probe_count_again,
        min_route_success=t.min_route_success, reprobe_interval_s=t.probe_interval,
        per_device_probes_per_hour=t.probe_device_per_hour,
        global_probes_per_second=t.probe_global_per_second, probe_timeout_s=t.probe_timeout)


def receipt_deadlines(message: dict[str, Any]) -> Iterator[Due]:
    """The pending receipt deadlines of a stored message."""
    for device_id, d in message.get("deliveries", {}).items():
        if not d["receipt"] and not d["done"]:
            yield Due(d["due_at"], message["partition"], f"{message['message_id']}/{device_id}",
                      message["account_id"], "RECEIPT", device_id, message["message_id"])


class DeviceStage:
    """Sends APP pushes to devices on their original route, falls back, probes, counts."""

    def __init__(self, settings: Settings, devices: Any, emit: Emit,
                 add_deadline: Callable[[Due], None]) -> None:
        self.settings = settings
        self.devices = devices
        self.emit = emit
        self.add_deadline = add_deadline
        self.cfg = probe_config(settings)
        self.budget = ProbeBudget.from_config(self.cfg)
        self.receipt_deadline = settings.tuning.receipt_deadline
        self.counts = Counts("devices")

    def register(self, rec: dict[str, Any]) -> None:
        """Apply a DeviceRegistration: routes from the mapping table; deactivation removes it."""
        key = rec["device_id"].encode()
        if not rec["active"]:
            self.devices.pop(key, None)
            return
        previous = self.devices.get(key)
        reg = register_device(rec["device_id"], rec["account_id"], rec["manufacturer"],
                              rec["model"], rec["routes"],
                              DeviceRoutes.from_dict(previous) if previous else None)
        self.counts.add("unmapped_manufacturer", int(not reg.matched))
        self.counts.add("unknown_route", len(reg.unknown_routes))
        self._maintain(reg.device, time.time())
        self.devices[key] = reg.device.to_dict()

    def deliver(self, message: Message, devices: list[str], attempt: int) -> int:
        """Send an APP push to each device on its original route; returns how many got it."""
        now = time.time()
        wanted = [d for d in devices if not message.device_ids or d in message.device_ids]
        sent = 0
        for device_id in wanted:
            raw = self.devices.get(device_id.encode())
            if raw is None:
                self.counts.add("unknown_device")
                continue
            device = DeviceRoutes.from_dict(raw)
            sid = send_id(message.message_id, "APP", device_id, attempt)
            record_send(device, sid, device.original, now)
            self._send(message, device_id, device.original, "ORIGINAL_ROUTE", attempt, sid)
            due_at = round(now + self.receipt_deadline, 3)
            message.deliveries[device_id] = {"route": device.original, "attempt": attempt,
                                             "due_at": due_at, "receipt": False, "done": False}
            if message.campaign_id:
                best = fallback_routes(device, self.cfg, top_n=1)
                self.emit("pushcascade.campaign-events", message.campaign_id, "CampaignEvent", {
                    "campaign_id": message.campaign_id, "kind": "TARGET",
                    "message_id": message.message_id, "account_id": message.account_id,
                    "device_id": device_id, "route": device.original,
                    "fallback_route": best[0] if best else None,
                    "importance": message.importance, "attempt": attempt,
                    "due_at": ms(due_at), "at": ms(now)})
            else:
                self.add_deadline(Due(due_at, message.partition,
                                      f"{message.message_id}/{device_id}", message.account_id,
                                      "RECEIPT", device_id, message.message_id))
            self._maintain(device, now)
            self.devices[device_id.encode()] = device.to_dict()
            sent += 1
        return sent

    def receipt(self, ack: dict[str, Any], message: Message | None) -> bool:
        """Count a RECEIPT for route statistics; True when the message's state changed."""
        raw = self.devices.get((ack["device_id"] or "").encode())
        if raw is None:
            self.counts.add("receipt_unknown_device")
            return False
        device = DeviceRoutes.from_dict(raw)
        now = time.time()
        result = record_receipt(device, ack["send_id"], now)
        self.counts.add("receipt_" + result.outcome.lower())
        self._maintain(device, now)
        self.devices[device.device_id.encode()] = device.to_dict()
        if result.outcome != ReceiptOutcome.COUNTED or message is None:
            return False
        delivery = message.deliveries.get(device.device_id)
        if delivery is None or delivery["receipt"]:
            return False
        delivery["receipt"] = True
        if message.campaign_id and result.route == delivery["route"]:
            self.emit("pushcascade.campaign-events", message.campaign_id, "CampaignEvent", {
                "campaign_id": message.campaign_id, "kind": "RECEIPT",
                "message_id": message.message_id, "account_id": message.account_id,
                "device_id": device.device_id, "route": delivery["route"],
                "fallback_route": None, "importance": message.importance,
                "attempt": delivery["attempt"], "due_at": ms(delivery["due_at"]), "at": ms(now)})
        return True

    def receipt_due(self, message: Message, device_id: str, due_at: float) -> bool:
        """A device's receipt deadline passed: resend on its best alternative, once."""
        delivery = message.deliveries.get(device_id)
        if (delivery is None or delivery["receipt"] or delivery["done"]
                or delivery["due_at"] != due_at):
            self.counts.add("receipt_deadline_stale")
            return False
        delivery["done"] = True
        raw = self.devices.get(device_id.encode())
        device = DeviceRoutes.from_dict(raw) if raw else None
        routes = fallback_routes(device, self.cfg, top_n=1) if device else []
        if not routes:
            self.counts.add("no_fallback_route")
            self.emit("push.results", message.account_id, "DeliveryResult", {
                "message_id": message.message_id, "account_id": message.account_id,
                "status": "FAILED", "channel": "APP", "device_id": device_id,
                "route": delivery["route"], "send_id": None,
                "detail": "no receipt on the original route and no alternative route",
                "at": ms(time.time())})
            return True
        attempt = delivery["attempt"] + 1
        sid = send_id(message.message_id, "APP", device_id, attempt)
        assert device is not None
        record_send(device, sid, routes[0], time.time())
        self.devices[device_id.encode()] = device.to_dict()
        self._send(message, device_id, routes[0], "FALLBACK_ROUTE", attempt, sid)
        return True

    def _send(self, message: Message, device_id: str, route: str, reason: str, attempt: int,
              sid: str) -> None:
        """Emit one device-level ChannelSend."""
        self.counts.add("send_" + reason)
        self.emit("push.sends", message.account_id, "ChannelSend", {
            "send_id": sid, "message_id": message.message_id, "account_id": message.account_id,
            "channel": "APP", "device_id": device_id, "route": route, "reason": reason,
            "attempt": attempt, "importance": message.importance, "sent_at": ms(time.time())})

    def _maintain(self, device: DeviceRoutes, now: float) -> None:
        """On every device event: expire lost probes, send due probes, re-evaluate the target."""
        for probe in plan_probes(device, now, self.cfg, self.budget):
            self.counts.add("probe_" + probe.kind.lower())
            self.emit("push.sends", device.account_id, "ChannelSend", {
                "send_id": probe.send_id, "message_id": probe.send_id,
                "account_id": device.account_id, "channel": "APP",
                "device_id": device.device_id, "route": probe.route, "reason": "PROBE",
                "attempt": 0, "importance": "LOW", "sent_at": ms(now)})
        change = evaluate_target(device, self.cfg)
        if change is not None:
            self.emit("device.route-changes", device.device_id, "RouteChange", {
                "device_id": device.device_id, "account_id": device.account_id,
                "from_route": change.previous[0] if change.previous else None,
                "to_route": change.target[0],
                "success_rate": effective_rate(device.stats[change.target[0]],
                                               self.cfg.probe_count_first) or 0.0,
                "reason": change.reason, "changed_at": ms(now)})

"""One account partition in memory for unit tests: state, a clock, and the pure handlers.

Records go in as the plain dicts the codec decodes (timestamps in epoch ms), deadlines as the
timer hands them over, effects come out as they are; the partition only keeps what the plumbing
would keep: every deadline handed out and the message keys waiting for each campaign.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from streams.domain import escalation as esc
from streams.domain import handlers as h
from streams.domain.channels import ChannelPolicy, send_id
from streams.domain.deadlines import Due
from streams.domain.priors import PriorBook
from streams.domain.probing import ProbeBudget, ProbeConfig
from streams.domain.records import Output, ms
from streams.domain.state import (
    ACCOUNTS,
    DEVICES,
    MESSAGES,
    TALLIES,
    MemoryTables,
    account_key,
    device_key,
    message_key,
    tally_key,
)

T0 = 1_700_000_000.0
DEADLINES = {"LOW": 4000.0, "NORMAL": 3000.0, "HIGH": 2000.0, "URGENT": 1000.0}
XIAOMI_ROUTES = ("XIAOMI", "JPUSH", "FCM")  # original XIAOMI, alternatives JPUSH then FCM
#: Read values under which an SMS (0.05) pays only for a likely read of a HIGH push: the tests of
#: adaptive's cost decisions reason with these, whatever the defaults are.
THRIFTY = {"LOW": 0.01, "NORMAL": 0.1, "HIGH": 1.0, "URGENT": math.inf}


def config(*, new_account_pushes: int = 2, k1: float = 1.0, k2: float = 2.0,
           order: tuple[str, ...] = ("APP", "WECHAT", "SMS", "EMAIL"),
           probe: ProbeConfig | None = None, receipt_deadline: float = 30.0,
           reach_grace: float = 20.0, retention: float = 5000.0,
           strategy: str = "seed", read_value: Mapping[str, float] = THRIFTY,
           send_price: float = esc.DEFAULT_SEND_PRICE,
           read_window: float = esc.DEFAULT_READ_WINDOW) -> h.RouterConfig:
    """A RouterConfig with short, distinct durations (every read deadline differs)."""
    policy = ChannelPolicy(new_account_pushes=new_account_pushes, k1=k1, k2=k2, order=order,
                           read_deadlines=dict(DEADLINES), strategy=strategy,
                           read_value=dict(read_value), send_price=send_price,
                           read_window=read_window)
    return h.RouterConfig(policy, probe or ProbeConfig(), receipt_deadline=receipt_deadline,
                          reach_grace=reach_grace, retention=retention)


class Partition:
    """Account partition 0 (by default) of one worker, driven by plain records."""

    def __init__(self, cfg: h.RouterConfig | None = None, *, now: float = T0,
                 partition: int = 0) -> None:
        self.config = cfg or config()
        self.tables = MemoryTables()
        self.now = now
        self.partition = partition
        self.budget = ProbeBudget.from_config(self.config.probe)
        self.dues: list[Due] = []
        self.waits: dict[str, list[bytes]] = {}
        self.priors = PriorBook()  # the fleet's route priors, as route.priors would bring them

    # -- plumbing ----------------------------------------------------------------------------

    def ctx(self) -> h.Context:
        """The handlers' context at the current time."""
        return h.Context(self.config, self.now, self.partition, self.budget, self.priors)

    def apply(self, handler: h.Handler, record: dict[str, Any]) -> h.Effects:
        """Run a handler on a record and keep what the plumbing would keep of its effects."""
        return self._keep(handler(self.tables, record, self.ctx()))

    def _keep(self, fx: h.Effects) -> h.Effects:
        self.dues.extend(fx.dues)
        for campaign_id, key in fx.waits:
            self.waits.setdefault(campaign_id, []).append(key)
        return fx

    def advance(self, seconds: float) -> None:
        """Move the clock on."""
        self.now = round(self.now + seconds, 3)

    # -- inputs ------------------------------------------------------------------------------

    def request(self, account_id: str, message_id: str, *, importance: str = "NORMAL",
                campaign_id: str | None = None, device_ids: tuple[str, ...] = ()) -> h.Effects:
        """A PushRequest."""
        return self.apply(h.on_request, {
            "message_id": message_id, "account_id": account_id, "importance": importance,
            "title": "t", "body": "b", "read_action": "BUTTON", "link": LINK,
            "campaign_id": campaign_id,
            "device_ids": list(device_ids), "created_at": ms(self.now)})

    def ack(self, account_id: str, message_id: str, channel: str, kind: str, *,
            device_id: str | None = None, route: str | None = None,
            sid: str | None = None) -> h.Effects:
        """An Ack."""
        return self.apply(h.on_ack, {
            "message_id": message_id, "account_id": account_id, "channel": channel,
            "kind": kind, "device_id": device_id, "route": route, "send_id": sid,
            "acked_at": ms(self.now)})

    def read(self, account_id: str, message_id: str, channel: str,
             device_id: str | None = None) -> h.Effects:
        """A READ ack on a channel (from a device for APP)."""
        return self.ack(account_id, message_id, channel, "READ", device_id=device_id)

    def receipt(self, account_id: str, message_id: str, device_id: str, *, attempt: int = 0,
                route: str | None = None, sid: str | None = None) -> h.Effects:
        """A device's RECEIPT for the APP send of a message (attempt 0 unless told)."""
        sid = sid or send_id(account_id, message_id, "APP", device_id, attempt)
        return self.ack(account_id, message_id, "APP", "RECEIPT", device_id=device_id,
                        route=route, sid=sid)

    def profile(self, account_id: str, *, wechat: str | None = None, phone: str | None = None,
                email: str | None = None) -> h.Effects:
        """An AccountProfile with the given addresses."""
        return self.apply(h.on_profile, {
            "account_id": account_id, "phone": phone, "wechat_openid": wechat, "email": email,
            "updated_at": ms(self.now)})

    def device(self, account_id: str, device_id: str, *, manufacturer: str = "Xiaomi",
               model: str = "13", routes: tuple[str, ...] = XIAOMI_ROUTES,
               active: bool = True) -> h.Effects:
        """A DeviceRegistration (Xiaomi with two alternatives unless told)."""
        return self.apply(h.on_device, {
            "device_id": device_id, "account_id": account_id, "manufacturer": manufacturer,
            "model": model, "routes": list(routes), "active": active,
            "registered_at": ms(self.now)})

    def settings(self, account_id: str, primary: str | None,
                 secondary: str | None) -> h.Effects:
        """An AccountSettings override (both None clears it)."""
        return self.apply(h.on_settings, {
            "account_id": account_id, "primary": primary, "secondary": secondary,
            "updated_at": ms(self.now)})

    # -- deadlines and campaigns ---------------------------------------------------------------

    def due(self, kind: str, account_id: str, message_id: str,
            device_id: str | None = None) -> Due:
        """The last deadline of this kind handed out for a message (and device)."""
        found = [d for d in self.dues if (d.kind, d.account_id, d.message_id, d.device_id)
                 == (kind, account_id, message_id, device_id)]
        assert found, f"no {kind} deadline for {account_id}/{message_id}/{device_id}"
        return found[-1]

    def dues_of(self, account_id: str, message_id: str) -> list[tuple[str, str | None, float]]:
        """(kind, device, due_at) of every deadline handed out for a message."""
        return [(d.kind, d.device_id, d.due_at) for d in self.dues
                if (d.account_id, d.message_id) == (account_id, message_id)]

    def fire(self, due: Due) -> h.Effects:
        """The timer fires a deadline (the clock is at least its time)."""
        self.now = max(self.now, due.due_at)
        return self._keep(h.on_deadline(self.tables, due, self.ctx()))

    def decide(self, campaign_id: str, fallback: bool) -> list[h.Effects]:
        """A CampaignDecision reaches the partition: remember it, settle the waiting messages."""
        effects = [self.apply(h.on_campaign_decision, {
            "campaign_id": campaign_id, "targeted": 0, "acked": 0, "ratio": 0.0,
            "threshold": 0.5, "fallback": fallback, "decided_at": ms(self.now)})]
        for key in self.waits.pop(campaign_id, []):
            effects.append(self._keep(h.settle_campaign(self.tables, key, campaign_id,
                                                        self.ctx())))
        return effects

    def tally_output(self, campaign_id: str) -> Output | None:
        """The CampaignEvent this partition reports for a campaign now."""
        return h.tally_output(self.tables, campaign_id, self.partition, self.now)

    # -- state -------------------------------------------------------------------------------

    def account(self, account_id: str) -> dict[str, Any] | None:
        """The stored account."""
        return self.tables.get(ACCOUNTS, account_key(account_id))

    def message(self, account_id: str, message_id: str) -> dict[str, Any] | None:
        """The stored message."""
        return self.tables.get(MESSAGES, message_key(account_id, message_id))

    def device_state(self, account_id: str, device_id: str) -> dict[str, Any] | None:
        """The stored device route state."""
        return self.tables.get(DEVICES, device_key(account_id, device_id))

    def tally(self, campaign_id: str) -> dict[str, Any] | None:
        """This partition's stored tally of a campaign."""
        return self.tables.get(TALLIES, tally_key(campaign_id, self.partition))


# -- expected outputs (written out, not built with streams.domain.records) ---------------------


def sends(*effects: h.Effects, probes: bool = False) -> list[dict[str, Any]]:
    """The ChannelSend values of some effects, without PROBE sends unless asked."""
    return [o.value for fx in effects for o in fx.outputs
            if o.record == "ChannelSend" and (probes or o.value["reason"] != "PROBE")]


def outputs(*effects: h.Effects) -> list[Output]:
    """Every output but probes (which a device event may send at any time)."""
    return [o for fx in effects for o in fx.outputs
            if not (o.record == "ChannelSend" and o.value["reason"] == "PROBE")]


def of(record: str, *effects: h.Effects) -> list[dict[str, Any]]:
    """The values of one record type among some effects."""
    return [o.value for fx in effects for o in fx.outputs if o.record == record]


LINK = "https://shop.example/m"
#: What every send of a Partition.request carries of it (a probe carries nothing).
CONTENT = {"title": "t", "body": "b", "read_action": "BUTTON", "link": LINK}


def channel_send(account_id: str, message_id: str, channel: str, reason: str, now: float, *,
                 attempt: int = 0, device_id: str | None = None, route: str | None = None,
                 importance: str = "NORMAL") -> dict[str, Any]:
    """The ChannelSend value expected for one send."""
    return {"send_id": send_id(account_id, message_id, channel, device_id, attempt),
            "message_id": message_id, "account_id": account_id, "channel": channel,
            "device_id": device_id, "route": route, "reason": reason, "attempt": attempt,
            "importance": importance, **({} if reason == "PROBE" else CONTENT),
            "sent_at": round(now * 1000)}


def brief(values: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    """(channel, device, route, reason, attempt) of ChannelSend values, for compact asserts."""
    return [(v["channel"], v["device_id"], v["route"], v["reason"], v["attempt"])
            for v in values]


# -- scenarios -------------------------------------------------------------------------------


def read_history(p: Partition) -> None:
    """Five fan-out pushes: SMS read first three times (WECHAT after), WECHAT alone twice.

    feedback_count: SMS 3, WECHAT 5; first_feedback: SMS 3, WECHAT 2."""
    p.profile("a1", wechat="ow-1", phone="+86-1")
    for i in range(5):
        p.advance(1)
        assert {s["reason"] for s in sends(p.request("a1", f"h{i}"))} == {"FANOUT"}
        if i < 3:
            p.read("a1", f"h{i}", "SMS")
        p.read("a1", f"h{i}", "WECHAT")

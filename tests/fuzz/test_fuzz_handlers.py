"""Fuzz every handler of streams.domain.handlers.HANDLERS with records that pass decoding and
the caps, in random order and repeated, with the deadlines they hand out fired in any order
and campaigns settled, on MemoryTables: nothing but Rejected escapes, every output encodes,
and the state stays JSON (no NaN) and bounded."""

from __future__ import annotations

import json
import math
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas import RecordError, check_caps
from schemas import validation as v
from streams.domain import handlers as h
from streams.domain.deadlines import Due
from streams.domain.probing import ProbeBudget, ProbeConfig
from streams.domain.routes import KNOWN_ROUTES, MAX_PENDING
from streams.domain.state import ACCOUNTS, DEVICES, MESSAGES, ROUTER_TABLES, MemoryTables
from tests.fuzz.counts import examples, outcome, target
from tests.fuzz.strategies import CODEC, NOW, TIMES
from tests.unit.partition import config

FUZZ = settings(max_examples=examples(50), deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
#: Small pools, so records meet: the same accounts, messages, devices and campaigns again.
ACCOUNT = st.sampled_from(["a1", "a2", "😀" * 32, "a\x00b", " a"])
MESSAGE = st.sampled_from(["m1", "m2", "m3", "中" * 42, "\x00"])
DEVICE = st.sampled_from(["d1", "d2", "d3", "ⓓ" * 42])
CAMPAIGN = st.sampled_from([None, None, "c1", "c2"])
CHANNEL = st.sampled_from(["APP", "WECHAT", "SMS", "EMAIL"])
ROUTE = st.one_of(st.sampled_from(KNOWN_ROUTES),
                  st.sampled_from(["fcm", "huawei", "", " ", "X" * 32, "ü", "\x00"]))
MAKER = st.sampled_from(["Xiaomi", "HUAWEI", "apple", "iPhone14,2", "OPPO", "vivo", "Nokia",
                         "", "\x00", "m" * 64])
TEXT = st.one_of(*[st.text(max_size=8)] * 3,
                 st.sampled_from(["", "\x00", "😀" * 64, "x" * 2048]))
SEND_ID = st.one_of(st.none(), st.text(max_size=12), st.sampled_from(
    ["a1|m1|APP|d1|0", "a1|m1|APP|d1|1", "a1|m1|SMS||0"]))
CONFIGS = [config(), config(new_account_pushes=0), config(new_account_pushes=1, k1=0.0, k2=0.0,
                                                          receipt_deadline=0.0, reach_grace=0.0,
                                                          retention=0.0, strategy="adaptive"),
           config(probe=ProbeConfig(probe_count_first=2, probe_count_again=1,
                                    reprobe_interval_s=1.0, per_device_probes_per_hour=1000,
                                    global_probes_per_second=1000.0, probe_timeout_s=1.0))]

#: The time field of each capped input (moved near the event time in 4 of 5 inputs).
STAMPED = {"PushRequest": "created_at", "Ack": "acked_at", "AccountSettings": "updated_at",
           "AccountProfile": "updated_at", "DeviceRegistration": "registered_at"}

INPUTS: dict[tuple[str, str], st.SearchStrategy[dict[str, Any]]] = {
    ("push.requests", "PushRequest"): st.fixed_dictionaries({
        "message_id": MESSAGE, "account_id": ACCOUNT,
        "importance": st.sampled_from(["LOW", "NORMAL", "HIGH", "URGENT"]),
        "title": TEXT, "body": TEXT, "read_action": st.sampled_from(["BUTTON", "REPLY", "LINK"]),
        "link": st.one_of(st.none(), TEXT), "campaign_id": CAMPAIGN,
        "device_ids": st.one_of(st.just([]), st.lists(DEVICE, max_size=4),
                                st.just([f"d{i}" for i in range(v.DEVICE_IDS)])),
        "created_at": TIMES}),
    ("push.acks", "Ack"): st.fixed_dictionaries({
        "message_id": MESSAGE, "account_id": ACCOUNT, "channel": CHANNEL,
        "kind": st.sampled_from(["RECEIPT", "READ"]), "device_id": st.one_of(st.none(), DEVICE),
        "route": st.one_of(st.none(), ROUTE), "send_id": SEND_ID, "acked_at": TIMES}),
    ("account.settings", "AccountSettings"): st.fixed_dictionaries({
        "account_id": ACCOUNT, "primary": st.one_of(st.none(), CHANNEL),
        "secondary": st.one_of(st.none(), CHANNEL), "updated_at": TIMES}),
    ("account.profiles", "AccountProfile"): st.fixed_dictionaries({
        "account_id": ACCOUNT, "phone": st.one_of(st.none(), TEXT),
        "wechat_openid": st.one_of(st.none(), TEXT), "email": st.one_of(st.none(), TEXT),
        "updated_at": TIMES}),
    ("device.registry", "DeviceRegistration"): st.fixed_dictionaries({
        "device_id": DEVICE, "account_id": ACCOUNT, "manufacturer": MAKER, "model": MAKER,
        "routes": st.one_of(st.lists(ROUTE, max_size=5), st.just(list(KNOWN_ROUTES))),
        "push_tokens": st.dictionaries(ROUTE, TEXT, max_size=3), "active": st.booleans(),
        "registered_at": TIMES}),
    ("campaign.decisions", "CampaignDecision"): st.fixed_dictionaries({
        "campaign_id": st.sampled_from(["c1", "c2", "c3"]), "targeted": st.integers(0, 10),
        "acked": st.integers(0, 10), "ratio": st.floats(), "threshold": st.floats(0, 1),
        "fallback": st.booleans(), "decided_at": TIMES}),
}
assert set(INPUTS) == set(h.HANDLERS), "a handler has no fuzz input"
#: Inputs drawn more often where more can happen: requests and acks.
WEIGHTED = sorted(INPUTS) + [("push.requests", "PushRequest"), ("push.acks", "Ack")] * 2
#: Seconds between two inputs: backwards too (topics are not ordered by time), and far on.
STEPS = st.sampled_from([0.0, 0.0, 0.001, 0.5, 1.0, 20.0, 31.0, 1000.0, 3001.0, 86_400.0 * 3,
                         -1.0, -30.0])
STATE_BYTES = 64 * 1024


def _check_outputs(fx: h.Effects) -> None:
    """Every output is a record the plumbing can encode; every deadline is a finite time."""
    for out in fx.outputs:
        CODEC.encode(out.record, out.value)
        assert isinstance(out.key, str)
    for due in fx.dues:
        assert math.isfinite(due.due_at) and due.kind in ("READ", "RECEIPT", "GRACE", "EXPIRE")
    assert all(isinstance(n, int) and n >= 0 for n in fx.counts.values())


def _check_state(tables: MemoryTables, requests: set[tuple[str, str]]) -> None:
    """State is strict JSON, each value bounded; what it holds follows from the inputs."""
    for table in ROUTER_TABLES:
        for key, value in tables.items(table):
            text = json.dumps(value, allow_nan=False)
            assert len(text.encode()) < STATE_BYTES, (table, key, len(text))
    messages = [value for _, value in tables.items(MESSAGES)]
    assert {(m["account_id"], m["message_id"]) for m in messages} <= requests
    for _, account in tables.items(ACCOUNTS):
        mine = {m["message_id"] for m in messages if m["account_id"] == account["account_id"]}
        assert set(account["waiting"]) <= mine and len(account["waiting"]) <= len(mine)
        assert len(account["devices"]) == len(set(account["devices"])) <= 4
    for _, device in tables.items(DEVICES):
        assert len(device["pending"]) <= MAX_PENDING


@FUZZ
@given(data=st.data(), cfg=st.sampled_from(CONFIGS), partition=st.integers(0, 11))
@target("handlers")
def test_any_sequence_of_valid_records_and_deadlines_keeps_the_state_sound(
        data: st.DataObject, cfg: h.RouterConfig, partition: int) -> None:
    tables, now = MemoryTables(), NOW
    budget = ProbeBudget.from_config(cfg.probe)
    dues: list[Due] = []
    waits: dict[str, list[bytes]] = {}
    applied: list[tuple[h.Handler, dict[str, Any]]] = []
    requests: set[tuple[str, str]] = set()
    if data.draw(st.booleans(), label="a1 reachable"):  # else most requests only wait
        ctx = h.Context(cfg, now, partition, budget)
        h.on_profile(tables, {"account_id": "a1", "phone": "+1", "wechat_openid": "o",
                              "email": "e", "updated_at": round(now * 1000)}, ctx)
        h.on_device(tables, {"device_id": "d1", "account_id": "a1", "manufacturer": "Xiaomi",
                             "model": "13", "routes": ["XIAOMI", "JPUSH", "FCM"],
                             "push_tokens": {}, "active": True,
                             "registered_at": round(now * 1000)}, ctx)
    for _ in range(data.draw(st.integers(1, 40), label="steps")):
        step = data.draw(st.sampled_from(["record"] * 5 + ["repeat", "fire", "fire", "settle"]))
        now = round(now + data.draw(STEPS), 3)
        ctx = h.Context(cfg, now, partition, budget)
        if step == "fire" and dues:
            due = dues.pop(data.draw(st.integers(0, len(dues) - 1)))
            ctx.now = max(now, due.due_at)
            fx = h.on_deadline(tables, due, ctx)
            label = f"deadline {due.kind}"
        elif step == "settle" and waits:
            campaign = data.draw(st.sampled_from(sorted(waits)))
            key = data.draw(st.sampled_from(waits[campaign]))
            fx = h.settle_campaign(tables, key, campaign, ctx)
            label = "settle"
        elif step == "repeat" and applied:
            handler, record = data.draw(st.sampled_from(applied))
            try:
                fx = handler(tables, record, ctx)
            except h.Rejected as exc:
                assert str(exc)
                outcome("handlers", "repeat rejected")
                continue
            label = "repeat"
        else:
            (topic, name) = data.draw(st.sampled_from(WEIGHTED))
            record = CODEC.validate(name, data.draw(INPUTS[(topic, name)]))
            if name in STAMPED and data.draw(st.integers(0, 4)):  # mostly near the event time
                record[STAMPED[name]] = round(now * 1000) + data.draw(
                    st.integers(-86_400_000, 86_400_000))
            try:
                check_caps(name, record, now)
            except RecordError:
                outcome("handlers", "over a cap: dead letter")
                continue
            handler = h.HANDLERS[(topic, name)]
            try:
                fx = handler(tables, record, ctx)
            except h.Rejected as exc:
                assert str(exc)
                outcome("handlers", f"{name} rejected")
                continue
            applied.append((handler, record))
            if name == "PushRequest":
                requests.add((record["account_id"], record["message_id"]))
            label = name
        _check_outputs(fx)
        dues.extend(fx.dues)
        for campaign, key in fx.waits:
            waits.setdefault(campaign, []).append(key)
        for campaign in fx.tallies:
            out = h.tally_output(tables, campaign, partition, now)
            assert out is not None
            CODEC.encode(out.record, out.value)
        _check_state(tables, requests)
        outcome("handlers", f"{label}: outputs" if fx.outputs else f"{label}: none")

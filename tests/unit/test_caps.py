"""The caps on what outside producers write (schemas/validation.py): each at its limit is
accepted, one over is refused naming the field and the limit; addresses never echoed."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas import Codec, RecordError, SchemaError, caps_table, check_caps, enforce_caps
from schemas import validation as v
from streams.domain import handlers as h
from streams.domain.state import MESSAGES
from streams.state import changelog_bytes
from tests.unit.partition import Partition, config

NOW = 1_800_000_000.0  # epoch seconds: 2027-01-15
NOW_MS = round(NOW * 1000)
CODEC = Codec()
README = Path(__file__).resolve().parents[2] / "README.md"

BASE: dict[str, dict[str, Any]] = {
    "PushRequest": {"message_id": "m-1", "account_id": "a-1", "importance": "HIGH",
                    "title": "Hi", "body": "Body", "read_action": "LINK",
                    "link": "https://example.com/x", "campaign_id": "c-1",
                    "device_ids": ["d-1"], "created_at": NOW_MS},
    "Ack": {"message_id": "m-1", "account_id": "a-1", "channel": "APP", "kind": "READ",
            "device_id": "d-1", "route": "FCM", "send_id": "s-1", "acked_at": NOW_MS},
    "AccountSettings": {"account_id": "a-1", "primary": "SMS", "secondary": None,
                        "updated_at": NOW_MS},
    "AccountProfile": {"account_id": "a-1", "phone": "+8613800000000", "wechat_openid": "o-1",
                       "email": "a@example.com", "updated_at": NOW_MS},
    "DeviceRegistration": {"device_id": "d-1", "account_id": "a-1", "manufacturer": "Xiaomi",
                           "model": "13", "routes": ["XIAOMI"], "push_tokens": {"XIAOMI": "t"},
                           "active": True, "registered_at": NOW_MS},
}

#: (record, field, byte limit) of every capped string field.
TEXT = [(r, f, n) for r, fields, n in [
    ("PushRequest", ("message_id", "account_id", "campaign_id"), v.ID_BYTES),
    ("PushRequest", ("title",), v.TITLE_BYTES),
    ("PushRequest", ("body",), v.BODY_BYTES),
    ("PushRequest", ("link",), v.LINK_BYTES),
    ("Ack", ("message_id", "account_id", "device_id", "send_id"), v.ID_BYTES),
    ("Ack", ("route",), v.ROUTE_BYTES),
    ("AccountSettings", ("account_id",), v.ID_BYTES),
    ("AccountProfile", ("account_id",), v.ID_BYTES),
    ("AccountProfile", ("phone",), v.PHONE_BYTES),
    ("AccountProfile", ("wechat_openid",), v.OPENID_BYTES),
    ("AccountProfile", ("email",), v.EMAIL_BYTES),
    ("DeviceRegistration", ("device_id", "account_id"), v.ID_BYTES),
    ("DeviceRegistration", ("manufacturer", "model"), v.MODEL_BYTES),
] for f in fields]
PERSONAL = {"phone", "wechat_openid", "email"}
TIMES = {"PushRequest": "created_at", "Ack": "acked_at", "AccountSettings": "updated_at",
         "AccountProfile": "updated_at", "DeviceRegistration": "registered_at"}

#: Characters of 1 to 4 UTF-8 bytes (CJK is 3, an emoji 4).
CHARS = st.sampled_from(["a", "Z", "7", "é", "ж", "中", "文", "😀"])


def exactly(chars: list[str], size: int) -> str:
    """A string of exactly `size` UTF-8 bytes: the chars that fit, padded with ASCII."""
    out, used = [], 0
    for c in chars:
        n = len(c.encode())
        if used + n > size:
            break
        out.append(c)
        used += n
    return "".join(out) + "x" * (size - used)


def check(record: str, changes: dict[str, Any], now: float = NOW) -> dict[str, Any]:
    """Validate like the SDK does: the schema, then the caps."""
    value = CODEC.validate(record, {**BASE[record], **changes})
    check_caps(record, value, now)
    return value


def refused(record: str, changes: dict[str, Any], now: float = NOW) -> RecordError:
    with pytest.raises(RecordError) as info:
        check(record, changes, now)
    return info.value


def test_the_base_records_pass() -> None:
    for record in BASE:
        check(record, {})


@pytest.mark.parametrize(("record", "field", "limit"), TEXT,
                         ids=[f"{r}.{f}" for r, f, _ in TEXT])
@settings(max_examples=25, deadline=None)
@given(chars=st.lists(CHARS, max_size=300), extra=CHARS)
def test_each_text_cap_accepts_its_limit_and_refuses_one_more(
        record: str, field: str, limit: int, chars: list[str], extra: str) -> None:
    scheme = "https://h.example/" if field == "link" else ""  # links: https only
    at_limit = scheme + exactly(chars, limit - len(scheme))
    assert check(record, {field: at_limit})[field] == at_limit
    for over in (at_limit + "x", at_limit + extra):  # one byte over, and up to four
        error = refused(record, {field: over})
        assert error.record == record and error.field == field
        assert f"{limit} bytes" in str(error) and f"{record}.{field}" in str(error)
        if field in PERSONAL:
            assert over not in str(error) and str(len(over.encode())) not in str(error)


@pytest.mark.parametrize(("record", "field"), [(r, f) for r, f, n in TEXT if n == v.ID_BYTES])
def test_ids_are_never_blank(record: str, field: str) -> None:
    for blank in ("", " ", "\t"):
        error = refused(record, {field: blank})
        assert error.field == field and "empty" in str(error)


@settings(max_examples=25, deadline=None)
@given(ids=st.lists(st.lists(CHARS, max_size=60), min_size=v.DEVICE_IDS,
                    max_size=v.DEVICE_IDS))
def test_a_request_names_at_most_100_devices_of_128_bytes_each(ids: list[list[str]]) -> None:
    device_ids = [exactly(c, v.ID_BYTES) for c in ids]
    assert check("PushRequest", {"device_ids": device_ids})["device_ids"] == device_ids
    error = refused("PushRequest", {"device_ids": [*device_ids, "d-x"]})
    assert error.field == "device_ids" and f"over the cap of {v.DEVICE_IDS}" in str(error)
    error = refused("PushRequest", {"device_ids": [*device_ids[:-1], device_ids[-1] + "x"]})
    assert error.field == "device_ids" and f"item {v.DEVICE_IDS - 1}" in str(error)
    assert f"{v.ID_BYTES} bytes" in str(error)


@settings(max_examples=25, deadline=None)
@given(names=st.lists(st.lists(CHARS, max_size=12), min_size=v.ROUTES, max_size=v.ROUTES,
                      unique_by=lambda c: exactly(c, v.ROUTE_BYTES)))
def test_a_device_lists_at_most_16_routes_and_tokens(names: list[list[str]]) -> None:
    routes = [exactly(c, v.ROUTE_BYTES) for c in names]
    tokens = {r: "t" * v.TOKEN_BYTES for r in routes}
    check("DeviceRegistration", {"routes": routes, "push_tokens": tokens})
    error = refused("DeviceRegistration", {"routes": [*routes, "FCM"]})
    assert error.field == "routes" and f"over the cap of {v.ROUTES}" in str(error)
    error = refused("DeviceRegistration", {"routes": [routes[0] + "x"]})
    assert error.field == "routes" and f"{v.ROUTE_BYTES} bytes" in str(error)
    error = refused("DeviceRegistration", {"push_tokens": {**tokens, "FCM": "t"}})
    assert error.field == "push_tokens" and f"over the cap of {v.ROUTES}" in str(error)
    secret = "s" * (v.TOKEN_BYTES + 1)
    error = refused("DeviceRegistration", {"push_tokens": {"FCM": secret}})
    assert error.field == "push_tokens" and f"{v.TOKEN_BYTES} bytes" in str(error)
    assert "sss" not in str(error)
    error = refused("DeviceRegistration", {"push_tokens": {routes[0] + "x": "t"}})
    assert error.field == "push_tokens" and f"{v.ROUTE_BYTES} bytes" in str(error)


@pytest.mark.parametrize(("record", "field"), sorted(TIMES.items()))
@settings(max_examples=25, deadline=None)
@given(now=st.floats(min_value=1_000_000_000, max_value=4_000_000_000))
def test_timestamps_lie_between_2000_and_a_day_after_now(record: str, field: str,
                                                         now: float) -> None:
    latest = round(now * 1000) + v.FUTURE_MS
    for fine in (v.EARLIEST_MS, latest):
        assert check(record, {field: fine}, now)[field] == fine
    error = refused(record, {field: v.EARLIEST_MS - 1}, now)
    assert error.field == field and "2000-01-01" in str(error)
    error = refused(record, {field: latest + 1}, now)
    assert error.field == field and "1 day" in str(error)


def test_records_nobody_outside_writes_have_no_caps() -> None:
    check_caps("ChannelSend", {"body": "x" * 100_000, "sent_at": 0}, NOW)


def test_a_consumer_gets_a_schema_error_naming_the_topic_field_and_cap() -> None:
    value = CODEC.validate("PushRequest", {**BASE["PushRequest"], "body": "中" * 200_000})
    with pytest.raises(SchemaError) as info:
        enforce_caps("push.requests", "PushRequest", value, NOW)
    assert str(info.value) == ("push.requests: over a cap: PushRequest.body: 600000 bytes "
                               "(UTF-8), over the cap of 2048 bytes")


def test_the_readme_limits_table_is_the_code_s() -> None:
    text = README.read_text(encoding="utf-8")
    rows = {tuple(c.strip().strip("`") for c in line.strip("|").split("|"))
            for line in text.splitlines() if re.match(r"^\| `[A-Za-z]+` \|", line)}
    assert set(caps_table()) <= rows


def test_a_message_s_state_at_the_caps_stays_far_below_the_broker_s_record_limit() -> None:
    """The worst request the caps let through (4-byte characters everywhere, 100 devices):
    its message state, as written to the changelog, is under 32 KiB (librdkafka refuses 1 MB).
    """
    emoji = "😀"
    p = Partition(config(new_account_pushes=0))
    account = emoji * (v.ID_BYTES // 4)
    devices = [emoji * (v.ID_BYTES // 4 - 1) + f"{i:04d}" for i in range(v.DEVICE_IDS)]
    for d in devices[:3]:
        p.device(account, d)
    request = check("PushRequest", {
        "message_id": emoji * (v.ID_BYTES // 4), "account_id": account,
        "title": emoji * (v.TITLE_BYTES // 4), "body": emoji * (v.BODY_BYTES // 4),
        "link": "https://h.example/" + emoji * (v.LINK_BYTES // 4 - 5),
        "campaign_id": emoji * (v.ID_BYTES // 4), "device_ids": devices})
    p.apply(h.on_request, request)
    states = list(p.tables.items(MESSAGES))
    assert len(states) == 1
    size = len(changelog_bytes(states[0][1]))
    assert v.BODY_BYTES + v.ID_BYTES * v.DEVICE_IDS < size < 32 * 1024

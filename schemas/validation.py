"""Check a record dict against its schema, fill defaults, and name the offending field."""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from enum import Enum
from functools import cache
from typing import Any
from urllib.parse import urlsplit

from schemas.errors import RecordError, SchemaError
from schemas.loader import NAMESPACE, expanded

Check = Callable[[Any, str], Any]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MILLI = timedelta(milliseconds=1)
_INT = (-(1 << 31), (1 << 31) - 1)
_LONG = (-(1 << 63), (1 << 63) - 1)


class _Invalid(Exception):
    def __init__(self, path: str, reason: str) -> None:
        super().__init__(path, reason)
        self.path = path
        self.reason = reason


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _kind(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _null(value: Any, path: str) -> None:
    if value is not None:
        raise _Invalid(path, f"expected null, got {_kind(value)}")


def _boolean(value: Any, path: str) -> bool:
    if not isinstance(value, bool):
        raise _Invalid(path, f"expected boolean, got {_kind(value)}")
    return value


def _integer(kind: str, bounds: tuple[int, int]) -> Check:
    low, high = bounds

    def check(value: Any, path: str) -> int:
        if not isinstance(value, int) or isinstance(value, bool):
            raise _Invalid(path, f"expected {kind}, got {_kind(value)}")
        if not low <= value <= high:
            raise _Invalid(path, f"{value} is out of range for {kind}")
        return int(value)

    return check


def _real(kind: str) -> Check:
    def check(value: Any, path: str) -> float:
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise _Invalid(path, f"expected {kind}, got {_kind(value)}")
        return float(value)

    return check


def _bytes(value: Any, path: str) -> bytes:
    if not isinstance(value, (bytes, bytearray, memoryview)):
        raise _Invalid(path, f"expected bytes, got {_kind(value)}")
    return bytes(value)


def _string(value: Any, path: str) -> str:
    if not isinstance(value, str):
        raise _Invalid(path, f"expected string, got {_kind(value)}")
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise _Invalid(path, f"string is not encodable as UTF-8: {exc.reason}") from None
    return value if type(value) is str else str.__str__(value)


def _timestamp(value: Any, path: str) -> int:
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise _Invalid(path, "naive datetime; give it a tzinfo (e.g. UTC)")
        return (value - _EPOCH) // _MILLI
    if not isinstance(value, int) or isinstance(value, bool):
        raise _Invalid(
            path, f"expected timestamp-millis (int epoch ms or aware datetime), got {_kind(value)}"
        )
    return _LONG_CHECK(value, path)


_LONG_CHECK = _integer("long", _LONG)
_PRIMITIVES: dict[str, Check] = {
    "null": _null,
    "boolean": _boolean,
    "int": _integer("int", _INT),
    "long": _LONG_CHECK,
    "float": _real("float"),
    "double": _real("double"),
    "bytes": _bytes,
    "string": _string,
}


def _enum(node: dict[str, Any]) -> Check:
    name = node["name"].rsplit(".", 1)[-1]
    symbols = tuple(node["symbols"])
    allowed = frozenset(symbols)

    def check(value: Any, path: str) -> str:
        if isinstance(value, Enum):
            value = value.value
        if not isinstance(value, str):
            raise _Invalid(path, f"expected a {name} symbol (string), got {_kind(value)}")
        if value not in allowed:
            raise _Invalid(path, f"unknown {name} symbol {value!r}; allowed: {', '.join(symbols)}")
        return str.__str__(value)

    return check


def _array(items: Check) -> Check:
    def check(value: Any, path: str) -> list[Any]:
        if not isinstance(value, (list, tuple)):
            raise _Invalid(path, f"expected array (list), got {_kind(value)}")
        return [items(item, _join(path, str(i))) for i, item in enumerate(value)]

    return check


def _map(values: Check) -> Check:
    def check(value: Any, path: str) -> dict[str, Any]:
        if not isinstance(value, Mapping):
            raise _Invalid(path, f"expected map (dict), got {_kind(value)}")
        out = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise _Invalid(_join(path, str(key)), f"map key must be string, got {_kind(key)}")
            out[key] = values(item, _join(path, key))
        return out

    return check


def _fixed(node: dict[str, Any]) -> Check:
    size = node["size"]

    def check(value: Any, path: str) -> bytes:
        data = _bytes(value, path)
        if len(data) != size:
            raise _Invalid(path, f"expected {size} bytes, got {len(data)}")
        return data

    return check


def _union(branches: list[Any], named: dict[str, Check], namespace: str) -> Check:
    checks = [_compile(branch, named, namespace) for branch in branches]
    others = [c for b, c in zip(branches, checks, strict=True) if b != "null"]
    if "null" in branches and len(others) == 1:
        other = others[0]

        def nullable(value: Any, path: str) -> Any:
            return None if value is None else other(value, path)

        return nullable
    names = " | ".join(b if isinstance(b, str) else str(b.get("name", b["type"])) for b in branches)

    def check(value: Any, path: str) -> Any:
        for branch in checks:
            try:
                return branch(value, path)
            except _Invalid:
                continue
        raise _Invalid(path, f"{_kind(value)} matches no branch of union [{names}]")

    return check


def _record(node: dict[str, Any], named: dict[str, Check], namespace: str) -> Check:
    short = node["name"].rsplit(".", 1)[-1]
    fields: list[tuple[str, Check, bool, Any]] = []
    for field in node["fields"]:
        has_default = "default" in field
        fields.append(
            (
                field["name"],
                _compile(field["type"], named, namespace),
                has_default,
                field.get("default"),
            )
        )
    known = frozenset(name for name, *_ in fields)

    def check(value: Any, path: str) -> dict[str, Any]:
        if not isinstance(value, Mapping):
            raise _Invalid(path, f"expected a {short} record (dict), got {_kind(value)}")
        out: dict[str, Any] = {}
        present = 0
        for name, field_check, has_default, default in fields:
            if name in value:
                out[name] = field_check(value[name], _join(path, name))
                present += 1
            elif has_default:
                out[name] = copy.deepcopy(default) if isinstance(default, (list, dict)) else default
            else:
                raise _Invalid(_join(path, name), "missing required field")
        if len(value) != present:
            for key in value:
                if key not in known:
                    raise _Invalid(_join(path, str(key)), f"unknown field, not in {short}")
        return out

    return check


def _compile(node: Any, named: dict[str, Check], namespace: str) -> Check:
    """Build a check for one schema node; named types are looked up when first used."""
    if isinstance(node, str):
        if node in _PRIMITIVES:
            return _PRIMITIVES[node]
        fullname = node if "." in node else f"{namespace}.{node}"
        return lambda value, path: named[fullname](value, path)
    if isinstance(node, list):
        return _union(node, named, namespace)
    kind = node["type"]
    if kind == "long" and node.get("logicalType") == "timestamp-millis":
        return _timestamp
    if isinstance(kind, (dict, list)) or kind in _PRIMITIVES:
        return _compile(kind, named, namespace)
    if kind == "array":
        return _array(_compile(node["items"], named, namespace))
    if kind == "map":
        return _map(_compile(node["values"], named, namespace))
    namespace = node.get("namespace", namespace)
    name = node["name"] if "." in node["name"] else f"{namespace}.{node['name']}"
    builders = {"enum": lambda: _enum(node), "fixed": lambda: _fixed(node)}
    check = builders[kind]() if kind in builders else _record(node, named, namespace)
    named[name] = check
    return check


@cache
def compile_validator(record: str) -> Callable[[Mapping[str, Any]], dict[str, Any]]:
    """A function that checks and normalizes a dict for `record`, raising RecordError."""
    check = _compile(expanded(record), {}, NAMESPACE)

    def validate(value: Mapping[str, Any]) -> dict[str, Any]:
        try:
            out: dict[str, Any] = check(value, "")
        except _Invalid as exc:
            raise RecordError(record, exc.path, exc.reason) from None
        return out

    return validate


# -- caps on what outside producers write ------------------------------------------------------
#
# Every record kind the outside writes is held to these caps at every ingress: the producer SDK
# (and so `pushcascade send`), the ack gateway, and the router (a foreign producer's record that
# breaks one goes to push.dlq). Sizes are UTF-8 bytes. FCM and APNs refuse payloads over 4 kB:
# title + body + link (256 + 2048 + 1024) leave room for the envelope (ids, read token, vendor
# keys); 2048 bytes are also ~680 CJK characters, the length of a 10-part SMS. The table in
# README.md ("Limits") is checked against CAPS by tests/unit/test_caps.py.

#: Ids (message_id, account_id, device_id, campaign_id, send_id): bytes, and never blank.
ID_BYTES = 128
TITLE_BYTES = 256
BODY_BYTES = 2048
LINK_BYTES = 1024
#: Devices one request may name (an account's own devices; FCM multicasts 500 at most).
DEVICE_IDS = 100
#: Route names (`huawei`, `apns`, ...), and how many one device may list.
ROUTE_BYTES = 32
ROUTES = 16
#: Manufacturer and model of a device.
MODEL_BYTES = 64
#: A vendor push token (FCM's are ~160 bytes, APNs' 64 hex digits).
TOKEN_BYTES = 1024
#: Addresses (personal data: a refusal names the field and the cap, never the value or size).
PHONE_BYTES = 32  # E.164 is 15 digits and '+'; room for separators
EMAIL_BYTES = 254  # RFC 5321 path limit
OPENID_BYTES = 64  # WeChat openids are 28 characters
#: Timestamps: not before 2000-01-01T00:00:00Z, not more than a day after `now`.
EARLIEST_MS = 946_684_800_000
FUTURE_MS = 86_400_000


class _Cap:
    """One field's cap: checks a normalized value, and says what it allows (for the README)."""

    def __init__(self, text: str, check: Callable[[Any, float], str | None]) -> None:
        self.text, self.check = text, check


def _size(value: str) -> int:
    return len(value.encode("utf-8", "surrogatepass"))


def _text(limit: int, personal: bool = False) -> _Cap:
    def check(value: Any, _now: float) -> str | None:
        if not isinstance(value, str) or _size(value) <= limit:
            return None
        if personal:
            return f"over the cap of {limit} bytes"
        return f"{_size(value)} bytes (UTF-8), over the cap of {limit} bytes"

    return _Cap(f"{limit} bytes", check)


def _link(limit: int = LINK_BYTES) -> _Cap:
    over = _text(limit).check

    def check(value: Any, now: float) -> str | None:
        if not isinstance(value, str):
            return None
        try:
            url = urlsplit(value)
            host = url.hostname
        except ValueError:  # e.g. an unclosed IPv6 bracket
            return "must be an https:// URL with a host"
        if url.scheme != "https" or not host:
            return "must be an https:// URL with a host"
        return over(value, now)

    return _Cap(f"{limit} bytes, https:// only", check)


def _id(limit: int = ID_BYTES) -> _Cap:
    over = _text(limit).check

    def check(value: Any, now: float) -> str | None:
        if isinstance(value, str) and not value.strip():
            return "must not be empty"
        return over(value, now)

    return _Cap(f"1-{limit} bytes, not blank", check)


def _items(count: int, item: _Cap, what: str) -> _Cap:
    def check(value: Any, now: float) -> str | None:
        if not isinstance(value, (list, tuple)):
            return None
        if len(value) > count:
            return f"{len(value)} items, over the cap of {count}"
        for i, one in enumerate(value):
            reason = item.check(one, now)
            if reason:
                return f"item {i}: {reason}"
        return None

    return _Cap(f"{count} {what}, each {item.text}", check)


def _tokens(count: int, key: _Cap, token: _Cap) -> _Cap:
    def check(value: Any, now: float) -> str | None:
        if not isinstance(value, Mapping):
            return None
        if len(value) > count:
            return f"{len(value)} entries, over the cap of {count}"
        for i, (name, one) in enumerate(value.items()):
            reason = key.check(name, now)
            if reason:
                return f"route name {i}: {reason}"
            if token.check(one, now):
                return f"token {i}: over the cap of {TOKEN_BYTES} bytes"
        return None

    return _Cap(f"{count} routes, names {key.text}, tokens {token.text}", check)


def _time(value: Any, now: float) -> str | None:
    if not isinstance(value, int):
        return None
    if value < EARLIEST_MS:
        return f"{value} ms is before 2000-01-01T00:00:00Z ({EARLIEST_MS} ms)"
    latest = round(now * 1000) + FUTURE_MS
    if value > latest:
        return f"{value} ms is more than 1 day after now ({latest - FUTURE_MS} ms)"
    return None


_TIME = _Cap("2000-01-01 to now + 1 day", _time)
_ROUTE = _text(ROUTE_BYTES)

#: record -> field -> cap, for every record kind outside producers write.
CAPS: dict[str, dict[str, _Cap]] = {
    "PushRequest": {
        "message_id": _id(), "account_id": _id(), "title": _text(TITLE_BYTES),
        "body": _text(BODY_BYTES), "link": _link(), "campaign_id": _id(),
        "device_ids": _items(DEVICE_IDS, _id(), "ids"), "created_at": _TIME},
    "Ack": {
        "message_id": _id(), "account_id": _id(), "device_id": _id(), "route": _ROUTE,
        "send_id": _id(), "acked_at": _TIME},
    "AccountSettings": {"account_id": _id(), "updated_at": _TIME},
    "AccountProfile": {
        "account_id": _id(), "phone": _text(PHONE_BYTES, personal=True),
        "wechat_openid": _text(OPENID_BYTES, personal=True),
        "email": _text(EMAIL_BYTES, personal=True), "updated_at": _TIME},
    "DeviceRegistration": {
        "device_id": _id(), "account_id": _id(), "manufacturer": _text(MODEL_BYTES),
        "model": _text(MODEL_BYTES), "routes": _items(ROUTES, _ROUTE, "names"),
        "push_tokens": _tokens(ROUTES, _ROUTE, _text(TOKEN_BYTES, personal=True)),
        "registered_at": _TIME},
}


def caps_table() -> list[tuple[str, str, str]]:
    """(record, field, cap) for every capped field, as the README's Limits table lists them."""
    return [(record, name, cap.text) for record, fields in CAPS.items()
            for name, cap in fields.items()]


def check_caps(record: str, value: Mapping[str, Any], now: float) -> None:
    """Raise RecordError naming the first field of a normalized `record` over its cap.

    `value` is as validated or decoded (timestamps in epoch ms); `now` is epoch seconds.
    Records outside producers do not write have no caps."""
    for name, cap in CAPS.get(record, {}).items():
        reason = cap.check(value.get(name), now)
        if reason:
            raise RecordError(record, name, reason)


def enforce_caps(topic: str, record: str, value: Mapping[str, Any], now: float) -> None:
    """check_caps for a consumer: a SchemaError (so the record is dead-lettered) naming the
    field and its cap."""
    try:
        check_caps(record, value, now)
    except RecordError as exc:
        raise SchemaError(topic, f"over a cap: {exc}") from None

"""Unit tests of the provider adapters' pure parts: receipts parsing, error mapping, signing,
token caching, the registry and configuration (no HTTP)."""

from __future__ import annotations

import asyncio
import importlib
import time
from email.utils import formatdate

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from connectors.adapters import (
    ADAPTERS,
    Delivery,
    ProviderConfig,
    ProviderError,
    UnknownTarget,
    apns,
    fcm,
    huawei,
    jpush,
    oppo,
    sms,
    vivo,
    wechat,
)
from connectors.adapters.access import TokenCache, TokenExpired, with_token
from connectors.adapters.http import request, retry_after
from connectors.adapters.registry import Registry
from connectors.simulator.core import Arrival
from streams.domain.routes import KNOWN_ROUTES

REGISTRY = Registry(ProviderConfig(simulator_url="http://127.0.0.1:1"))
MALFORMED = [b"", b"not json", b"\xff\xfe", b"[1, 2]", b'{"x": 1}', b"<xml>", b"null",
             b"[" * 30_000, b"data=" + b"[" * 30_000]  # nested deeper than json recurses
tokens = st.text(st.characters(min_codepoint=33, max_codepoint=0x2FFF), min_size=1, max_size=80)


def arrival(vendor: str, token: str) -> Arrival:
    """A send as the simulator would have read it."""
    return Arrival(vendor=vendor, target=vendor.upper(), channel="APP", send_id="s-1",
                   address="addr-1", receipt_token=token, read_url="http://gw/r/1",
                   device_id="dev-1")


def receipt_body(vendor: str, token: str) -> tuple[str, bytes]:
    """The vendor's receipt callback body, as the simulator's population posts it."""
    module = importlib.import_module(f"connectors.simulator.vendors.{vendor}")
    builder = getattr(module, "receipt_body", None)
    if builder is None:  # apns, fcm, getui: the app reports the receipt
        from connectors.simulator.vendors import app_receipt_body as builder
    return builder(arrival(vendor, token), "msg-1")


@pytest.mark.parametrize("body", MALFORMED)
@pytest.mark.parametrize("name", sorted(ADAPTERS))
def test_a_malformed_receipt_callback_raises_value_error(name: str, body: bytes) -> None:
    with pytest.raises(ValueError):
        REGISTRY.adapter(name).receipts({}, body)


@pytest.mark.parametrize("name", sorted(ADAPTERS))
@settings(max_examples=40, deadline=None)
@given(body=st.binary(max_size=200))
def test_any_callback_body_gives_tokens_or_value_error(name: str, body: bytes) -> None:
    try:
        result = REGISTRY.adapter(name).receipts({}, body)
    except ValueError:
        return
    assert isinstance(result, list) and all(isinstance(t, str) for t in result)


@pytest.mark.parametrize("name", sorted(set(ADAPTERS) - {"wechat"}))
@settings(max_examples=25, deadline=None)
@given(token=tokens)
def test_the_receipt_the_simulator_posts_gives_back_its_token(name: str, token: str) -> None:
    content_type, body = receipt_body(name, token)
    assert REGISTRY.adapter(name).receipts({"content-type": content_type}, body) == [token]


def test_a_wechat_delivery_event_is_valid_but_carries_no_receipt_token() -> None:
    _, body = receipt_body("wechat", "rt-1")
    assert REGISTRY.adapter("wechat").receipts({}, body) == []
    with pytest.raises(ValueError):
        REGISTRY.adapter("wechat").receipts({}, b"<xml><MsgType>text</MsgType></xml>")


@pytest.mark.parametrize(("name", "body"), [
    ("huawei", b'{"statuses":[{"biTag":"t","status":2}]}'),
    ("xiaomi", b"data=%7B%22m1%22%3A%7B%22param%22%3A%22t%22%2C%22type%22%3A2%7D%7D"),
    ("oppo", b'[{"param":"t","eventType":"push_click"}]'),
    ("jpush", b'[{"params":{"receipt_token":"t"},"callback_type":2}]'),
    ("sms", b'[{"out_id":"t","success":false,"err_code":"MK:0001"}]'),
    ("email", b'[{"receipt_token":"t","event":"bounce"}]'),
])
def test_events_other_than_delivery_give_no_receipt(name: str, body: bytes) -> None:
    assert REGISTRY.adapter(name).receipts({}, body) == []


@pytest.mark.parametrize(("name", "body"), [
    ("huawei", b'{"statuses":[{"status":0}]}'),
    ("oppo", b'[{"eventType":"push_arrive"}]'),
    ("vivo", b'{"task-1":{"targets":"r"}}'),
    ("jpush", b'{"params":{},"callback_type":1}'),
    ("apns", b'{"receipts":[{"receipt_token":""}]}'),
    ("sms", b'[{"success":true}]'),
])
def test_a_receipt_without_its_token_names_the_missing_field(name: str, body: bytes) -> None:
    with pytest.raises(ValueError, match="callback field"):
        REGISTRY.adapter(name).receipts({}, body)


# ---- error mapping ----------------------------------------------------------------------------


@pytest.mark.parametrize(("error", "code", "retryable", "wait"), [
    (huawei.error_for(401, {"code": "80200003"}, {}), None, None, None),
    (huawei.error_for(400, {"code": "80300007"}, {}), "80300007", False, None),
    (huawei.error_for(503, {"code": "81000001"}, {"retry-after": "4"}), "81000001", True, 4.0),
    (fcm.error_for(401, {"error": {"status": "UNAUTHENTICATED"}}, {}), None, None, None),
    (fcm.error_for(404, {"error": {"status": "NOT_FOUND", "details": [
        {"errorCode": "UNREGISTERED"}]}}, {}), "UNREGISTERED", False, None),
    (fcm.error_for(429, {"error": {"details": [{"errorCode": "QUOTA_EXCEEDED"}]}},
                   {"Retry-After": "9"}), "QUOTA_EXCEEDED", True, 9.0),
    (fcm.error_for(502, {}, {}), "HTTP_502", True, None),
    (apns.error_for(403, "ExpiredProviderToken", {}), None, None, None),
    (apns.error_for(410, "Unregistered", {}), "Unregistered", False, None),
    (apns.error_for(400, "BadDeviceToken", {}), "BadDeviceToken", False, None),
    (apns.error_for(429, "TooManyRequests", {"retry-after": "2"}), "TooManyRequests", True, 2.0),
    (oppo.error_for(200, {"code": 11}, {}), None, None, None),
    (vivo.error_for(200, {"result": 10000}, {}), None, None, None),
    (vivo.error_for(200, {"result": 10302}, {}), "10302", False, None),
    (jpush.error_for(429, {"error": {"code": 2002}}, {"x-rate-limit-reset": "5"}), "2002", True,
     5.0),
    (jpush.error_for(400, {"error": {"code": 1011}}, {}), "1011", False, None),
    (wechat.error_for({"errcode": 42001}), None, None, None),
    (wechat.error_for({"errcode": 43004}), "43004", False, None),
    (wechat.error_for({"errcode": 45009}), "45009", True, wechat.QUOTA_WAIT),
    (sms.error_for(200, {"Code": "isv.BUSINESS_LIMIT_CONTROL"}, {}),
     "isv.BUSINESS_LIMIT_CONTROL", True, sms.THROTTLED_WAIT),
    (sms.error_for(400, {"Code": "isv.MOBILE_NUMBER_ILLEGAL"}, {}), "isv.MOBILE_NUMBER_ILLEGAL",
     False, None),
])
def test_vendor_errors_map_to_refresh_retryable_or_permanent(
        error: Exception, code: str | None, retryable: bool | None, wait: float | None) -> None:
    if code is None:
        assert isinstance(error, TokenExpired)
        return
    assert isinstance(error, ProviderError)
    assert (error.code, error.retryable, error.retry_after) == (code, retryable, wait)


@given(seconds=st.integers(min_value=0, max_value=10**6))
def test_retry_after_reads_delta_seconds(seconds: int) -> None:
    assert retry_after({"retry-after": str(seconds)}) == float(seconds)


def test_retry_after_reads_an_http_date_and_ignores_garbage() -> None:
    wait = retry_after({"Retry-After": formatdate(time.time() + 30, usegmt=True)})
    assert wait is not None and 25 <= wait <= 31
    assert retry_after({"retry-after": "soon"}, default=3.0) == 3.0
    assert retry_after({}) is None


# ---- signing ----------------------------------------------------------------------------------


def test_aliyun_percent_encoding_follows_rfc3986() -> None:
    assert sms.percent("a b*~/+") == "a%20b%2A~%2F%2B"
    assert sms.percent("用户 é") == "%E7%94%A8%E6%88%B7%20%C3%A9"


@given(st.text())
def test_aliyun_percent_encoding_is_urllibs_quote(text: str) -> None:
    from urllib.parse import quote

    assert sms.percent(text) == quote(text, safe="-_.~")


@given(params=st.dictionaries(st.text(max_size=10), st.text(max_size=30), max_size=6))
def test_the_sms_signature_is_aliyuns_definition(params: dict[str, str]) -> None:
    import base64
    import hashlib
    import hmac
    from urllib.parse import quote

    def q(text: str) -> str:
        return quote(text, safe="-_.~")

    canonical = "&".join(f"{q(k)}={q(v)}" for k, v in sorted(params.items()))
    digest = hmac.new(b"secret&", f"POST&{q('/')}&{q(canonical)}".encode(), hashlib.sha1)
    assert sms.signature(params, "secret") == base64.b64encode(digest.digest()).decode()


@given(params=st.dictionaries(st.text(min_size=1, max_size=10), st.text(max_size=20),
                              min_size=1, max_size=6),
       extra=st.text(min_size=1, max_size=5))
def test_the_sms_signature_covers_every_parameter(params: dict[str, str], extra: str) -> None:
    base = sms.signature(params, "secret")
    assert base == sms.signature(dict(reversed(list(params.items()))), "secret")  # order-free
    key = next(iter(params))
    assert sms.signature({**params, key: params[key] + extra}, "secret") != base
    assert sms.signature(params, "other") != base


@given(send_id=st.text(min_size=1, max_size=40))
def test_repeats_of_a_send_carry_the_same_vendor_ids(send_id: str) -> None:
    from connectors.adapters import getui

    assert apns.apns_id(send_id) == apns.apns_id(send_id)
    assert 10 <= len(getui.request_id(send_id)) <= 32
    assert apns.apns_id(send_id) != apns.apns_id(send_id + "x")


# ---- transport failures: certainly not sent, or ambiguous -------------------------------------


def cut_off(exc: type[httpx.TransportError]) -> httpx.AsyncClient:
    """A client whose every request fails with `exc` (as the transport would raise it)."""
    def fail(request: httpx.Request) -> httpx.Response:
        raise exc("injected", request=request)

    return httpx.AsyncClient(transport=httpx.MockTransport(fail))


@pytest.mark.parametrize(("exc", "code", "sent"), [
    (httpx.ReadTimeout, "TIMEOUT", True), (httpx.WriteTimeout, "TIMEOUT", True),
    (httpx.ReadError, "UNREACHABLE", True), (httpx.RemoteProtocolError, "UNREACHABLE", True),
    (httpx.ConnectTimeout, "TIMEOUT", False), (httpx.PoolTimeout, "TIMEOUT", False),
    (httpx.ConnectError, "UNREACHABLE", False), (httpx.LocalProtocolError, "UNREACHABLE", False),
])
def test_a_push_request_cut_off_after_it_may_have_been_sent_is_ambiguous(
        exc: type[httpx.TransportError], code: str, sent: bool) -> None:
    async def main(sends: bool) -> ProviderError:
        async with cut_off(exc) as client:
            with pytest.raises(ProviderError) as caught:
                await request(client, "POST", "http://vendor.test/push", sends=sends)
        return caught.value

    error = asyncio.run(main(True))
    assert (error.code, error.retryable, error.ambiguous) == (code, True, sent)
    assert not asyncio.run(main(False)).ambiguous  # an access-token request: never ambiguous


@pytest.mark.parametrize("name", ["wechat", "getui", "oppo", "vivo", "fcm", "huawei", "xiaomi",
                                  "jpush", "sms", "email"])
def test_only_the_push_request_itself_can_leave_a_send_ambiguous(name: str) -> None:
    item = Delivery(send={"send_id": "s-1", "channel": "APP", "message_id": "m-1",
                          "account_id": "a-1"}, address="addr-1", read_url="http://gw/r/1",
                    receipt_token="tok-1")

    async def main() -> ProviderError:
        async with cut_off(httpx.ReadTimeout) as client:
            with pytest.raises(ProviderError) as caught:
                await REGISTRY.adapter(name).send(client, item)
        return caught.value

    # adapters with an access token ask for it first: its timeout sent no push
    fetches_token = name in ("wechat", "getui", "oppo", "vivo", "fcm", "huawei")
    assert asyncio.run(main()).ambiguous is not fetches_token


# ---- token cache ------------------------------------------------------------------------------


def test_a_token_is_fetched_once_until_invalidated() -> None:
    fetched: list[str] = []

    async def fetch(http: object) -> tuple[str, float]:
        fetched.append(f"tok-{len(fetched)}")
        return fetched[-1], 3600.0

    async def main() -> None:
        cache = TokenCache(fetch)  # type: ignore[arg-type]
        tokens = await asyncio.gather(*(cache.get(None) for _ in range(5)))  # type: ignore[arg-type]
        assert set(tokens) == {"tok-0"}
        cache.invalidate("tok-other")  # a stale token does not drop the current one
        assert await cache.get(None) == "tok-0"  # type: ignore[arg-type]
        cache.invalidate("tok-0")
        assert await cache.get(None) == "tok-1"  # type: ignore[arg-type]

    asyncio.run(main())
    assert fetched == ["tok-0", "tok-1"]


def test_a_token_is_fetched_anew_shortly_before_it_expires() -> None:
    now = [0.0]
    fetched: list[float] = []

    async def fetch(http: object) -> tuple[str, float]:
        fetched.append(now[0])
        return f"tok-{len(fetched)}", 7200.0  # WeChat's lifetime

    async def main() -> list[str]:
        cache = TokenCache(fetch, margin=300.0, clock=lambda: now[0])  # type: ignore[arg-type]
        seen = []
        for t in (0.0, 6899.0, 6900.0, 7000.0):
            now[0] = t
            seen.append(await cache.get(None))  # type: ignore[arg-type]
        return seen

    assert asyncio.run(main()) == ["tok-1", "tok-1", "tok-2", "tok-2"]
    assert fetched == [0.0, 6900.0]


def test_a_token_refused_twice_is_a_retryable_error() -> None:
    async def fetch(http: object) -> tuple[str, float]:
        return "tok", 3600.0

    async def refuse(token: str) -> object:
        raise TokenExpired("expired")

    async def main() -> None:
        with pytest.raises(ProviderError) as caught:
            await with_token(None, TokenCache(fetch), refuse)  # type: ignore[arg-type]
        assert (caught.value.code, caught.value.retryable) == ("TOKEN_REJECTED", True)

    asyncio.run(main())


# ---- registry and configuration ---------------------------------------------------------------


def test_every_known_route_and_account_channel_has_an_adapter() -> None:
    for route in KNOWN_ROUTES:
        assert REGISTRY.for_send("APP", route).name in ADAPTERS
    assert REGISTRY.for_send("APP", "HONOR").name == "huawei"
    assert [REGISTRY.for_send(c, None).name for c in ("WECHAT", "SMS", "EMAIL")] == [
        "wechat", "sms", "email"]


@pytest.mark.parametrize(("channel", "route", "message"), [
    ("APP", None, "needs a route"), ("APP", "NOKIA", "route 'NOKIA'"),
    ("FAX", None, "channel 'FAX'")])
def test_an_unknown_channel_or_route_is_a_clear_error(channel: str, route: str | None,
                                                      message: str) -> None:
    with pytest.raises(UnknownTarget, match=message):
        REGISTRY.for_send(channel, route)


def test_a_registry_naming_an_unknown_adapter_fails_at_start() -> None:
    with pytest.raises(ValueError, match="no adapter called 'pigeon'"):
        Registry(ProviderConfig(routes="HUAWEI=pigeon"))
    with pytest.raises(ValueError, match="KEY=adapter"):
        Registry(ProviderConfig(channels="SMS"))


def test_base_urls_default_to_the_simulator_and_follow_the_environment(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PUSHCASCADE_PROVIDER_HUAWEI_BASE_URL", "https://push-api.cloud.huawei.com/")
    config = ProviderConfig(simulator_url="http://127.0.0.1:9/")
    assert config.base_url("huawei") == "https://push-api.cloud.huawei.com"
    assert config.base_url("fcm") == "http://127.0.0.1:9/fcm"


def test_secrets_appear_in_no_repr(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HUAWEI_CLIENT_SECRET", "XIAOMI_APP_SECRET", "SMS_ACCESS_KEY_SECRET",
                 "EMAIL_API_KEY", "WECHAT_APP_SECRET"):
        monkeypatch.setenv(f"PUSHCASCADE_PROVIDER_{name}", "s3cr3t-value")
    registry = Registry(ProviderConfig())
    for name in ADAPTERS:
        adapter = registry.adapter(name)
        assert "s3cr3t" not in repr(adapter) and "s3cr3t" not in repr(vars(adapter))
    item = Delivery(send={"send_id": "s-1", "channel": "SMS"}, address="+8613800000000",
                    read_url="http://gw/r?t=sig", receipt_token="rt-sig")
    assert "+86" not in repr(item) and "sig" not in repr(item)


@given(title=st.text(max_size=30), nonce=st.text(min_size=1, max_size=12))
def test_the_sms_form_body_decodes_to_the_signed_parameters(title: str, nonce: str) -> None:
    from urllib.parse import parse_qsl

    from connectors.adapters import Delivery
    from connectors.adapters.config import SmsSettings

    settings = SmsSettings(access_key_id="id", access_key_secret="secret")
    delivery = Delivery({"send_id": "s1", "title": title}, "+86 138", "http://gw/r/x?a=1&b",
                        "rt+/=")
    body = sms.form(settings, delivery, 1.8e9, nonce).decode()
    assert dict(parse_qsl(body, keep_blank_values=True)) == sms.params(settings, delivery,
                                                                       1.8e9, nonce)

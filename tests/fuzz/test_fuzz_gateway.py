"""Fuzz the ack gateway's HTTP API from its own OpenAPI description (served on its private
admin port), in-process (the real Starlette app over httpx's ASGI transport, its lifespan run)
against the test broker: every operation and path it declares, with random, forged, expired,
over-cap and valid tokens and random, malformed and well-formed vendor callback bodies. Every
answer is a status the operation declares (or 404/405 for what it does not, and 429 from the
per-address rate limit in front of every route), never 5xx, and a 4xx carries a message. The
model: a receipt counts only on its provider's callback, a tracked link's page (GET/HEAD)
records nothing and its button (POST) one READ, each (send_id, kind) is recorded once; every
ack answered as recorded is on push.acks, and nothing else is.

Schemathesis generates from the declared parameters and bodies, and the gateway's OpenAPI
(Starlette's docstring schema) declares neither; this fuzzer takes the operations and their
responses from it and draws the parameters and bodies the gateway's code reads."""

from __future__ import annotations

import asyncio
import base64
import importlib
import json
import time
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote, unquote, urlsplit

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from connectors.adapters import UnknownTarget
from connectors.adapters.config import ProviderConfig
from connectors.adapters.registry import ADAPTERS, Registry
from connectors.gateway import admin_app, create_app
from connectors.settings import ConnectorSettings
from connectors.simulator.core import Arrival
from connectors.simulator.vendors import app_receipt_body
from connectors.tokens import MAX_LENGTH, AckToken, Signer
from schemas import validation as v
from streams.harness import Tap
from streams.settings import Settings
from streams.topics import create_topics
from tests.fuzz.counts import examples, outcome, target
from tests.fuzz.strategies import CODEC, EDGE_TEXT

pytestmark = pytest.mark.broker
FUZZ = settings(max_examples=examples(50), deadline=None, suppress_health_check=[
    HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture])
METHODS = ("GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS")
CONFIG = ConnectorSettings()
SIGNER = Signer(CONFIG.keys, CONFIG.signing_key_id, CONFIG.ack_token_ttl)
FORGER = Signer({CONFIG.signing_key_id: "not-the-key-" * 4}, CONFIG.signing_key_id, 3600)
APP_RECEIPTS = ("fcm", "apns", "getui")


class Gateway:
    """The app, its lifespan entered on a loop of its own, and a client over ASGI."""

    def __init__(self, settings_: Settings) -> None:
        self.registry = Registry(ProviderConfig.from_env())
        self.app = create_app(settings_, CONFIG, self.registry, CODEC)
        self.loop = asyncio.new_event_loop()
        self.life = self.app.router.lifespan_context(self.app)
        self.loop.run_until_complete(self.life.__aenter__())
        # an exception in the app is answered 500, as served; no client in between (a client
        # would read a redirect's Location, which a fuzzed link may make invalid)
        self.transport = httpx.ASGITransport(app=self.app, raise_app_exceptions=False)
        self.private = httpx.ASGITransport(app=admin_app(self.app), raise_app_exceptions=False)

    def request(self, method: str, path: str, content: bytes | None = None,
                headers: dict[str, str] | None = None, admin: bool = False) -> httpx.Response:
        """One request, answered in-process (on the private admin port's app with admin)."""
        transport = self.private if admin else self.transport

        async def send() -> httpx.Response:
            request = httpx.Request(method, "http://gateway" + path, content=content,
                                    headers=headers)
            response = await transport.handle_async_request(request)
            await response.aread()
            return response

        return self.loop.run_until_complete(send())

    def close(self) -> None:
        """Leave the lifespan (flushes the ack producer) and close the loop."""
        self.loop.run_until_complete(self.life.__aexit__(None, None, None))
        self.loop.close()


@pytest.fixture(scope="module")
def gateway(broker: Any) -> Iterator[tuple[Gateway, Settings]]:
    """The gateway on its own topics of the test broker."""
    settings_ = Settings(kafka_bootstrap_servers=broker.bootstrap,
                         topic_prefix=f"fz{uuid.uuid4().hex[:8]}.")
    create_topics(settings_, broker.bootstrap)
    running = Gateway(settings_)
    yield running, settings_
    running.close()


def _served(spec: dict[str, Any]) -> dict[str, dict[str, frozenset[int]]]:
    """Path template -> method -> the status codes its operation declares, for every operation
    in the OpenAPI; HEAD is served as GET wherever GET is (Starlette)."""
    served: dict[str, dict[str, frozenset[int]]] = {}
    for path, item in spec["paths"].items():
        methods = served.setdefault(path, {})
        for method, op in item.items():
            methods[method.upper()] = frozenset(
                int(c) for c in op.get("responses", {})) or frozenset({200})
        if "GET" in methods:
            methods.setdefault("HEAD", methods["GET"])
    return served


def _provider(gw: Gateway, token: AckToken) -> str | None:
    """The provider a token's send went to (the registry's configuration), or None."""
    try:
        return gw.registry.name_for(token.channel, token.route)
    except UnknownTarget:
        return None


def _targets(registry: Registry, vendor: str) -> list[tuple[str, str | None]]:
    """The (channel, route) of the sends provider `vendor` delivers."""
    return [("APP", route) for route, name in registry.routes.items() if name == vendor] + [
        (channel, None) for channel, name in registry.channels.items() if name == vendor]


IDS = st.one_of(st.sampled_from(["s-1", "m-1", "a-1", "d-1"]), EDGE_TEXT,
                st.text(min_size=1, max_size=20))
SENDS = st.fixed_dictionaries({
    "send_id": IDS, "message_id": IDS, "account_id": IDS,
    "channel": st.sampled_from(["APP", "WECHAT", "SMS", "EMAIL"]),
    "device_id": st.one_of(st.none(), IDS), "route": st.one_of(st.none(), st.sampled_from(
        ["XIAOMI", "FCM", "", "R" * v.ROUTE_BYTES, "R" * (v.ROUTE_BYTES + 1)])),
    "link": st.one_of(st.none(), st.sampled_from(["https://example.com/x", "javascript:x",
                                                  "//evil.example", "\r\nSet-Cookie: a=b",
                                                  "x" * 1024]))})


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@st.composite
def tokens(draw: st.DrawFn, kind: str,
           targets: tuple[tuple[str, str | None], ...] = ()) -> tuple[str, AckToken | None]:
    """A token text, and the ack it validly stands for (None when it stands for none); its
    send is now and then one to `targets` (a callback's provider)."""
    how = draw(st.sampled_from(["valid", "valid", "valid", "other kind", "forged", "expired",
                                "text", "jwt-shaped", "too long", "alg none"]))
    send = draw(SENDS)
    if targets and draw(st.booleans()):
        channel, route = draw(st.sampled_from(targets))
        send = {**send, "channel": channel, "route": route}
    if how in ("valid", "other kind", "forged", "expired"):
        token = AckToken.for_send(kind if how != "other kind" else
                                  {"READ": "RECEIPT", "RECEIPT": "READ"}[kind], send)
        if how == "forged":
            return FORGER.sign(token), None
        if how == "expired":
            return SIGNER.sign(token, now=time.time() - CONFIG.ack_token_ttl - 60), None
        return SIGNER.sign(token), token if how == "valid" else None
    if how == "text":
        return draw(st.text(max_size=200)), None
    if how == "too long":
        return "a" * draw(st.integers(MAX_LENGTH + 1, MAX_LENGTH * 2)), None
    header = draw(st.one_of(
        st.fixed_dictionaries({"alg": st.sampled_from(["HS256", "none", "RS256", "HS512"]),
                               "kid": st.one_of(st.just(CONFIG.signing_key_id), st.text(),
                                                st.integers(), st.lists(st.integers()),
                                                st.none())}),
        st.dictionaries(st.text(max_size=5), st.integers(), max_size=3)))
    claims = draw(st.dictionaries(st.sampled_from(
        ["kind", "send_id", "message_id", "account_id", "channel", "exp", "x"]),
        st.one_of(st.text(max_size=8), st.integers(), st.none(), st.lists(st.integers())),
        max_size=7))
    if how == "alg none":
        header = {"alg": "none", "kid": CONFIG.signing_key_id}
        claims = {**json.loads(json.dumps(AckToken.for_send(kind, send).__dict__)),
                  "exp": int(time.time()) + 3600}
    text = ".".join([_b64(json.dumps(header).encode()), _b64(json.dumps(claims).encode()),
                     _b64(draw(st.binary(max_size=32)))])
    return text, None


def _arrival(vendor: str, token: str) -> Arrival:
    return Arrival(vendor=vendor, target=vendor.upper(), channel="APP", send_id="s-1",
                   address="addr", receipt_token=token, read_url="", account_id="a-1",
                   device_id="d-1")


def _vendor_body(vendor: str, texts: list[str]) -> bytes:
    """A well-formed receipt callback of `vendor` carrying these receipt tokens."""
    if vendor in APP_RECEIPTS:
        bodies = [app_receipt_body(_arrival(vendor, t), "pm-1")[1] for t in texts]
        receipts = [r for b in bodies for r in json.loads(b)["receipts"]]
        return json.dumps({"receipts": receipts}).encode()
    module = importlib.import_module(f"connectors.simulator.vendors.{vendor}")
    parts = [module.receipt_body(_arrival(vendor, t), "pm-1")[1] for t in texts[:1]]
    return parts[0] if parts else b""


@st.composite
def callbacks(draw: st.DrawFn, vendor: str,
              targets: tuple[tuple[str, str | None], ...] = ()) -> tuple[bytes, list[AckToken]]:
    """A callback body for `vendor` and the validly signed receipt tokens it carries (of sends
    to `targets` now and then)."""
    how = draw(st.sampled_from(["vendor", "vendor", "vendor", "bytes", "json", "nested",
                                "huge"]))
    if how == "bytes":
        return draw(st.binary(max_size=300)), []
    if how == "json":
        data = draw(st.recursive(st.one_of(st.none(), st.booleans(), st.integers(),
                                           st.text(max_size=10)),
                                 lambda kids: st.one_of(st.lists(kids, max_size=3),
                                                        st.dictionaries(st.text(max_size=8),
                                                                        kids, max_size=3)),
                                 max_leaves=10))
        return json.dumps(data).encode(), []
    if how == "nested":
        return b"[" * draw(st.sampled_from([10, 500, 30_000])), []
    if how == "huge":
        return b"x" * draw(st.sampled_from([CONFIG.ack_max_body, CONFIG.ack_max_body + 1])), []
    drawn = draw(st.lists(tokens("RECEIPT", targets), min_size=1, max_size=3))
    if vendor not in APP_RECEIPTS:
        drawn = drawn[:1]
    valid = [t for _, t in drawn if t is not None]
    if vendor == "wechat":  # WeChat echoes no token: its READ comes through the link
        valid = []
    if any(not text for text, _ in drawn):  # every item must carry a token: else malformed
        valid = []
    return _vendor_body(vendor, [text for text, _ in drawn]), valid


def _within_caps(token: AckToken) -> bool:
    from schemas import RecordError, check_caps
    try:
        check_caps("Ack", token.ack(time.time()), time.time())
    except RecordError:
        return False
    return True


def test_every_answer_is_declared_never_5xx_and_every_recorded_ack_is_on_the_topic(
        gateway: tuple[Gateway, Settings]) -> None:
    gw, settings_ = gateway
    assert gw.request("GET", "/openapi.json").status_code == 404  # the private port's only
    served = _served(gw.request("GET", "/openapi.json", admin=True).json())
    assert set(served) >= {"/callbacks/{provider}", "/r/{token}", "/read/{token}"}
    assert set(served["/r/{token}"]) == {"GET", "HEAD", "POST"}
    paths = sorted(served)
    recorded: list[str] = []  # send_ids of the acks the gateway said it recorded
    seen: set[tuple[str, str]] = set()  # (send_id, kind) recorded: a repeat is not recorded
    providers = sorted(ADAPTERS)
    targets = {name: tuple(_targets(gw.registry, name)) for name in providers}

    def fresh(acks: list[AckToken], kind: str) -> list[str]:
        """The send_ids of acks the gateway has not recorded yet, each once, in order."""
        new: list[str] = []
        for ack in acks:
            if (ack.send_id, kind) not in seen and ack.send_id not in new:
                new.append(ack.send_id)
        return new

    @FUZZ
    @given(st.data())
    @target("gateway.http")
    def run(data: st.DataObject) -> None:
        path = data.draw(st.sampled_from(paths), label="path")
        methods = served[path]
        method = data.draw(st.sampled_from(sorted(methods)) if data.draw(st.integers(0, 9))
                           else st.sampled_from(METHODS), label="method")  # mostly one served
        declared = methods.get(method, frozenset({405}))
        valid: list[AckToken] = []  # validly signed tokens of the right kind
        body = b""
        token_text = ""
        vendor = ""
        if "{provider}" in path:
            vendor = data.draw(st.sampled_from(providers) if data.draw(st.integers(0, 4)) else
                               st.text(min_size=1, max_size=12), label="provider")
            known = vendor if vendor in ADAPTERS else "sms"
            body, valid = data.draw(callbacks(known, targets[known]))
            url = path.replace("{provider}", quote(vendor, safe=""))
        elif "{token}" in path:
            token_text, token = data.draw(tokens("READ"), label="token")
            valid = [token] if token is not None else []
            url = path.replace("{token}", quote(token_text, safe="") or "x")
        else:
            url = path
        answer = gw.request(method, url, content=body or None,
                            headers={"content-type": data.draw(st.sampled_from(
                                ["application/json", "text/plain", "application/xml",
                                 "application/x-www-form-urlencoded"]))})
        status = answer.status_code
        assert status < 500, (status, answer.text[:300])
        if status == 307 and unquote(url).endswith("/"):  # Starlette's redirect_slashes
            assert answer.headers["location"]
            outcome("gateway.http", f"{method} {path.split('/')[1]} 307 (trailing /)")
            return
        if status >= 400 and method != "HEAD":
            assert answer.content.strip(), "a refusal without a message"
            if answer.headers.get("content-type", "").startswith("application/json"):
                assert answer.json()["message"]
        label = f"{method} {path.split('/')[1]} {status}"
        if status == 429 and answer.headers.get("retry-after"):  # the per-address limit
            outcome("gateway.http", f"{label} (client rate)")
            time.sleep(float(answer.headers["retry-after"]))  # as a client would
            return
        assert status in declared | {404} if "{" in path else status in declared, \
            (path, method, status, answer.text[:200])
        outcome("gateway.http", label)
        if method not in methods or status in (404, 429, 503) or "{" not in path:
            return  # not served here, not routed, rate-limited, unavailable, or no ack route
        within = [t for t in valid if _within_caps(t)]
        if "{provider}" in path:
            within = [t for t in within if _provider(gw, t) == vendor]
            if status != 200:
                assert not within, f"a valid receipt refused: {status} {answer.text[:200]}"
                return
            new = fresh(within, "RECEIPT")
            answered = answer.json()
            assert (answered["recorded"], answered["repeated"]) == (
                len(new), len(within) - len(new)), (answered, len(within), body[:200])
            seen.update((send_id, "RECEIPT") for send_id in new)
            recorded.extend(new)
        elif method in ("GET", "HEAD"):  # the link's page: records nothing
            signed = bool(valid) and len(token_text) <= MAX_LENGTH
            assert (status == 200) == signed, (status, token_text[:100])
        elif status in (200, 303):  # a read action: one READ, unless recorded before
            assert len(within) == 1, "a read recorded without a valid token within the caps"
            new = fresh(within, "READ")
            if path.startswith("/read/"):
                assert status == 200 and answer.json() == {"recorded": bool(new)}
            else:  # the link page's button: on to the message's link, if it may lead there
                token = within[0]
                assert (status == 303) == CONFIG.allows_link(token.link), (status, token.link)
                if status == 303:
                    location = answer.headers["location"]
                    assert location == token.link and urlsplit(location).scheme == "https"
            seen.update((send_id, "READ") for send_id in new)
            recorded.extend(new)
        else:
            assert not within, f"a valid read refused: {status} {answer.text[:200]}"

    run()
    with Tap(settings_, "push.acks") as tap:
        acks = tap.wait_for(lambda rs: len(rs) >= len(recorded), 60)
        acks += tap.poll(1.0)
    assert sorted(a["send_id"] for a in acks) == sorted(recorded)
    outcome("gateway.http", "acks on push.acks (= recorded)", len(acks))


def test_a_deeply_nested_callback_body_is_a_400(gateway: tuple[Gateway, Settings]) -> None:
    gw, _ = gateway
    answer = gw.request("POST", "/callbacks/apns", content=b"[" * 30_000)
    assert answer.status_code == 400 and answer.json()["error"] == "malformed"


def test_a_signed_token_for_an_unknown_channel_is_a_4xx(
        gateway: tuple[Gateway, Settings]) -> None:
    """A channel this gateway does not know (e.g. signed by a newer dispatcher): refused with
    the field named and no value of the token in the message, and nothing written."""
    gw, settings_ = gateway
    text = SIGNER.sign(AckToken("READ", "s-fax", "m-fax", "a-fax", "FAX"))
    for path in (f"/read/{text}", f"/r/{text}"):
        answer = gw.request("POST", path)
        assert 400 <= answer.status_code < 500 and answer.json()["message"]
        assert "Ack.channel" in answer.json()["message"]
        assert not [v for v in ("FAX", "s-fax", "m-fax", "a-fax") if v in answer.text]
    receipt = SIGNER.sign(AckToken("RECEIPT", "s-fax", "m-fax", "a-fax", "FAX"))
    answer = gw.request("POST", "/callbacks/sms", content=_vendor_body("sms", [receipt]))
    assert 400 <= answer.status_code < 500 and answer.json()["message"]
    after = SIGNER.sign(AckToken("READ", "s-after-fax", "m-fax", "a-fax", "SMS"))
    assert gw.request("POST", f"/read/{after}").status_code == 200
    with Tap(settings_, "push.acks") as tap:
        acks = tap.wait_for(lambda rs: any(a["send_id"] == "s-after-fax" for a in rs), 60)
    assert [a["send_id"] for a in acks if a["message_id"] == "m-fax"] == ["s-after-fax"]

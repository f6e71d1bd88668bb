"""Every provider adapter against the provider simulator over real HTTP: request shape, error
mapping, token refresh, and the receipt callbacks and read links of the simulated population."""

from __future__ import annotations

import asyncio
import base64
import json
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import httpx
import jwt
import pytest

from connectors.adapters import ADAPTERS, Accepted, Delivery, ProviderConfig, ProviderError
from connectors.adapters.registry import Registry
from connectors.serving import free_port
from connectors.simulator import Simulator, SimulatorSettings, SimulatorThread
from connectors.simulator.journal import Recorded

ADDRESSES = {"wechat": "oOpenId0001", "sms": "+8613800000001", "email": "ann@example.com"}
TARGETS = {"fcm": "FCM", "apns": "APNS", "huawei": "HUAWEI", "xiaomi": "XIAOMI", "oppo": "OPPO",
           "vivo": "VIVO", "jpush": "JPUSH", "getui": "GETUI", "wechat": "WECHAT", "sms": "SMS",
           "email": "EMAIL"}
# the code a rejected send gets by default, and (code, Retry-After seconds) of throttling
PERMANENT = {"fcm": "UNREGISTERED", "apns": "BadDeviceToken", "huawei": "80300007",
             "xiaomi": "20301", "oppo": "10000", "vivo": "10302", "jpush": "1011",
             "getui": "20001", "wechat": "43004", "sms": "isv.MOBILE_NUMBER_ILLEGAL",
             "email": "HTTP_400"}
THROTTLE = {"fcm": ("QUOTA_EXCEEDED", 7.0), "apns": ("TooManyRequests", 7.0),
            "huawei": ("80600003", 7.0), "xiaomi": ("200001", 7.0), "oppo": ("-2", 7.0),
            "vivo": ("10070", 7.0), "jpush": ("2002", 7.0), "getui": ("10005", 7.0),
            "wechat": ("45009", 60.0), "sms": ("isv.BUSINESS_LIMIT_CONTROL", 60.0),
            "email": ("429", 7.0)}
TOKEN_VENDORS = ("fcm", "huawei", "oppo", "vivo", "getui", "wechat")


@dataclass
class Capture:
    """A loopback HTTP server standing in for the ack gateway: it records what reaches it."""

    url: str
    posts: list[tuple[str, dict[str, str], bytes]]
    gets: list[str]


@pytest.fixture(scope="module")
def gateway() -> Iterator[Capture]:
    """A real HTTP server recording receipt callbacks (POST) and opened read links (GET)."""
    posts: list[tuple[str, dict[str, str], bytes]] = []
    gets: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802  (http.server's naming)
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            posts.append((self.path, dict(self.headers.items()), body))
            self.send_response(202)
            self.end_headers()

        def do_GET(self) -> None:  # noqa: N802
            gets.append(self.path)
            self.send_response(302)
            self.send_header("Location", "https://example.com/")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield Capture(f"http://127.0.0.1:{server.server_address[1]}", posts, gets)
    server.shutdown()


@pytest.fixture(scope="module")
def simulator(gateway: Capture) -> Iterator[SimulatorThread]:
    """The provider simulator on a free loopback port, every receipt and read certain."""
    sim = Simulator(SimulatorSettings(port=0, seed=7, gateway_url=gateway.url))
    sim.set_population({"receipt": {"*": 1.0}, "read": {"*": 1.0},
                        "receipt_delay_ms": [1, 5], "read_delay_ms": [1, 5]})
    with SimulatorThread(sim) as running:
        yield running


@pytest.fixture
def sim(simulator: SimulatorThread) -> Iterator[SimulatorThread]:
    """The shared simulator, with every behaviour reset after the test."""
    yield simulator
    simulator.sim.behaviours.clear()


def delivery(name: str, gateway: Capture, read_action: str = "BUTTON") -> Delivery:
    """A fresh send for the adapter called name, with a unique send_id and tokens."""
    send_id = f"s-{uuid.uuid4().hex[:12]}"
    target = TARGETS[name]
    app = name not in ADDRESSES
    send = {"send_id": send_id, "message_id": "m-1", "account_id": "acct-1",
            "channel": "APP" if app else target, "device_id": "dev-1" if app else None,
            "route": target if app else None, "reason": "PRIMARY", "attempt": 0,
            "importance": "HIGH", "title": "Parcel", "body": "Your parcel is at the door",
            "read_action": read_action, "link": None, "sent_at": 0}
    return Delivery(send=send, address=ADDRESSES.get(name, f"token-{name}-1"),
                    read_url=f"{gateway.url}/r/{send_id}?t=sig",
                    receipt_token=f"rt.{send_id}.sig")


def run(sim: SimulatorThread, body: Callable[[Registry, httpx.AsyncClient], Awaitable[Any]],
        timeout: float = 10.0) -> Any:
    """Run body(registry, client) on a fresh loop with adapters pointed at the simulator."""

    async def main() -> Any:
        registry = Registry(ProviderConfig(simulator_url=sim.url, timeout=timeout))
        async with registry.client() as http:
            try:
                return await body(registry, http)
            finally:
                await registry.aclose()

    return asyncio.run(main())


def send(sim: SimulatorThread, name: str, item: Delivery,
         timeout: float = 10.0) -> Accepted | ProviderError:
    """Send item through the adapter called name; the ProviderError is returned, not raised."""

    async def body(registry: Registry, http: httpx.AsyncClient) -> Accepted | ProviderError:
        try:
            return await registry.adapter(name).send(http, item)
        except ProviderError as exc:
            return exc

    return run(sim, body, timeout)


def control(sim: SimulatorThread, method: str, path: str, payload: Any = None) -> httpx.Response:
    """Call the simulator's control API."""
    return httpx.request(method, f"{sim.url}/_control/{path}", json=payload, timeout=10)


def wait_for(condition: Callable[[], Any], timeout: float = 20.0) -> Any:
    """Poll condition until it returns something truthy, or fail after timeout."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = condition()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError("condition not met in time")


def last_request(sim: SimulatorThread, name: str, send_id: str) -> Recorded:
    """The journal's last request to vendor name that carried send_id."""
    needle = send_id.encode()
    for rec in reversed(sim.sim.journal):
        if rec.path.startswith(f"/{name}/") and (needle in rec.body or
                                                  needle in rec.body.replace(b"%2D", b"-")):
            return rec
    raise AssertionError(f"no {name} request carried {send_id}")


# ---- request shape, per vendor ----------------------------------------------------------------


def _form(rec: Recorded) -> dict[str, str]:
    return {k: v[-1] for k, v in parse_qs(rec.body.decode(), keep_blank_values=True).items()}


def check_fcm(rec: Recorded, d: Delivery) -> None:
    assert rec.path == "/fcm/v1/projects/pushcascade-dev/messages:send"
    assert rec.headers["authorization"].startswith("Bearer ")
    message = json.loads(rec.body)["message"]
    assert message["token"] == d.address
    assert message["data"]["read_url"] == d.read_url
    assert message["data"]["receipt_token"] == d.receipt_token
    assert message["notification"]["title"] == "Parcel"
    if d.is_link:
        assert message["webpush"]["fcm_options"]["link"] == d.read_url


def check_apns(rec: Recorded, d: Delivery) -> None:
    assert rec.path == f"/apns/3/device/{d.address}"
    assert rec.http_version == "2"
    assert rec.headers["apns-topic"] == "com.example.pushcascade"
    assert rec.headers["apns-push-type"] == "alert"
    assert rec.headers["apns-priority"] == "10"
    assert uuid.UUID(rec.headers["apns-id"])
    token = rec.headers["authorization"].removeprefix("bearer ")
    assert jwt.get_unverified_header(token) == {"alg": "ES256", "kid": "DEVKEY0001",
                                                "typ": "JWT"}
    body = json.loads(rec.body)
    assert body["aps"]["alert"] == {"title": "Parcel", "body": "Your parcel is at the door"}
    assert body["pushcascade"]["receipt_token"] == d.receipt_token
    assert body["pushcascade"]["read_url"] == d.read_url
    assert body.get("url") == (d.read_url if d.is_link else None)


def check_huawei(rec: Recorded, d: Delivery) -> None:
    assert rec.path == "/huawei/v1/10000001/messages:send"
    assert rec.headers["authorization"].startswith("Bearer ")
    message = json.loads(rec.body)["message"]
    assert message["token"] == [d.address]
    assert message["android"]["bi_tag"] == d.receipt_token
    assert json.loads(message["data"])["read_url"] == d.read_url
    click = message["android"]["notification"]["click_action"]
    assert click == ({"type": 2, "url": d.read_url} if d.is_link else {"type": 3})


def check_xiaomi(rec: Recorded, d: Delivery) -> None:
    assert rec.path == "/xiaomi/v3/message/regid"
    assert rec.headers["authorization"] == "key=xiaomi-dev-secret"
    form = _form(rec)
    assert form["registration_id"] == d.address
    assert form["restricted_package_name"] == "com.example.pushcascade"
    assert form["extra.callback.param"] == d.receipt_token
    assert json.loads(form["payload"])["read_url"] == d.read_url
    assert form.get("extra.web_uri") == (d.read_url if d.is_link else None)


def check_oppo(rec: Recorded, d: Delivery) -> None:
    assert rec.path == "/oppo/server/v1/message/notification/unicast"
    assert rec.headers["auth_token"]
    message = json.loads(_form(rec)["message"])
    assert message["target_type"] == 2 and message["target_value"] == d.address
    note = message["notification"]
    assert note["call_back_parameter"] == d.receipt_token
    assert json.loads(note["action_parameters"])["read_url"] == d.read_url
    assert note["click_action_type"] == (2 if d.is_link else 0)
    assert note.get("click_action_url") == (d.read_url if d.is_link else None)


def check_vivo(rec: Recorded, d: Delivery) -> None:
    assert rec.path == "/vivo/message/send"
    assert rec.headers["authtoken"]
    body = json.loads(rec.body)
    assert body["regId"] == d.address and body["requestId"] == d.send_id
    assert body["extra"]["callback.param"] == d.receipt_token
    assert body["clientCustomMap"]["read_url"] == d.read_url
    assert (body["skipType"], body["skipContent"]) == ((2, d.read_url) if d.is_link else (1, ""))


def check_jpush(rec: Recorded, d: Delivery) -> None:
    assert rec.path == "/jpush/v3/push"
    expected = base64.b64encode(b"jpush-dev-key:jpush-dev-master-secret").decode()
    assert rec.headers["authorization"] == f"Basic {expected}"
    body = json.loads(rec.body)
    assert body["audience"] == {"registration_id": [d.address]}
    assert body["callback"]["params"]["receipt_token"] == d.receipt_token
    assert body["notification"]["android"]["extras"]["read_url"] == d.read_url
    intent = body["notification"]["android"].get("intent")
    assert intent == ({"url": d.read_url} if d.is_link else None)


def check_getui(rec: Recorded, d: Delivery) -> None:
    assert rec.path == "/getui/v2/getui-dev-app/push/single/cid"
    assert rec.headers["token"]
    body = json.loads(rec.body)
    assert len(body["request_id"]) == 32
    assert body["audience"] == {"cid": [d.address]}
    note = body["push_message"]["notification"]
    assert json.loads(note["payload"])["receipt_token"] == d.receipt_token
    assert (note["click_type"], note.get("url")) == (
        ("url", d.read_url) if d.is_link else ("payload", None))


def check_wechat(rec: Recorded, d: Delivery) -> None:
    assert rec.path == "/wechat/cgi-bin/message/template/send"
    assert parse_qs(rec.query)["access_token"]
    body = json.loads(rec.body)
    assert body["touser"] == d.address and body["template_id"] == "pushcascade-notice"
    assert body["url"] == d.read_url and body["client_msg_id"] == d.send_id


def check_sms(rec: Recorded, d: Delivery) -> None:
    assert rec.path == "/sms/"
    form = _form(rec)
    assert (form["Action"], form["Version"], form["SignatureMethod"]) == (
        "SendSms", "2017-05-25", "HMAC-SHA1")
    assert form["PhoneNumbers"] == d.address and form["OutId"] == d.receipt_token
    assert json.loads(form["TemplateParam"])["link"] == d.read_url
    assert form["Signature"]


def check_email(rec: Recorded, d: Delivery) -> None:
    assert rec.path == "/email/v3/mail/send"
    assert rec.headers["authorization"] == "Bearer SG.dev-key"
    body = json.loads(rec.body)
    person = body["personalizations"][0]
    assert person["to"] == [{"email": d.address}]
    assert person["custom_args"] == {"send_id": d.send_id, "receipt_token": d.receipt_token}
    assert d.read_url in body["content"][0]["value"]


CHECKS: dict[str, Callable[[Recorded, Delivery], None]] = {
    "fcm": check_fcm, "apns": check_apns, "huawei": check_huawei, "xiaomi": check_xiaomi,
    "oppo": check_oppo, "vivo": check_vivo, "jpush": check_jpush, "getui": check_getui,
    "wechat": check_wechat, "sms": check_sms, "email": check_email}


def test_every_adapter_has_a_shape_check() -> None:
    assert set(CHECKS) == set(ADAPTERS) == set(TARGETS)


@pytest.mark.parametrize("read_action", ["BUTTON", "LINK"])
@pytest.mark.parametrize("name", sorted(ADAPTERS))
def test_an_accepted_send_has_the_vendors_request_shape(sim: SimulatorThread, gateway: Capture,
                                                         name: str, read_action: str) -> None:
    item = delivery(name, gateway, read_action)
    result = send(sim, name, item)
    assert isinstance(result, Accepted), result
    assert result.provider_message_id
    CHECKS[name](last_request(sim, name, item.send_id), item)
    assert sim.sim.seen[item.send_id] == 1 and sim.sim.accepted[item.send_id] == 1


@pytest.mark.parametrize("name", sorted(ADAPTERS))
def test_a_rejected_send_is_permanent_with_the_vendors_code(sim: SimulatorThread,
                                                            gateway: Capture, name: str) -> None:
    assert control(sim, "PUT", f"routes/{TARGETS[name]}", {"accept": 0}).status_code == 200
    result = send(sim, name, delivery(name, gateway))
    assert isinstance(result, ProviderError)
    assert (result.code, result.retryable) == (PERMANENT[name], False)


@pytest.mark.parametrize("name", sorted(ADAPTERS))
def test_a_throttled_send_is_retryable_after_the_vendors_wait(sim: SimulatorThread,
                                                              gateway: Capture,
                                                              name: str) -> None:
    code, wait = THROTTLE[name]
    control(sim, "PUT", f"channels/{TARGETS[name]}",
            {"accept": 0, "error": code, "retry_after": 7})
    result = send(sim, name, delivery(name, gateway))
    assert isinstance(result, ProviderError)
    assert result.retryable
    assert result.code == (f"HTTP_{code}" if name == "email" else code)
    assert result.retry_after is not None
    assert wait - 1.5 <= result.retry_after <= wait


@pytest.mark.parametrize("name", sorted(ADAPTERS))
def test_an_outage_is_retryable(sim: SimulatorThread, gateway: Capture, name: str) -> None:
    control(sim, "PUT", f"routes/{TARGETS[name]}", {"outage_s": 60, "retry_after": 3})
    result = send(sim, name, delivery(name, gateway))
    assert isinstance(result, ProviderError) and result.retryable, result
    control(sim, "PUT", f"routes/{TARGETS[name]}", {"outage_s": None})
    assert isinstance(send(sim, name, delivery(name, gateway)), Accepted)


@pytest.mark.parametrize("name", ["huawei", "apns", "sms"])
def test_a_provider_slower_than_the_timeout_is_a_retryable_timeout(sim: SimulatorThread,
                                                                   gateway: Capture,
                                                                   name: str) -> None:
    control(sim, "PUT", f"routes/{TARGETS[name]}", {"latency_ms": 1500})
    result = send(sim, name, delivery(name, gateway), timeout=0.3)
    assert isinstance(result, ProviderError)
    assert (result.code, result.retryable) == ("TIMEOUT", True)


@pytest.mark.parametrize("name", sorted(TOKEN_VENDORS))
def test_an_expired_access_token_is_refreshed_once_and_the_send_goes_through(
        sim: SimulatorThread, gateway: Capture, name: str) -> None:
    first, second = delivery(name, gateway), delivery(name, gateway)

    async def body(registry: Registry, http: httpx.AsyncClient) -> tuple[Accepted, Accepted]:
        adapter = registry.adapter(name)
        one = await adapter.send(http, first)
        await http.post(f"{sim.url}/_control/tokens/expire")
        return one, await adapter.send(http, second)

    issued = sim.sim.stats[f"tokens_issued.{name}"]
    one, two = run(sim, body)
    assert isinstance(one, Accepted) and isinstance(two, Accepted)
    assert sim.sim.stats[f"tokens_issued.{name}"] == issued + 2  # the first, and one refresh
    carried = [r for r in sim.sim.journal if r.path.startswith(f"/{name}/")
               and second.send_id.encode() in r.body.replace(b"%2D", b"-")]
    assert len(carried) == 2  # refused once with the old token, then accepted
    assert sim.sim.accepted[second.send_id] == 1


def test_an_expired_apns_provider_token_is_signed_anew(sim: SimulatorThread,
                                                       gateway: Capture) -> None:
    first, second = delivery("apns", gateway), delivery("apns", gateway)

    async def body(registry: Registry, http: httpx.AsyncClient) -> list[str]:
        adapter = registry.adapter("apns")
        await adapter.send(http, first)
        await http.post(f"{sim.url}/_control/tokens/expire")
        await adapter.send(http, second)
        return [r.headers["authorization"] for r in sim.sim.journal
                if r.path.startswith("/apns/") and second.send_id.encode() in r.body]

    tokens = run(sim, body)
    assert len(tokens) == 2 and tokens[0] != tokens[1]


@pytest.mark.parametrize("name", ["huawei", "wechat", "oppo"])
def test_wrong_credentials_are_a_permanent_auth_error(sim: SimulatorThread, gateway: Capture,
                                                      monkeypatch: pytest.MonkeyPatch,
                                                      name: str) -> None:
    secret = {"huawei": "CLIENT_SECRET", "wechat": "APP_SECRET", "oppo": "MASTER_SECRET"}[name]
    monkeypatch.setenv(f"PUSHCASCADE_PROVIDER_{name.upper()}_{secret}", "wrong")
    result = send(sim, name, delivery(name, gateway))
    assert isinstance(result, ProviderError)
    assert result.code.startswith("AUTH_") and not result.retryable


@pytest.mark.parametrize("name", sorted(ADAPTERS))
def test_the_population_posts_the_vendors_receipt_and_opens_the_read_link(
        sim: SimulatorThread, gateway: Capture, name: str) -> None:
    item = delivery(name, gateway)
    assert isinstance(send(sim, name, item), Accepted)
    adapter = Registry(ProviderConfig(simulator_url=sim.url)).adapter(name)

    def callback() -> tuple[str, dict[str, str], bytes] | None:
        for path, headers, body in list(gateway.posts):
            if path == f"/callbacks/{name}" and (item.receipt_token.encode() in body
                                                 or name == "wechat" and item.address.encode()
                                                 in body):
                return path, headers, body
        return None

    _, headers, body = wait_for(callback)
    lowered = {k.lower(): v for k, v in headers.items()}
    expected = [] if name == "wechat" else [item.receipt_token]  # WeChat echoes only its MsgID
    assert adapter.receipts(lowered, body) == expected
    wait_for(lambda: any(path.startswith(f"/r/{item.send_id}") for path in gateway.gets))
    wait_for(lambda: any(path.startswith(f"/r/{item.send_id}") for path, _, _ in gateway.posts))


def test_a_configured_callback_url_in_the_request_is_where_the_receipt_goes(
        sim: SimulatorThread, gateway: Capture, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PUSHCASCADE_PROVIDER_VIVO_CALLBACK_URL", f"{gateway.url}/vivo-receipts")
    item = delivery("vivo", gateway)
    assert isinstance(send(sim, "vivo", item), Accepted)
    wait_for(lambda: any(p == "/vivo-receipts" and item.receipt_token.encode() in b
                         for p, _, b in list(gateway.posts)))


def test_the_control_api_counts_each_send_id_and_rejects_bad_behaviours(
        sim: SimulatorThread, gateway: Capture) -> None:
    items = [delivery("huawei", gateway) for _ in range(3)]
    for item in items:
        assert isinstance(send(sim, "huawei", item), Accepted)
    send(sim, "huawei", items[0])  # a repeat
    seen = control(sim, "GET", "sends").json()["seen"]
    assert [seen[i.send_id] for i in items] == [2, 1, 1]
    bad = control(sim, "PUT", "routes/HUAWEI", {"accept": 2})
    assert bad.status_code == 400 and "accept" in bad.json()["error"]
    assert control(sim, "PUT", "routes/HUAWEI", {"colour": "red"}).status_code == 400
    assert control(sim, "PUT", "population", {"read": {"SMS": 1.5}}).status_code == 400


def test_with_the_same_seed_two_simulators_accept_the_same_sends(gateway: Capture) -> None:
    items = [delivery("xiaomi", gateway) for _ in range(30)]

    def outcomes() -> list[bool]:
        sim = Simulator(SimulatorSettings(port=0, seed=11))
        sim.set_behaviour("XIAOMI", {"accept": 0.5})
        with SimulatorThread(sim) as running:
            return [isinstance(send(running, "xiaomi", item), Accepted) for item in items]

    first = outcomes()
    assert first == outcomes()
    assert 0 < sum(first) < len(first)


def test_the_cli_serves_the_simulator_with_its_files() -> None:
    examples = Path(__file__).resolve().parents[2] / "deploy" / "simulator"
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "streams.cli", "simulate-providers", "--port", str(port),
         "--population", str(examples / "population.example.yaml"),
         "--behaviours", str(examples / "behaviours.example.yaml")],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        def state() -> Any:
            try:
                return httpx.get(f"http://127.0.0.1:{port}/_control/state", timeout=2).json()
            except httpx.HTTPError:
                assert process.poll() is None, process.stderr.read() if process.stderr else ""
                return None

        current = wait_for(state, timeout=60)
        assert current["seed"] == 42
        assert current["behaviours"]["HUAWEI"]["accept"] == 0.9
        assert current["population"]["devices"]["dev-1"]["receipt"] == {"HUAWEI": 0.1,
                                                                          "XIAOMI": 0.95}
    finally:
        process.terminate()
        process.wait(10)


def test_the_cli_refuses_a_bad_population_file(tmp_path: Path) -> None:
    bad = tmp_path / "population.yaml"
    bad.write_text("read: {SMS: 2}\n")
    result = subprocess.run([sys.executable, "-m", "streams.cli", "simulate-providers",
                             "--population", str(bad)], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode != 0 and "read.SMS" in result.stderr

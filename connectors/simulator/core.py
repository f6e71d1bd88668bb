"""The simulator's state: behaviours, access tokens, sends seen, and the population's actions."""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from connectors.adapters.config import ProviderConfig, dev_key
from connectors.adapters.transport import AiohttpTransport, Client
from connectors.simulator.behaviour import Behaviour, Population, Verdict, decide
from connectors.simulator.journal import Recorded

log = logging.getLogger("pushcascade.simulator")

# (content type, body) of one receipt callback in a vendor's format, from (arrival, message id)
ReceiptBody = Callable[["Arrival", str], tuple[str, bytes]]


class SimulatorSettings(BaseSettings):
    """Simulator options, prefixed PUSHCASCADE_SIMULATOR_."""

    model_config = SettingsConfigDict(env_prefix="PUSHCASCADE_SIMULATOR_", extra="ignore")
    host: str = Field("127.0.0.1", description="listen address (loopback)")
    port: int = Field(8790, ge=0, description="listen port")
    seed: int = Field(0, description="seed of every random choice (same seed, same answers)")
    gateway_url: str = Field("", description="ack gateway base; receipts go to /callbacks/{vendor}")
    population: str = Field("", description="population file (JSON or YAML); empty = defaults")
    behaviours: str = Field("", description="file mapping route/channel to behaviour (JSON/YAML)")
    token_lifetime: float = Field(3600.0, gt=0, description="lifetime of issued access tokens")
    log_errors: bool = Field(False, description="log the server's errors to stderr")
    fcm_public_key: str = Field("", description="service account's public key PEM; empty: dev key")
    apns_public_key: str = Field("", description="APNs auth key's public PEM; empty: dev key")

    def public_key(self, vendor: str) -> str:
        """The public key the simulator verifies the vendor's JWTs with."""
        own = str(getattr(self, f"{vendor}_public_key"))
        name = {"fcm": "fcm_service_account.pub.pem", "apns": "apns_auth_key.pub.pem"}[vendor]
        return own or dev_key(name)


def load_document(path: str) -> Any:
    """Read a JSON or YAML file (by suffix; YAML is a superset, so anything else parses too)."""
    text = Path(path).read_text()
    return json.loads(text) if path.endswith(".json") else yaml.safe_load(text)


@dataclass(frozen=True)
class Arrival:
    """What a vendor endpoint read from one send request."""

    vendor: str  # adapter name: "huawei", "sms", ...
    target: str  # route (APP) or channel the behaviour is looked up by: HUAWEI, SMS, ...
    channel: str  # APP, WECHAT, SMS or EMAIL
    send_id: str
    address: str
    receipt_token: str
    read_url: str
    account_id: str | None = None
    device_id: str | None = None
    callback_url: str | None = None  # where the request asked receipts to go, when it says


class Simulator:
    """Shared state behind every vendor endpoint and the control API."""

    def __init__(self, settings: SimulatorSettings | None = None,
                 providers: ProviderConfig | None = None) -> None:
        self.settings = settings or SimulatorSettings(**{})
        self.providers = providers or ProviderConfig.from_env()
        self.seed = self.settings.seed
        self.behaviours: dict[str, Behaviour] = {}
        self.population = Population()
        self.seen: Counter[str] = Counter()  # send_id -> requests that carried it
        self.accepted: Counter[str] = Counter()  # send_id -> requests accepted
        self.stats: Counter[str] = Counter()
        self._tokens: dict[str, dict[str, float]] = {}
        self._self_signed: set[str] = set()
        self._revoked: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._counter = 0
        # idempotency key -> (expiry, verdict, message id): vendors that de-duplicate on a key
        self._keyed: dict[str, tuple[float, Verdict, str]] = {}
        self.http: httpx.AsyncClient | None = None
        self.journal: deque[Recorded] = deque(maxlen=1000)  # last vendor requests (tests)
        if self.settings.population:
            self.set_population(load_document(self.settings.population))
        if self.settings.behaviours:
            document = load_document(self.settings.behaviours) or {}
            if not isinstance(document, dict):
                raise ValueError("behaviours file must map route/channel names to objects")
            for target, changes in document.items():
                self.set_behaviour(str(target), changes)

    # ---- configuration at run time ------------------------------------------------------

    def behaviour(self, target: str) -> Behaviour:
        """The behaviour configured for a route or channel (default: accept everything)."""
        return self.behaviours.get(target.upper(), Behaviour())

    def set_behaviour(self, target: str, changes: dict[str, Any]) -> Behaviour:
        """Update a route's or channel's behaviour; ValueError on bad fields."""
        if not isinstance(changes, dict):
            raise ValueError("a behaviour is an object")
        new = self.behaviour(target).updated(changes, time.time())
        self.behaviours[target.upper()] = new
        return new

    def set_population(self, document: Any) -> None:
        """Replace the population (and the seed when the document has one)."""
        self.population = Population.from_dict(document or {})
        if isinstance(document, dict) and "seed" in document:
            self.seed = int(document["seed"])

    # ---- access tokens ------------------------------------------------------------------

    def issue_token(self, vendor: str) -> tuple[str, float]:
        """A new access token for vendor and its lifetime in seconds."""
        token = secrets.token_urlsafe(24)
        lifetime = self.settings.token_lifetime
        self._tokens.setdefault(vendor, {})[token] = time.time() + lifetime
        self.stats[f"tokens_issued.{vendor}"] += 1
        return token, lifetime

    def token_ok(self, vendor: str, token: str | None) -> bool:
        """True when token was issued for vendor and has not expired."""
        expires = self._tokens.get(vendor, {}).get(token or "")
        return expires is not None and time.time() < expires

    def token_revoked(self, vendor: str, token: str) -> bool:
        """For self-signed provider tokens (APNs): True once expire_tokens() ran after first use."""
        if token in self._revoked:
            return True
        self._self_signed.add(token)
        return False

    def expire_tokens(self) -> None:
        """Invalidate every issued access token and every provider token used so far."""
        self._tokens.clear()
        self._revoked |= self._self_signed
        self._self_signed.clear()

    # ---- sends --------------------------------------------------------------------------

    async def admit(self, arrival: Arrival, receipt_body: ReceiptBody | None,
                    key: str | None = None, window: float = 600.0) -> tuple[Verdict, str]:
        """Count the send, wait its latency, decide; on accept, schedule receipt and read.

        With an idempotency key (WeChat's client_msg_id, GeTui's request_id), a repeat of an
        accepted key within `window` seconds gets the first answer again and is not delivered
        a second time, as those vendors do."""
        self.seen[arrival.send_id] += 1
        now = time.time()
        if key is not None:
            known = self._keyed.get(key)
            if known is not None and now < known[0]:
                self.stats[f"deduplicated.{arrival.target}"] += 1
                return known[1], known[2]
        behaviour = self.behaviour(arrival.target)
        if behaviour.latency_ms:
            await asyncio.sleep(behaviour.latency_ms / 1000.0)
        verdict = decide(behaviour, self.seed, arrival.target, arrival.send_id,
                         self.seen[arrival.send_id], time.time())
        self.stats[f"{verdict.outcome}.{arrival.target}"] += 1
        if verdict.outcome != "accept":
            return verdict, ""
        self.accepted[arrival.send_id] += 1
        self._counter += 1
        message_id = f"{arrival.vendor}-{self._counter:08d}"
        if key is not None:
            self._keyed[key] = (now + window, verdict, message_id)
        reaction = self.population.react(self.seed, arrival.send_id, arrival.target,
                                         arrival.channel, arrival.account_id, arrival.device_id,
                                         arrival.address)
        if reaction.receipt_after is not None and receipt_body is not None:
            self._later(reaction.receipt_after,
                        lambda: self._post_receipt(arrival, message_id, receipt_body))
        if reaction.read_after is not None:
            self._later(reaction.read_after, lambda: self._open_read(arrival))
        return verdict, message_id

    def _later(self, delay: float, action: Callable[[], Awaitable[None]]) -> None:
        async def run() -> None:
            await asyncio.sleep(delay)
            await action()

        task = asyncio.get_running_loop().create_task(run())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _client(self) -> httpx.AsyncClient:
        if self.http is None:  # aiohttp's pool: httpx's own ran out under load (PoolTimeout)
            self.http = Client(timeout=10.0, transport=AiohttpTransport(500))
        return self.http

    async def _post_receipt(self, arrival: Arrival, message_id: str,
                            receipt_body: ReceiptBody) -> None:
        gateway = self.settings.gateway_url.rstrip("/")
        url = arrival.callback_url or (f"{gateway}/callbacks/{arrival.vendor}" if gateway else "")
        if not url:
            self.stats["receipts_unsent"] += 1
            return
        content_type, body = receipt_body(arrival, message_id)
        try:
            response = await self._client().post(url, content=body,
                                                 headers={"Content-Type": content_type})
            ok = response.status_code < 300
        except httpx.HTTPError as exc:
            log.warning("receipt callback to %s failed: %s", url, type(exc).__name__)
            ok = False
        self.stats["receipts_posted" if ok else "receipts_failed"] += 1

    async def _open_read(self, arrival: Arrival) -> None:
        if not arrival.read_url:
            return
        try:
            page = await self._client().get(arrival.read_url, follow_redirects=False)
            ok = page.status_code < 400
            if ok:  # the person taps the page's button: a POST to the same address
                response = await self._client().post(arrival.read_url, follow_redirects=False)
                ok = response.status_code < 400
        except httpx.HTTPError as exc:
            log.warning("opening a read link failed: %s", type(exc).__name__)
            ok = False
        self.stats["reads_opened" if ok else "reads_failed"] += 1

    async def idle(self) -> None:
        """Wait until every scheduled receipt and read has been carried out."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def aclose(self) -> None:
        """Cancel pending actions and close the callback client."""
        for task in list(self._tasks):
            task.cancel()
        if self.http is not None:
            await self.http.aclose()
            self.http = None

    def snapshot(self) -> dict[str, Any]:
        """The control API's view of the sends seen (counts per send_id) and statistics."""
        return {"seen": dict(self.seen), "accepted": dict(self.accepted),
                "total_seen": sum(self.seen.values()), "stats": dict(self.stats),
                "pending_actions": len(self._tasks)}

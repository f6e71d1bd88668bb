"""Apple Push Notification service: HTTP/2, ES256 provider token, /3/device/{token}."""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping
from typing import Any

import httpx
import jwt
from pydantic import SecretStr

from connectors.adapters.access import TokenCache, with_token
from connectors.adapters.base import Accepted, Delivery
from connectors.adapters.callbacks import app_receipts
from connectors.adapters.config import ApnsSettings, dev_key
from connectors.adapters.http import classify, request
from connectors.adapters.http2 import Http2Transport
from connectors.adapters.transport import Client

TOKEN_LIFETIME = 3000.0  # Apple accepts a provider token for an hour; renew after 50 minutes
REFRESH = frozenset({"ExpiredProviderToken"})
RETRYABLE = frozenset({"TooManyRequests", "TooManyProviderTokenUpdates", "InternalServerError",
                       "ServiceUnavailable", "Shutdown"})
CATEGORIES = {"BUTTON": "PUSHCASCADE_READ", "REPLY": "PUSHCASCADE_REPLY",
              "LINK": "PUSHCASCADE_LINK"}


def provider_token(settings: ApnsSettings, private_key: str, now: float) -> str:
    """The ES256 JWT provider token (kid = key id, iss = team id)."""
    return jwt.encode({"iss": settings.team_id, "iat": int(now)}, private_key,
                      algorithm="ES256", headers={"kid": settings.key_id})


def apns_id(send_id: str) -> str:
    """The apns-id of a send: a UUID derived from send_id, so a repeat carries the same id."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"pushcascade:send:{send_id}"))


def headers_for(settings: ApnsSettings, delivery: Delivery, token: str) -> dict[str, str]:
    """The APNs request headers."""
    return {"authorization": f"bearer {token}", "apns-topic": settings.topic,
            "apns-push-type": "alert", "apns-id": apns_id(delivery.send_id),
            "apns-priority": "10" if delivery.urgent else "5", "apns-expiration": "0"}


def payload(delivery: Delivery) -> dict[str, Any]:
    """The aps dictionary plus the read action as custom keys (url for a LINK)."""
    body: dict[str, Any] = {
        "aps": {"alert": {"title": delivery.title, "body": delivery.body},
                "category": CATEGORIES.get(delivery.read_action, "PUSHCASCADE_READ"),
                "mutable-content": 1, "sound": "default"},
        "pushcascade": delivery.data(),
    }
    if delivery.is_link:
        body["url"] = delivery.read_url
    return body


def error_for(status: int, reason: str, headers: Mapping[str, str]) -> Exception:
    """Map an APNs reason: expired provider token refreshes; throttling and 5xx retry."""
    if reason and reason not in RETRYABLE:
        status = 400  # a named reason decides, whatever the HTTP status
    return classify(reason or f"HTTP_{status}", status, headers, refresh=REFRESH,
                    retryable=RETRYABLE)


class ApnsAdapter:
    """Adapter for the APNS route; it keeps its own HTTP/2 connection, as Apple requires."""

    name = "apns"

    def __init__(self, settings: ApnsSettings, base_url: str) -> None:
        self.settings = settings
        self.base_url = base_url
        pem = settings.private_key.get_secret_value() or dev_key("apns_auth_key.p8")
        self._key = SecretStr(pem)
        self.tokens = TokenCache(self._make_token, margin=0.0)
        self._client: httpx.AsyncClient | None = None

    def __repr__(self) -> str:
        return f"ApnsAdapter(base_url={self.base_url!r}, topic={self.settings.topic!r})"

    def new_token(self, now: float) -> str:
        """A provider token signed now (the adapter caches one for TOKEN_LIFETIME)."""
        return provider_token(self.settings, self._key.get_secret_value(), now)

    async def _make_token(self, http: httpx.AsyncClient) -> tuple[str, float]:
        return self.new_token(time.time()), TOKEN_LIFETIME

    def client(self, shared: httpx.AsyncClient) -> httpx.AsyncClient:
        """The adapter's HTTP/2 client (h2 prior knowledge on http://), built on first use."""
        if not self.settings.http2:
            return shared
        if self._client is None:
            self._client = Client(timeout=shared.timeout, transport=Http2Transport())
        return self._client

    async def send(self, http: httpx.AsyncClient, delivery: Delivery) -> Accepted:
        """POST /3/device/{token}; a new provider token once when APNs says it expired."""
        url = f"{self.base_url}/3/device/{delivery.address}"
        client = self.client(http)
        body = payload(delivery)

        async def call(token: str) -> Accepted:
            response = await request(client, "POST", url, json=body,
                                     headers=headers_for(self.settings, delivery, token))
            if response.status_code == 200:
                return Accepted(response.headers.get("apns-id", apns_id(delivery.send_id)))
            try:
                reason = str(response.json().get("reason", ""))
            except ValueError:
                reason = ""
            raise error_for(response.status_code, reason, response.headers)

        return await with_token(client, self.tokens, call)

    def receipts(self, headers: Mapping[str, str], body: bytes) -> list[str]:
        """Tokens in the app-reported receipt (APNs itself has no delivery callback)."""
        return app_receipts(body)

    async def aclose(self) -> None:
        """Close the HTTP/2 connection."""
        if self._client is not None:
            await self._client.aclose()
            self._client = None

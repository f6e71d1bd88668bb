"""GeTui REST API v2: token from sha256(appkey + timestamp + mastersecret), push/single/cid."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Mapping
from typing import Any

import httpx

from connectors.adapters.access import TokenCache, with_token
from connectors.adapters.base import Accepted, Delivery
from connectors.adapters.callbacks import app_receipts
from connectors.adapters.config import GetuiSettings
from connectors.adapters.http import auth_error, classify, json_body, request

TOKEN_INVALID = frozenset({"10001"})
RETRYABLE = frozenset({"10005", "20003", "-1"})  # frequency limit / busy / internal


def sign(app_key: str, timestamp: str, master_secret: str) -> str:
    """The auth request's signature: hex sha256 of app key, timestamp and master secret."""
    return hashlib.sha256(f"{app_key}{timestamp}{master_secret}".encode()).hexdigest()


def request_id(send_id: str) -> str:
    """GeTui's request_id (10-32 chars, unique per app) from send_id: a repeat is the same."""
    return hashlib.md5(send_id.encode(), usedforsecurity=False).hexdigest()


def push(delivery: Delivery) -> dict[str, Any]:
    """The single-cid push: LINK opens the tracked URL, other actions open the app with data."""
    note: dict[str, Any] = {"title": delivery.title, "body": delivery.body,
                            "payload": json.dumps(delivery.data(), sort_keys=True)}
    if delivery.is_link:
        note.update(click_type="url", url=delivery.read_url)
    else:
        note["click_type"] = "payload"
    return {"request_id": request_id(delivery.send_id),
            "settings": {"ttl": 86400000},
            "audience": {"cid": [delivery.address]},
            "push_message": {"notification": note}}


def error_for(status: int, body: Mapping[str, Any], headers: Mapping[str, str]) -> Exception:
    """Map a GeTui answer with a non-zero code."""
    return classify(str(body.get("code", f"HTTP_{status}")), status, headers,
                    message=str(body.get("msg", "")), refresh=TOKEN_INVALID, retryable=RETRYABLE)


class GetuiAdapter:
    """Adapter for the GETUI route (a third-party push provider)."""

    name = "getui"

    def __init__(self, settings: GetuiSettings, base_url: str) -> None:
        self.settings = settings
        self.base_url = f"{base_url}/v2/{settings.app_id}"
        self.tokens = TokenCache(self._fetch_token)

    def __repr__(self) -> str:
        return f"GetuiAdapter(base_url={self.base_url!r})"

    async def _fetch_token(self, http: httpx.AsyncClient) -> tuple[str, float]:
        s = self.settings
        stamp = str(int(time.time() * 1000))
        auth = {"sign": sign(s.app_key, stamp, s.master_secret.get_secret_value()),
                "timestamp": stamp, "appkey": s.app_key}
        response = await request(http, "POST", f"{self.base_url}/auth", json=auth,
                                 sends=False)
        body = json_body(response)
        data = body.get("data") or {}
        if body.get("code") != 0 or not data.get("token"):
            raise auth_error(body.get("code", response.status_code), response.status_code,
                             body.get("msg"))
        lifetime = float(data.get("expire_time", 0)) / 1000.0 - time.time()
        return str(data["token"]), lifetime if lifetime > 0 else 3600.0

    async def send(self, http: httpx.AsyncClient, delivery: Delivery) -> Accepted:
        """POST push/single/cid with the token header; a new token once when invalid."""
        payload = push(delivery)

        async def call(token: str) -> Accepted:
            response = await request(http, "POST", f"{self.base_url}/push/single/cid",
                                     json=payload, headers={"token": token})
            body = json_body(response)
            if response.status_code == 200 and body.get("code") == 0:
                tasks = body.get("data") or {}
                return Accepted(str(next(iter(tasks), payload["request_id"])))
            raise error_for(response.status_code, body, response.headers)

        return await with_token(http, self.tokens, call)

    def receipts(self, headers: Mapping[str, str], body: bytes) -> list[str]:
        """Tokens in the app-reported receipt (the GeTui SDK hands the app the payload)."""
        return app_receipts(body)

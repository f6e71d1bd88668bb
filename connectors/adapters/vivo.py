"""vivo push: authToken from md5(appId + appKey + timestamp + appSecret), POST /message/send."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Mapping
from typing import Any

import httpx

from connectors.adapters.access import TokenCache, with_token
from connectors.adapters.base import Accepted, Delivery
from connectors.adapters.callbacks import delivered_tokens, parse_json, values_of
from connectors.adapters.config import VivoSettings
from connectors.adapters.http import auth_error, classify, json_body, request

TOKEN_LIFETIME = 86400.0  # vivo's authToken is valid for 24 hours
TOKEN_INVALID = frozenset({"10000"})  # authentication failed: fetch a new authToken
RETRYABLE = frozenset({"10070", "10071", "-1"})  # daily quota / flow control / busy


def sign(app_id: str, app_key: str, timestamp: str, app_secret: str) -> str:
    """The auth request's signature: lower-case hex md5 of id, key, timestamp and secret."""
    text = f"{app_id}{app_key}{timestamp}{app_secret}".encode()
    return hashlib.md5(text, usedforsecurity=False).hexdigest()


def message(settings: VivoSettings, delivery: Delivery) -> dict[str, Any]:
    """The single-push body: skipType 2 opens the tracked URL for a LINK."""
    extra = {"callback.param": delivery.receipt_token}
    if settings.callback_url:
        extra["callback"] = settings.callback_url
    return {
        "regId": delivery.address,
        "notifyType": 4,
        "title": delivery.title,
        "content": delivery.body,
        "skipType": 2 if delivery.is_link else 1,
        "skipContent": delivery.read_url if delivery.is_link else "",
        "requestId": delivery.send_id,
        "classification": 1 if delivery.urgent else 0,
        "clientCustomMap": delivery.data(),
        "extra": extra,
    }


def error_for(status: int, body: Mapping[str, Any], headers: Mapping[str, str]) -> Exception:
    """Map a vivo answer with a non-zero result."""
    return classify(str(body.get("result", f"HTTP_{status}")), status, headers,
                    message=str(body.get("desc", "")), refresh=TOKEN_INVALID,
                    retryable=RETRYABLE)


class VivoAdapter:
    """Adapter for the VIVO route."""

    name = "vivo"

    def __init__(self, settings: VivoSettings, base_url: str) -> None:
        self.settings = settings
        self.base_url = base_url
        self.tokens = TokenCache(self._fetch_token)

    def __repr__(self) -> str:
        return f"VivoAdapter(base_url={self.base_url!r})"

    async def _fetch_token(self, http: httpx.AsyncClient) -> tuple[str, float]:
        s = self.settings
        stamp = str(int(time.time() * 1000))
        auth = {"appId": s.app_id, "appKey": s.app_key, "timestamp": stamp,
                "sign": sign(s.app_id, s.app_key, stamp, s.app_secret.get_secret_value())}
        response = await request(http, "POST", f"{self.base_url}/message/auth", json=auth,
                                 sends=False)
        body = json_body(response)
        if body.get("result") != 0 or not body.get("authToken"):
            raise auth_error(body.get("result", response.status_code), response.status_code,
                             body.get("desc"))
        return str(body["authToken"]), TOKEN_LIFETIME

    async def send(self, http: httpx.AsyncClient, delivery: Delivery) -> Accepted:
        """POST /message/send with the authToken header; a new token once when refused."""
        payload = message(self.settings, delivery)

        async def call(token: str) -> Accepted:
            response = await request(http, "POST", f"{self.base_url}/message/send",
                                     json=payload, headers={"authToken": token})
            body = json_body(response)
            if response.status_code == 200 and body.get("result") == 0:
                return Accepted(str(body.get("taskId", "")))
            raise error_for(response.status_code, body, response.headers)

        return await with_token(http, self.tokens, call)

    def receipts(self, headers: Mapping[str, str], body: bytes) -> list[str]:
        """callback.param of every task in a receipt callback {taskId: {"param": ...}}."""
        return delivered_tokens(values_of(parse_json(body), "body"), "body", "param")

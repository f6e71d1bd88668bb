"""OPPO push: auth_token from sha256(app_key + timestamp + master_secret), notification/unicast."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Mapping
from typing import Any

import httpx

from connectors.adapters.access import TokenCache, with_token
from connectors.adapters.base import Accepted, Delivery
from connectors.adapters.callbacks import delivered_tokens, parse_json
from connectors.adapters.config import OppoSettings
from connectors.adapters.http import auth_error, classify, json_body, request

TOKEN_LIFETIME = 86400.0  # OPPO's auth_token is valid for 24 hours
TOKEN_INVALID = frozenset({"11"})
RETRYABLE = frozenset({"-1", "-2", "33"})  # unavailable / flow control / daily quota
ARRIVED = "push_arrive"


def sign(app_key: str, timestamp: str, master_secret: str) -> str:
    """The auth request's signature: hex sha256 of app key, timestamp and master secret."""
    return hashlib.sha256(f"{app_key}{timestamp}{master_secret}".encode()).hexdigest()


def notification(settings: OppoSettings, delivery: Delivery) -> dict[str, Any]:
    """The unicast message: LINK opens the tracked URL (click_action_type 2)."""
    note: dict[str, Any] = {
        "title": delivery.title,
        "content": delivery.body,
        "click_action_type": 2 if delivery.is_link else 0,
        "action_parameters": json.dumps(delivery.data(), sort_keys=True),
        "call_back_parameter": delivery.receipt_token,
    }
    if delivery.is_link:
        note["click_action_url"] = delivery.read_url
    if settings.callback_url:
        note["call_back_url"] = settings.callback_url
    return {"target_type": 2, "target_value": delivery.address, "notification": note}


def error_for(status: int, body: Mapping[str, Any], headers: Mapping[str, str]) -> Exception:
    """Map an OPPO answer with a non-zero code."""
    return classify(str(body.get("code", f"HTTP_{status}")), status, headers,
                    message=str(body.get("message", "")), refresh=TOKEN_INVALID,
                    retryable=RETRYABLE)


class OppoAdapter:
    """Adapter for the OPPO route."""

    name = "oppo"

    def __init__(self, settings: OppoSettings, base_url: str) -> None:
        self.settings = settings
        self.base_url = base_url
        self.tokens = TokenCache(self._fetch_token)

    def __repr__(self) -> str:
        return f"OppoAdapter(base_url={self.base_url!r})"

    async def _fetch_token(self, http: httpx.AsyncClient) -> tuple[str, float]:
        stamp = str(int(time.time() * 1000))
        secret = self.settings.master_secret.get_secret_value()
        fields = {"app_key": self.settings.app_key, "timestamp": stamp,
                  "sign": sign(self.settings.app_key, stamp, secret)}
        response = await request(http, "POST", f"{self.base_url}/server/v1/auth", data=fields,
                                 sends=False)
        body = json_body(response)
        token = (body.get("data") or {}).get("auth_token") if body.get("code") == 0 else None
        if not token:
            raise auth_error(body.get("code", response.status_code), response.status_code,
                             body.get("message"))
        return str(token), TOKEN_LIFETIME

    async def send(self, http: httpx.AsyncClient, delivery: Delivery) -> Accepted:
        """POST the unicast form with the auth_token header; a new token once when invalid."""
        url = f"{self.base_url}/server/v1/message/notification/unicast"
        fields = {"message": json.dumps(notification(self.settings, delivery))}

        async def call(token: str) -> Accepted:
            response = await request(http, "POST", url, data=fields,
                                     headers={"auth_token": token})
            body = json_body(response)
            if response.status_code == 200 and body.get("code") == 0:
                return Accepted(str((body.get("data") or {}).get("messageId", "")))
            raise error_for(response.status_code, body, response.headers)

        return await with_token(http, self.tokens, call)

    def receipts(self, headers: Mapping[str, str], body: bytes) -> list[str]:
        """call_back_parameter of push_arrive events in a receipt callback (a JSON list)."""
        return delivered_tokens(parse_json(body), "body", "param",
                                lambda event: event.get("eventType") == ARRIVED)

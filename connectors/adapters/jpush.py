"""JPush REST API v3: POST /v3/push with HTTP basic auth; callback params carry the token."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import httpx

from connectors.adapters.base import Accepted, Delivery
from connectors.adapters.callbacks import delivered_tokens, parse_json
from connectors.adapters.config import JpushSettings
from connectors.adapters.http import classify, json_body, request, retry_after

RETRYABLE = frozenset({"1000", "2002", "2008"})  # internal error / rate limited / busy
DELIVERED = 1  # callback_type: delivered to the device


def push(settings: JpushSettings, delivery: Delivery) -> dict[str, Any]:
    """The push object: one registration id, extras with the read action, LINK as intent url."""
    extras = delivery.data()
    android: dict[str, Any] = {"alert": delivery.body, "title": delivery.title,
                               "extras": extras, "priority": 2 if delivery.urgent else 0}
    if delivery.is_link:
        android["intent"] = {"url": delivery.read_url}
    body: dict[str, Any] = {
        "platform": "all",
        "audience": {"registration_id": [delivery.address]},
        "notification": {"alert": delivery.body, "android": android,
                         "ios": {"alert": {"title": delivery.title, "body": delivery.body},
                                 "extras": extras}},
        "options": {"time_to_live": 86400},
        "callback": {"params": {"receipt_token": delivery.receipt_token}, "type": DELIVERED},
    }
    if settings.callback_url:
        body["callback"]["url"] = settings.callback_url
    return body


def error_for(status: int, body: Mapping[str, Any], headers: Mapping[str, str]) -> Exception:
    """Map a JPush error {"error": {"code", "message"}}: 429 waits X-Rate-Limit-Reset seconds."""
    found = body.get("error")
    error: Mapping[str, Any] = found if isinstance(found, Mapping) else {}
    reset = retry_after({"retry-after": headers.get("x-rate-limit-reset", "")})
    return classify(str(error.get("code", f"HTTP_{status}")), status, headers,
                    message=str(error.get("message", "")), retryable=RETRYABLE, wait=reset)


class JpushAdapter:
    """Adapter for the JPUSH route (a third-party push provider)."""

    name = "jpush"

    def __init__(self, settings: JpushSettings, base_url: str) -> None:
        self.settings = settings
        self.base_url = base_url

    def __repr__(self) -> str:
        return f"JpushAdapter(base_url={self.base_url!r})"

    async def send(self, http: httpx.AsyncClient, delivery: Delivery) -> Accepted:
        """POST /v3/push with basic auth (app key, master secret)."""
        auth = (self.settings.app_key, self.settings.master_secret.get_secret_value())
        response = await request(http, "POST", f"{self.base_url}/v3/push",
                                 json=push(self.settings, delivery), auth=auth)
        body = json_body(response)
        if response.status_code == 200 and body.get("msg_id"):
            return Accepted(str(body["msg_id"]))
        raise error_for(response.status_code, body, response.headers)

    def receipts(self, headers: Mapping[str, str], body: bytes) -> list[str]:
        """params.receipt_token of delivered events in a callback (one event or a list)."""
        data = parse_json(body)
        return delivered_tokens(data if isinstance(data, list) else [data], "events",
                                "params.receipt_token",
                                lambda event: event.get("callback_type") == DELIVERED)

"""Xiaomi Mi Push: POST /v3/message/regid (form), Authorization: key=<AppSecret>, callback.param."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qs

import httpx

from connectors.adapters.base import Accepted, Delivery
from connectors.adapters.callbacks import delivered_tokens, parse_json, values_of
from connectors.adapters.config import XiaomiSettings
from connectors.adapters.http import classify, json_body, request

RETRYABLE = frozenset({"-1", "10000", "200001"})  # busy / internal error / flow control
DELIVERED = 1  # callback type: delivered to the device
CLICKED = 2


def form(settings: XiaomiSettings, delivery: Delivery) -> dict[str, str]:
    """The form fields of one notification to one regid (LINK opens the tracked URL)."""
    fields = {
        "registration_id": delivery.address,
        "restricted_package_name": settings.package_name,
        "title": delivery.title,
        "description": delivery.body,
        "payload": json.dumps(delivery.data(), sort_keys=True),
        "pass_through": "0",
        "notify_type": "-1",
        "extra.callback.param": delivery.receipt_token,
        "extra.callback.type": str(DELIVERED),
        "extra.notify_effect": "3" if delivery.is_link else "1",
    }
    if delivery.is_link:
        fields["extra.web_uri"] = delivery.read_url
    if settings.callback_url:
        fields["extra.callback"] = settings.callback_url
    return fields


def error_for(status: int, body: Mapping[str, Any], headers: Mapping[str, str]) -> Exception:
    """Map an answer whose result is not ok: busy and flow control retry, the rest not."""
    return classify(str(body.get("code", f"HTTP_{status}")), status, headers,
                    message=str(body.get("description") or body.get("reason") or ""),
                    retryable=RETRYABLE)


class XiaomiAdapter:
    """Adapter for the XIAOMI route."""

    name = "xiaomi"

    def __init__(self, settings: XiaomiSettings, base_url: str) -> None:
        self.settings = settings
        self.base_url = base_url

    def __repr__(self) -> str:
        return f"XiaomiAdapter(base_url={self.base_url!r})"

    async def send(self, http: httpx.AsyncClient, delivery: Delivery) -> Accepted:
        """POST the form with the app secret as the key."""
        secret = self.settings.app_secret.get_secret_value()
        response = await request(http, "POST", f"{self.base_url}/v3/message/regid",
                                 data=form(self.settings, delivery),
                                 headers={"Authorization": f"key={secret}"})
        body = json_body(response)
        if response.status_code == 200 and body.get("result") == "ok":
            return Accepted(str((body.get("data") or {}).get("id", "")))
        raise error_for(response.status_code, body, response.headers)

    def receipts(self, headers: Mapping[str, str], body: bytes) -> list[str]:
        """callback.param of delivered messages in a receipt callback (form field data=JSON)."""
        try:
            data = parse_qs(body.decode(), strict_parsing=True)["data"][0]
        except (UnicodeDecodeError, ValueError, KeyError) as exc:
            raise ValueError(f"callback must be a form with a 'data' field: {exc}") from None
        events = values_of(parse_json(data.encode()), "field 'data'")
        return delivered_tokens(events, "field 'data'", "param",
                                lambda event: event.get("type") == DELIVERED)

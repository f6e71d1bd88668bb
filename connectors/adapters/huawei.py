"""Huawei Push Kit: OAuth2 client credentials, POST /v1/{appid}/messages:send, biTag receipts."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import httpx

from connectors.adapters.access import TokenCache, with_token
from connectors.adapters.base import Accepted, Delivery
from connectors.adapters.callbacks import delivered_tokens, parse_json
from connectors.adapters.config import HuaweiSettings
from connectors.adapters.http import classify, json_body, oauth2_token, request

SUCCESS = "80000000"
TOKEN_EXPIRED = frozenset({"80200001", "80200003"})  # OAuth authentication error / token expired
RETRYABLE = frozenset({"81000001", "80600003"})  # internal error / flow control
DELIVERED = 0  # receipt status: the message reached the device


def message(delivery: Delivery) -> dict[str, Any]:
    """The Push Kit message: notification, read action as click action or data, biTag = token."""
    click: dict[str, Any] = ({"type": 2, "url": delivery.read_url} if delivery.is_link
                             else {"type": 3})
    return {
        "validate_only": False,
        "message": {
            "data": json.dumps(delivery.data(), sort_keys=True),
            "notification": {"title": delivery.title, "body": delivery.body},
            "android": {
                "urgency": "HIGH" if delivery.urgent else "NORMAL",
                "bi_tag": delivery.receipt_token,
                "notification": {"click_action": click},
            },
            "token": [delivery.address],
        },
    }


def error_for(status: int, body: Mapping[str, Any], headers: Mapping[str, str]) -> Exception:
    """Map a Push Kit answer that is not success: token expiry, retryable or permanent."""
    code = str(body.get("code", f"HTTP_{status}"))
    refresh = {code} if status == 401 else TOKEN_EXPIRED
    return classify(code, status, headers, message=str(body.get("msg", "")), refresh=refresh,
                    retryable=RETRYABLE)


class HuaweiAdapter:
    """Adapter for the HUAWEI route."""

    name = "huawei"

    def __init__(self, settings: HuaweiSettings, base_url: str) -> None:
        self.settings = settings
        self.base_url = base_url
        self.token_url = settings.token_url or f"{base_url}/oauth2/v3/token"
        self.tokens = TokenCache(self._fetch_token)

    def __repr__(self) -> str:
        return f"HuaweiAdapter(base_url={self.base_url!r})"

    async def _fetch_token(self, http: httpx.AsyncClient) -> tuple[str, float]:
        form = {"grant_type": "client_credentials", "client_id": self.settings.app_id,
                "client_secret": self.settings.client_secret.get_secret_value()}
        return await oauth2_token(http, self.token_url, form)

    async def send(self, http: httpx.AsyncClient, delivery: Delivery) -> Accepted:
        """POST the message with a bearer access token; refresh it once when expired."""
        url = f"{self.base_url}/v1/{self.settings.app_id}/messages:send"
        payload = message(delivery)

        async def call(token: str) -> Accepted:
            response = await request(http, "POST", url, json=payload,
                                     headers={"Authorization": f"Bearer {token}"})
            body = json_body(response)
            if response.status_code == 200 and str(body.get("code")) == SUCCESS:
                return Accepted(str(body.get("requestId", "")))
            raise error_for(response.status_code, body, response.headers)

        return await with_token(http, self.tokens, call)

    def receipts(self, headers: Mapping[str, str], body: bytes) -> list[str]:
        """biTags of delivered messages in a receipt callback {"statuses": [...]}."""
        data = parse_json(body)
        statuses = data.get("statuses") if isinstance(data, dict) else None
        return delivered_tokens(statuses, "field 'statuses'", "biTag",
                                lambda item: item.get("status") == DELIVERED)

"""Firebase Cloud Messaging HTTP v1: service-account JWT → OAuth2 token, messages:send."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import httpx
import jwt
from pydantic import SecretStr

from connectors.adapters.access import TokenCache, TokenExpired, with_token
from connectors.adapters.base import Accepted, Delivery
from connectors.adapters.callbacks import app_receipts
from connectors.adapters.config import FcmSettings, dev_key
from connectors.adapters.http import classify, json_body, oauth2_token, request

SCOPE = "https://www.googleapis.com/auth/firebase.messaging"
GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
PERMANENT = frozenset({"INVALID_ARGUMENT", "UNREGISTERED", "SENDER_ID_MISMATCH",
                       "THIRD_PARTY_AUTH_ERROR", "NOT_FOUND", "PERMISSION_DENIED"})
RETRYABLE = frozenset({"QUOTA_EXCEEDED", "UNAVAILABLE", "INTERNAL", "RESOURCE_EXHAUSTED"})
OPEN_LINK = "pushcascade.OPEN_READ_URL"  # the app's intent filter that opens data.read_url


def assertion(settings: FcmSettings, private_key: str, token_url: str, now: float) -> str:
    """The signed RS256 JWT a service account exchanges for an access token."""
    claims = {"iss": settings.client_email, "scope": SCOPE, "aud": token_url,
              "iat": int(now), "exp": int(now) + 3600}
    return jwt.encode(claims, private_key, algorithm="RS256")


def message(delivery: Delivery) -> dict[str, Any]:
    """The v1 message: notification, data with the read action, LINK as the click action."""
    android: dict[str, Any] = {"priority": "HIGH" if delivery.urgent else "NORMAL"}
    body: dict[str, Any] = {
        "token": delivery.address,
        "notification": {"title": delivery.title, "body": delivery.body},
        "data": delivery.data(),
        "android": android,
    }
    if delivery.is_link:
        android["notification"] = {"click_action": OPEN_LINK}
        body["webpush"] = {"fcm_options": {"link": delivery.read_url}}
    return {"message": body}


def error_code(body: Mapping[str, Any]) -> str:
    """The FcmError errorCode of an error answer, else its google.rpc status."""
    error = body.get("error")
    if not isinstance(error, Mapping):
        return ""
    for detail in error.get("details") or []:
        if isinstance(detail, Mapping) and detail.get("errorCode"):
            return str(detail["errorCode"])
    return str(error.get("status", ""))


def error_for(status: int, body: Mapping[str, Any], headers: Mapping[str, str]) -> Exception:
    """Map an FCM error answer: 401 refreshes the token; quota and 5xx retry; the rest not."""
    code = error_code(body) or f"HTTP_{status}"
    if status == 401 and code not in PERMANENT:
        return TokenExpired(code)
    if code in PERMANENT:
        status = 400  # permanent whatever the HTTP status
    return classify(code, status, headers, retryable=RETRYABLE,
                    message=str((body.get("error") or {}).get("message", "")))


class FcmAdapter:
    """Adapter for the FCM route."""

    name = "fcm"

    def __init__(self, settings: FcmSettings, base_url: str) -> None:
        self.settings = settings
        self.base_url = base_url
        self.token_url = settings.token_url or f"{base_url}/token"
        pem = settings.private_key.get_secret_value() or dev_key("fcm_service_account.pem")
        self._key = SecretStr(pem)
        self.tokens = TokenCache(self._fetch_token)

    def __repr__(self) -> str:
        return f"FcmAdapter(base_url={self.base_url!r}, project={self.settings.project_id!r})"

    async def _fetch_token(self, http: httpx.AsyncClient) -> tuple[str, float]:
        key = self._key.get_secret_value()
        grant = assertion(self.settings, key, self.token_url, time.time())
        return await oauth2_token(http, self.token_url,
                                  {"grant_type": GRANT, "assertion": grant})

    async def send(self, http: httpx.AsyncClient, delivery: Delivery) -> Accepted:
        """POST projects/{id}/messages:send with a bearer token; refresh it once on 401."""
        url = f"{self.base_url}/v1/projects/{self.settings.project_id}/messages:send"
        payload = message(delivery)

        async def call(token: str) -> Accepted:
            response = await request(http, "POST", url, json=payload,
                                     headers={"Authorization": f"Bearer {token}"})
            body = json_body(response)
            if response.status_code == 200 and body.get("name"):
                return Accepted(str(body["name"]))
            raise error_for(response.status_code, body, response.headers)

        return await with_token(http, self.tokens, call)

    def receipts(self, headers: Mapping[str, str], body: bytes) -> list[str]:
        """Tokens in the app-reported receipt (FCM itself has no delivery callback)."""
        return app_receipts(body)

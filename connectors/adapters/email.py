"""E-mail through the SendGrid v3 mail send API; custom_args carry the send and receipt token."""

from __future__ import annotations

import html
import time
from collections.abc import Mapping
from typing import Any

import httpx

from connectors.adapters.base import Accepted, Delivery, ProviderError
from connectors.adapters.callbacks import delivered_tokens, parse_json
from connectors.adapters.config import EmailSettings
from connectors.adapters.http import request, status_error

DELIVERED = "delivered"


def mail(settings: EmailSettings, delivery: Delivery) -> dict[str, Any]:
    """The mail: text and HTML bodies ending in the tracked read link; SendGrid tracking off."""
    text = f"{delivery.body}\n\nMark as read: {delivery.read_url}\n"
    markup = (f"<p>{html.escape(delivery.body)}</p>"
              f'<p><a href="{html.escape(delivery.read_url, quote=True)}">Mark as read</a></p>')
    return {
        "personalizations": [{
            "to": [{"email": delivery.address}],
            "custom_args": {"send_id": delivery.send_id,
                            "receipt_token": delivery.receipt_token},
        }],
        "from": {"email": settings.sender},
        "subject": delivery.title or "(no subject)",
        "content": [{"type": "text/plain", "value": text},
                    {"type": "text/html", "value": markup}],
        "tracking_settings": {"click_tracking": {"enable": False}},
    }


def reset_wait(reset: str | None, now: float) -> float:
    """Seconds until SendGrid's X-RateLimit-Reset (a Unix time); 1 when absent or unreadable."""
    try:
        return max(0.0, float(reset or "") - now)
    except ValueError:
        return 1.0


def error_for(response: httpx.Response) -> ProviderError:
    """Map a SendGrid error: 429 waits for X-RateLimit-Reset, 5xx retry, other 4xx do not."""
    try:
        errors = response.json().get("errors") or [{}]
        message = "; ".join(str(e.get("message", "")) for e in errors)
    except (ValueError, AttributeError):
        message = ""
    error = status_error(response)
    if response.status_code == 429 and error.retry_after is None:
        error.retry_after = reset_wait(response.headers.get("x-ratelimit-reset"), time.time())
    return ProviderError(error.code, error.retryable, error.retry_after, message)


class EmailAdapter:
    """Adapter for the EMAIL channel."""

    name = "email"

    def __init__(self, settings: EmailSettings, base_url: str) -> None:
        self.settings = settings
        self.base_url = base_url

    def __repr__(self) -> str:
        return f"EmailAdapter(base_url={self.base_url!r})"

    async def send(self, http: httpx.AsyncClient, delivery: Delivery) -> Accepted:
        """POST /v3/mail/send with the API key as bearer; 202 carries X-Message-Id."""
        response = await request(
            http, "POST", f"{self.base_url}/v3/mail/send", json=mail(self.settings, delivery),
            headers={"Authorization": f"Bearer {self.settings.api_key.get_secret_value()}"})
        if response.status_code == 202:
            return Accepted(response.headers.get("x-message-id", ""))
        raise error_for(response)

    def receipts(self, headers: Mapping[str, str], body: bytes) -> list[str]:
        """receipt_token of delivered events in an Event Webhook post (a JSON list)."""
        return delivered_tokens(parse_json(body), "body", "receipt_token",
                                lambda event: event.get("event") == DELIVERED)

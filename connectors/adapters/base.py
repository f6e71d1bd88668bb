"""The provider adapter interface: a Delivery goes in, Accepted or a ProviderError comes out."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any, Protocol, runtime_checkable

import httpx


@dataclass(frozen=True)
class Delivery:
    """One send, ready for its provider (built by the dispatcher)."""

    send: Mapping[str, Any]  # the ChannelSend record
    address: str  # phone / wechat openid / e-mail / the device's push token for this route
    read_url: str  # signed tracked link: opening it records a READ
    receipt_token: str  # opaque signed token the vendor echoes back in its receipt callback

    def __repr__(self) -> str:
        return (f"Delivery(send_id={self.send.get('send_id')!r}, "
                f"channel={self.send.get('channel')!r}, route={self.send.get('route')!r})")

    @property
    def send_id(self) -> str:
        """The send's id (what every consumer downstream deduplicates on)."""
        return str(self.send["send_id"])

    @property
    def title(self) -> str:
        """The push title (empty for a probe)."""
        return str(self.send.get("title") or "")

    @property
    def body(self) -> str:
        """The push body (empty for a probe)."""
        return str(self.send.get("body") or "")

    @property
    def read_action(self) -> str:
        """BUTTON, REPLY or LINK."""
        return str(self.send.get("read_action") or "BUTTON")

    @property
    def is_link(self) -> bool:
        """True when tapping the push itself is the read action (a tracked LINK)."""
        return self.read_action == "LINK"

    @property
    def urgent(self) -> bool:
        """True for HIGH and URGENT importance (vendors' high-priority lane)."""
        return str(self.send.get("importance") or "NORMAL") in ("HIGH", "URGENT")

    def data(self) -> dict[str, str]:
        """The custom key/value data every app push carries (read action, tokens, ids)."""
        return {
            "send_id": self.send_id,
            "message_id": str(self.send.get("message_id", "")),
            "account_id": str(self.send.get("account_id", "")),
            "device_id": str(self.send.get("device_id") or ""),
            "read_action": self.read_action,
            "read_url": self.read_url,
            "receipt_token": self.receipt_token,
        }


@dataclass(frozen=True)
class Accepted:
    """The provider accepted the send; its own id for the message."""

    provider_message_id: str


class ProviderError(Exception):
    """A send the provider did not accept, mapped from the vendor's own error reporting."""

    def __init__(self, code: str, retryable: bool, retry_after: float | None = None,
                 message: str = "") -> None:
        super().__init__(f"{code}: {message}" if message else code)
        self.code = code
        self.retryable = retryable
        self.retry_after = retry_after

    def __repr__(self) -> str:
        return (f"ProviderError(code={self.code!r}, retryable={self.retryable}, "
                f"retry_after={self.retry_after})")


class UnknownTarget(LookupError):
    """No adapter is configured for a send's channel or route."""


@runtime_checkable
class Adapter(Protocol):
    """One push provider: builds the vendor's request and reads the vendor's receipt callback."""

    name: str  # "fcm", "apns", "huawei", "xiaomi", "oppo", "vivo", "jpush", "getui", ...

    async def send(self, http: httpx.AsyncClient, delivery: Delivery) -> Accepted:
        """Deliver one send; raise ProviderError when the vendor does not accept it."""
        ...

    def receipts(self, headers: Mapping[str, str], body: bytes) -> list[str]:
        """The receipt_tokens in one vendor receipt callback; ValueError on a malformed body."""
        ...


# ---- helpers shared by the adapters -------------------------------------------------------

RETRYABLE_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})


def retry_after(headers: Mapping[str, str], default: float | None = None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or HTTP date); default when absent."""
    value = headers.get("retry-after") or headers.get("Retry-After")
    if not value:
        return default
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return default


def status_error(response: httpx.Response, code: str | None = None) -> ProviderError:
    """The generic mapping of an HTTP error status: 408/429/5xx retryable, other 4xx not."""
    status = response.status_code
    return ProviderError(code or f"HTTP_{status}", retryable=status in RETRYABLE_STATUS,
                         retry_after=retry_after(response.headers),
                         message=f"HTTP {status}")


async def request(http: httpx.AsyncClient, method: str, url: str, **kwargs: Any) -> httpx.Response:
    """Make one HTTP request; timeouts and connection failures become retryable ProviderErrors."""
    try:
        return await http.request(method, url, **kwargs)
    except httpx.TimeoutException as exc:
        raise ProviderError("TIMEOUT", retryable=True, message=type(exc).__name__) from None
    except httpx.TransportError as exc:
        raise ProviderError("UNREACHABLE", retryable=True, message=type(exc).__name__) from None


def json_body(response: httpx.Response) -> dict[str, Any]:
    """The response's JSON object; a non-JSON answer maps by HTTP status."""
    try:
        value = response.json()
    except ValueError:
        raise status_error(response, f"HTTP_{response.status_code}") from None
    if not isinstance(value, dict):
        raise status_error(response, f"HTTP_{response.status_code}")
    return value


class TokenExpired(Exception):
    """The vendor said the access token is invalid or expired: refresh it and try once more."""


class TokenCache:
    """An access token cached until shortly before it expires; one refresh at a time."""

    def __init__(self, fetch: Callable[[httpx.AsyncClient], Awaitable[tuple[str, float]]],
                 margin: float = 60.0) -> None:
        self._fetch = fetch  # returns (token, lifetime in seconds)
        self._margin = margin
        self._token: str | None = None
        self._expires = 0.0
        self._lock = asyncio.Lock()
        self.fetches = 0

    def __repr__(self) -> str:
        return f"TokenCache(cached={self._token is not None})"

    async def get(self, http: httpx.AsyncClient) -> str:
        """A valid access token, fetched when none is cached or it is about to expire."""
        if self._token is not None and time.monotonic() < self._expires:
            return self._token
        async with self._lock:
            if self._token is None or time.monotonic() >= self._expires:
                token, lifetime = await self._fetch(http)
                self.fetches += 1
                self._token = token
                self._expires = time.monotonic() + max(1.0, lifetime - self._margin)
            return self._token

    def invalidate(self, token: str) -> None:
        """Forget the token the vendor rejected (a newer one fetched meanwhile is kept)."""
        if self._token == token:
            self._token = None


async def with_token(http: httpx.AsyncClient, cache: TokenCache,
                     call: Callable[[str], Awaitable[Accepted]]) -> Accepted:
    """Run call(token); when it raises TokenExpired, refresh the token and run it once more."""
    token = await cache.get(http)
    try:
        return await call(token)
    except TokenExpired:
        cache.invalidate(token)
    token = await cache.get(http)
    try:
        return await call(token)
    except TokenExpired:
        raise ProviderError("TOKEN_REJECTED", retryable=True,
                            message="access token rejected after a refresh") from None


def parse_json(body: bytes) -> Any:
    """Decode a JSON callback body; ValueError naming the problem when it is not JSON."""
    try:
        return json.loads(body)
    except (UnicodeDecodeError, ValueError) as exc:
        raise ValueError(f"callback body is not JSON: {exc}") from None


def require_str(value: Any, field: str) -> str:
    """value when it is a non-empty string; ValueError naming the field otherwise."""
    if not isinstance(value, str) or not value:
        raise ValueError(f"callback field {field!r} must be a non-empty string")
    return value


def app_receipts(body: bytes) -> list[str]:
    """Tokens in an app-reported receipt {"receipts": [{"receipt_token": ...}, ...]}.

    APNs, FCM and GeTui have no server-side delivery callback: the app's notification
    extension / message handler reports the receipt_token it found in the push.
    """
    data = parse_json(body)
    items = data.get("receipts") if isinstance(data, dict) else None
    if not isinstance(items, list):
        raise ValueError("callback field 'receipts' must be a list")
    tokens = []
    for item in items:
        if not isinstance(item, dict):
            raise ValueError("callback field 'receipts' must hold objects")
        tokens.append(require_str(item.get("receipt_token"), "receipt_token"))
    return tokens

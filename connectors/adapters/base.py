"""The provider adapter interface: a Delivery goes in, Accepted or a ProviderError comes out."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
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
                 message: str = "", ambiguous: bool = False) -> None:
        super().__init__(f"{code}: {message}" if message else code)
        self.code = code
        self.retryable = retryable
        self.retry_after = retry_after
        #: no answer came after the request may have reached the vendor (a read timeout, a
        #: connection cut after the request was written): the vendor may have the send
        self.ambiguous = ambiguous

    def __repr__(self) -> str:
        return (f"ProviderError(code={self.code!r}, retryable={self.retryable}, "
                f"retry_after={self.retry_after}, ambiguous={self.ambiguous})")


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

"""Signed ack tokens: what a read link or a receipt callback proves about one send.

A token is a JWT (HS256) whose header names the signing key (`kid`), so keys rotate: every key
in the set verifies, the newest signs. It carries the Ack's fields, its kind and an expiry."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import jwt

#: Longest token accepted (a forged megabyte is refused before it is parsed): the token of a
#: send at every cap of schemas/validation.py (ids, route, link; JSON-escaped, base64) signs
#: to ~6.5 kB (tests/unit/test_tokens.py).
MAX_LENGTH = 8192
KINDS = ("RECEIPT", "READ")


#: PyJWT's JSON form of claims and headers: compact separators (one encoder: json.dumps with
#: separators builds a new one per call).
_COMPACT = json.JSONEncoder(separators=(",", ":"))


def _b64(data: str | bytes) -> str:
    """base64url without padding (RFC 7515)."""
    raw = data.encode() if isinstance(data, str) else data
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


class TokenError(ValueError):
    """A token that is forged, expired, malformed or signed by an unknown key."""


@dataclass(frozen=True)
class AckToken:
    """The send an ack is about, and what kind of ack the token allows."""

    kind: str
    send_id: str
    message_id: str
    account_id: str
    channel: str
    device_id: str | None = None
    route: str | None = None
    link: str | None = None  # where a READ link leads after it is recorded

    @classmethod
    def for_send(cls, kind: str, send: Mapping[str, Any]) -> AckToken:
        """The token of a ChannelSend record for one kind of ack."""
        return cls(kind, send["send_id"], send["message_id"], send["account_id"],
                   send["channel"], send.get("device_id"), send.get("route"),
                   send.get("link") if kind == "READ" else None)

    def ack(self, now: float) -> dict[str, Any]:
        """The Ack record this token stands for, acknowledged at `now` (epoch seconds)."""
        return {"message_id": self.message_id, "account_id": self.account_id,
                "channel": self.channel, "kind": self.kind, "device_id": self.device_id,
                "route": self.route, "send_id": self.send_id, "acked_at": round(now * 1000)}


class Signer:
    """Signs with one key of a set and verifies with any of them."""

    def __init__(self, keys: Mapping[str, str], signing_key_id: str, ttl: float) -> None:
        if signing_key_id not in keys:
            raise ValueError(f"signing key {signing_key_id!r} is not in the key set")
        self._keys, self.kid, self.ttl = dict(keys), signing_key_id, ttl
        self._header = _b64(json.dumps({"alg": "HS256", "kid": self.kid, "typ": "JWT"},
                                       separators=(",", ":"), sort_keys=True))
        self._mac = hmac.new(self._keys[self.kid].encode(), digestmod=hashlib.sha256)

    def __repr__(self) -> str:
        return f"Signer(kid={self.kid!r}, keys={sorted(self._keys)}, ttl={self.ttl})"

    def sign(self, token: AckToken, now: float | None = None) -> str:
        """The compact, URL-safe signed form of a token: the bytes PyJWT's encode gives
        (tests/unit/test_tokens.py), made with the key's HMAC state and the header encoded
        once, a third of the time (the dispatcher signs two per send)."""
        issued = time.time() if now is None else now
        claims = {k: v for k, v in vars(token).items() if v is not None}
        claims["exp"] = int(issued + self.ttl)
        signing_input = f"{self._header}.{_b64(_COMPACT.encode(claims))}"
        mac = self._mac.copy()
        mac.update(signing_input.encode())
        return f"{signing_input}.{_b64(mac.digest())}"

    def verify(self, text: str, kind: str | None = None, now: float | None = None) -> AckToken:
        """The token in `text`; TokenError says why it is refused."""
        if len(text) > MAX_LENGTH:
            raise TokenError(f"token longer than {MAX_LENGTH} characters")
        try:
            kid = jwt.get_unverified_header(text).get("kid")
        except jwt.InvalidTokenError as exc:
            raise TokenError(f"malformed token: {exc}") from None
        if kid not in self._keys:
            raise TokenError("token signed by an unknown key")
        try:
            claims = jwt.decode(text, self._keys[kid], algorithms=["HS256"],
                                options={"require": ["exp"], "verify_exp": now is None})
        except jwt.ExpiredSignatureError:
            raise TokenError("token expired") from None
        except jwt.InvalidTokenError as exc:
            raise TokenError(f"invalid token: {exc}") from None
        if now is not None and claims["exp"] < now:
            raise TokenError("token expired")
        claims.pop("exp")
        try:
            token = AckToken(**claims)
        except TypeError:
            raise TokenError("token without the fields of an ack") from None
        if token.kind not in KINDS or (kind is not None and token.kind != kind):
            raise TokenError(f"a {token.kind} token cannot record a {kind or 'known'} ack")
        return token

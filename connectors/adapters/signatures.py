"""Vendor callback signatures, checked for the vendors that sign their callbacks.

Signed: WeChat (every message pushed to the official account's server carries `signature` =
SHA-1 of the sorted token, timestamp and nonce) and SendGrid (the Signed Event Webhook: ECDSA
P-256 over timestamp + body). The others (Huawei, Xiaomi, OPPO, vivo, JPush, Aliyun SMS) send
no signature, and APNs, FCM and GeTui receipts come from our own app: there the signed receipt
token, bound to its provider, is the only proof."""

from __future__ import annotations

import base64
import hashlib
import secrets
from collections.abc import Mapping
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_der_public_key, load_pem_public_key

#: Longest accepted distance between a signed timestamp and now, seconds (replays).
MAX_SKEW = 300.0
SENDGRID_SIGNATURE = "x-twilio-email-event-webhook-signature"
SENDGRID_TIMESTAMP = "x-twilio-email-event-webhook-timestamp"


class SignatureError(ValueError):
    """A callback whose signature is missing, stale or wrong."""


def fresh(timestamp: str, now: float) -> None:
    """SignatureError unless timestamp (epoch seconds) is within MAX_SKEW of now."""
    try:
        when = float(timestamp)
    except ValueError:
        raise SignatureError("timestamp is not a number") from None
    if abs(now - when) > MAX_SKEW:
        raise SignatureError(f"timestamp more than {MAX_SKEW:g} s from now")


def wechat_signature(token: str, timestamp: str, nonce: str) -> str:
    """WeChat's signature of a server push: SHA-1 of the sorted token, timestamp and nonce."""
    return hashlib.sha1("".join(sorted((token, timestamp, nonce))).encode()).hexdigest()  # noqa: S324  (WeChat's scheme)


def verify_wechat(token: str, query: Mapping[str, str], now: float) -> None:
    """SignatureError unless the query's signature is WeChat's for this token."""
    timestamp, nonce = query.get("timestamp", ""), query.get("nonce", "")
    given = query.get("signature", "")
    if not (timestamp and nonce and given):
        raise SignatureError("signature, timestamp and nonce are required")
    fresh(timestamp, now)
    if not secrets.compare_digest(given.encode(), wechat_signature(token, timestamp,
                                                                   nonce).encode()):
        raise SignatureError("signature does not match")


def sendgrid_key(text: str) -> ec.EllipticCurvePublicKey:
    """The Event Webhook verification key: PEM, or base64 DER as SendGrid's console shows it."""
    data = text.strip()
    key = (load_pem_public_key(data.encode()) if data.startswith("-----")
           else load_der_public_key(base64.b64decode(data)))
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise ValueError("the SendGrid verification key must be an EC public key")
    return key


def verify_sendgrid(key: str, headers: Mapping[str, str], body: bytes, now: float) -> None:
    """SignatureError unless the ECDSA signature covers the timestamp header and the body."""
    lowered = {k.lower(): v for k, v in headers.items()}
    signature, timestamp = lowered.get(SENDGRID_SIGNATURE, ""), lowered.get(SENDGRID_TIMESTAMP, "")
    if not (signature and timestamp):
        raise SignatureError("the Event Webhook signature headers are required")
    fresh(timestamp, now)
    try:
        sendgrid_key(key).verify(base64.b64decode(signature), timestamp.encode() + body,
                                 ec.ECDSA(hashes.SHA256()))
    except (InvalidSignature, ValueError):
        raise SignatureError("signature does not match") from None


def verify_callback(name: str, vendor: Any, headers: Mapping[str, str],
                    query: Mapping[str, str], body: bytes, now: float) -> None:
    """Check the callback's signature when its vendor signs and its key is configured."""
    if name == "wechat" and vendor is not None:
        token = vendor.callback_token.get_secret_value()
        if token:
            verify_wechat(token, query, now)
    elif name == "email" and vendor is not None and vendor.webhook_public_key:
        verify_sendgrid(vendor.webhook_public_key, headers, body, now)

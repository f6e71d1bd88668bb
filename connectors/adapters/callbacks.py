"""Reading vendor receipt callbacks: JSON bodies, event lists and the tokens they carry."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any


def parse_json(body: bytes) -> Any:
    """Decode a JSON callback body; ValueError naming the problem when it is not JSON (or is
    nested deeper than the parser recurses)."""
    try:
        return json.loads(body)
    except (UnicodeDecodeError, ValueError) as exc:
        raise ValueError(f"callback body is not JSON: {exc}") from None
    except RecursionError:
        raise ValueError("callback body is JSON nested too deeply") from None


def require_str(value: Any, field: str) -> str:
    """value when it is a non-empty string; ValueError naming the field otherwise."""
    if not isinstance(value, str) or not value:
        raise ValueError(f"callback field {field!r} must be a non-empty string")
    return value


def delivered_tokens(items: Any, what: str, field: str,
                     delivered: Callable[[dict[str, Any]], bool] = lambda item: True) -> list[str]:
    """The token at field (a dotted path) of each item that reports a delivery.

    Every item must be an object carrying its token, delivered or not; ValueError otherwise.
    """
    if not isinstance(items, list):
        raise ValueError(f"callback {what} must be a list")
    tokens = []
    for item in items:
        if not isinstance(item, dict):
            raise ValueError(f"callback {what} must hold objects")
        value: Any = item
        for part in field.split("."):
            value = value.get(part) if isinstance(value, dict) else None
        token = require_str(value, field)
        if delivered(item):
            tokens.append(token)
    return tokens


def app_receipts(body: bytes) -> list[str]:
    """Tokens in an app-reported receipt {"receipts": [{"receipt_token": ...}, ...]}.

    APNs, FCM and GeTui have no server-side delivery callback: the app's notification
    extension / message handler reports the receipt_token it found in the push.
    """
    data = parse_json(body)
    items = data.get("receipts") if isinstance(data, dict) else None
    return delivered_tokens(items, "field 'receipts'", "receipt_token")


def values_of(data: Any, what: str) -> list[Any]:
    """The values of a callback object keyed by message or task id; ValueError if not one."""
    if not isinstance(data, dict):
        raise ValueError(f"callback {what} must map message ids to objects")
    return list(data.values())

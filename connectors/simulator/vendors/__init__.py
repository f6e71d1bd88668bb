"""One module per vendor: the endpoints the adapters call and the receipt callbacks they read."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qsl

from starlette.requests import Request
from starlette.responses import JSONResponse

from connectors.simulator.core import Arrival

VENDORS = ("fcm", "apns", "huawei", "xiaomi", "oppo", "vivo", "jpush", "getui", "wechat", "sms",
           "email")


def arrival(vendor: str, target: str, data: Mapping[str, Any], address: Any,
            channel: str = "APP", callback_url: str | None = None,
            required: tuple[str, ...] = ("send_id", "receipt_token")) -> Arrival:
    """An Arrival from a push's custom data; ValueError naming a missing field."""
    for key in required:
        if not isinstance(data.get(key), str) or not data[key]:
            raise ValueError(f"missing {key}")
    if not isinstance(address, str) or not address:
        raise ValueError("missing target address")
    return Arrival(vendor=vendor, target=target, channel=channel, send_id=data["send_id"],
                   address=address, receipt_token=str(data.get("receipt_token") or ""),
                   read_url=str(data.get("read_url") or ""),
                   account_id=str(data.get("account_id") or "") or None,
                   device_id=str(data.get("device_id") or "") or None,
                   callback_url=callback_url or None)


def reply(data: Any, status: int = 200, retry_after: float | None = None,
          headers: Mapping[str, str] | None = None) -> JSONResponse:
    """A JSON answer, with Retry-After when given."""
    extra = dict(headers or {})
    if retry_after is not None:
        extra["Retry-After"] = f"{retry_after:g}"
    return JSONResponse(data, status_code=status, headers=extra)


def dumps(data: Any) -> bytes:
    """JSON bytes of a callback body."""
    return json.dumps(data, separators=(",", ":")).encode()


async def form(request: Request) -> dict[str, str]:
    """An application/x-www-form-urlencoded body as a dict (last value of a repeated key)."""
    pairs = parse_qsl((await request.body()).decode("utf-8", "replace"), keep_blank_values=True)
    return dict(pairs)


def app_receipt_body(item: Arrival, message_id: str) -> tuple[str, bytes]:
    """The receipt an app reports for a push it received (APNs, FCM and GeTui apps)."""
    receipt = {"receipt_token": item.receipt_token, "provider_message_id": message_id,
               "device_id": item.device_id, "received_at": int(time.time() * 1000)}
    return "application/json", dumps({"receipts": [receipt]})


def bearer(request: Request, scheme: str = "Bearer") -> str:
    """The credential after scheme in the Authorization header ('' when absent)."""
    value = request.headers.get("authorization", "")
    prefix = f"{scheme} "
    return value[len(prefix):] if value.lower().startswith(prefix.lower()) else ""

"""Aliyun SMS (Dysmsapi SendSms): RPC-style signed request; OutId carries the receipt token."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import time
import uuid
from collections.abc import Mapping

import httpx

from connectors.adapters.base import Accepted, Delivery
from connectors.adapters.callbacks import delivered_tokens, parse_json
from connectors.adapters.config import SmsSettings
from connectors.adapters.http import classify, json_body, request

RETRYABLE = frozenset({"isp.SYSTEM_ERROR", "isv.BUSINESS_LIMIT_CONTROL", "Throttling.User",
                       "ServiceUnavailable", "InternalError"})
THROTTLED_WAIT = 60.0  # Aliyun sends no Retry-After with its flow-control codes


#: Each byte's RFC 3986 form: unreserved characters as themselves, every other byte %XX.
_PERCENT = [chr(b) if chr(b).isascii() and (chr(b).isalnum() or chr(b) in "-_.~") else f"%{b:02X}"
            for b in range(256)]


_UNRESERVED = re.compile(r"[A-Za-z0-9_.~-]*")


def percent(text: str) -> str:
    """RFC 3986 percent-encoding as Aliyun's signature requires (space %20, ~ kept): what
    urllib's quote(text, safe="-_.~") gives, by table (a signature encodes ~400 characters)."""
    if _UNRESERVED.fullmatch(text):
        return text
    return "".join(map(_PERCENT.__getitem__, text.encode()))


def canonical(params: Mapping[str, str]) -> str:
    """The sorted, RFC 3986-encoded query of an RPC-style request (what is signed)."""
    return "&".join(f"{percent(k)}={percent(v)}" for k, v in sorted(params.items()))


def sign(query: str, secret: str, method: str = "POST") -> str:
    """The HMAC-SHA1 Signature of a canonical query."""
    # percent(query), which holds only unreserved characters and % = & (in C: 1/3 the time)
    encoded = query.replace("%", "%25").replace("=", "%3D").replace("&", "%26")
    to_sign = f"{method}&{percent('/')}&{encoded}"
    digest = hmac.new(f"{secret}&".encode(), to_sign.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


def signature(params: Mapping[str, str], secret: str, method: str = "POST") -> str:
    """The HMAC-SHA1 Signature of an RPC-style request (over the sorted, encoded params)."""
    return sign(canonical(params), secret, method)


def fields(settings: SmsSettings, delivery: Delivery, now: float, nonce: str) -> dict[str, str]:
    """The SendSms parameters before signing; the template gets the title, the tracked link,
    a ref."""
    return {
        "Action": "SendSms", "Version": "2017-05-25", "Format": "JSON",
        "AccessKeyId": settings.access_key_id, "SignatureMethod": "HMAC-SHA1",
        "SignatureVersion": "1.0", "SignatureNonce": nonce,
        "Timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now)),
        "PhoneNumbers": delivery.address, "SignName": settings.sign_name,
        "TemplateCode": settings.template_code,
        "TemplateParam": json.dumps({"title": delivery.title, "link": delivery.read_url,
                                     "ref": delivery.send_id}, ensure_ascii=False),
        "OutId": delivery.receipt_token,
    }


def params(settings: SmsSettings, delivery: Delivery, now: float, nonce: str) -> dict[str, str]:
    """The SendSms parameters, signed."""
    values = fields(settings, delivery, now, nonce)
    values["Signature"] = signature(values, settings.access_key_secret.get_secret_value())
    return values


def form(settings: SmsSettings, delivery: Delivery, now: float, nonce: str) -> bytes:
    """The signed SendSms form body: the canonical query it signs (RFC 3986 encoding, which
    a form decodes alike), then its Signature; the query is encoded once."""
    query = canonical(fields(settings, delivery, now, nonce))
    secret = settings.access_key_secret.get_secret_value()
    return f"{query}&Signature={percent(sign(query, secret))}".encode()


def error_for(status: int, body: Mapping[str, str], headers: Mapping[str, str]) -> Exception:
    """Map an answer whose Code is not OK: system errors and flow control retry."""
    code = str(body.get("Code", f"HTTP_{status}"))
    throttled = "LIMIT" in code or "Throttling" in code
    return classify(code, status, headers, message=str(body.get("Message", "")),
                    retryable=RETRYABLE, wait=THROTTLED_WAIT if throttled else None)


class SmsAdapter:
    """Adapter for the SMS channel."""

    name = "sms"

    def __init__(self, settings: SmsSettings, base_url: str) -> None:
        self.settings = settings
        self.base_url = base_url

    def __repr__(self) -> str:
        return f"SmsAdapter(base_url={self.base_url!r})"

    async def send(self, http: httpx.AsyncClient, delivery: Delivery) -> Accepted:
        """POST the signed SendSms form."""
        signed = form(self.settings, delivery, time.time(), uuid.uuid4().hex)
        response = await request(http, "POST", f"{self.base_url}/", content=signed,
                                 headers={"Content-Type": "application/x-www-form-urlencoded"})
        body = json_body(response)
        if response.status_code == 200 and body.get("Code") == "OK":
            return Accepted(str(body.get("BizId", "")))
        raise error_for(response.status_code, body, response.headers)

    def receipts(self, headers: Mapping[str, str], body: bytes) -> list[str]:
        """out_id of successful reports in an SmsReport callback (a JSON list)."""
        return delivered_tokens(parse_json(body), "body", "out_id",
                                lambda report: report.get("success") is True)

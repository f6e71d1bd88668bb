"""Aliyun SMS (Dysmsapi SendSms): RPC-style signed request; OutId carries the receipt token."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
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


def percent(text: str) -> str:
    """RFC 3986 percent-encoding as Aliyun's signature requires (space %20, ~ kept): what
    urllib's quote(text, safe="-_.~") gives, by table (a signature encodes ~400 characters)."""
    return "".join(map(_PERCENT.__getitem__, text.encode()))


def signature(params: Mapping[str, str], secret: str, method: str = "POST") -> str:
    """The HMAC-SHA1 Signature of an RPC-style request (over the sorted, encoded params)."""
    canonical = "&".join(f"{percent(k)}={percent(v)}" for k, v in sorted(params.items()))
    to_sign = f"{method}&{percent('/')}&{percent(canonical)}"
    digest = hmac.new(f"{secret}&".encode(), to_sign.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


def params(settings: SmsSettings, delivery: Delivery, now: float, nonce: str) -> dict[str, str]:
    """The SendSms parameters, signed; the template gets the title, the tracked link, a ref."""
    values = {
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
    values["Signature"] = signature(values, settings.access_key_secret.get_secret_value())
    return values


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
        form = params(self.settings, delivery, time.time(), uuid.uuid4().hex)
        response = await request(http, "POST", f"{self.base_url}/", data=form)
        body = json_body(response)
        if response.status_code == 200 and body.get("Code") == "OK":
            return Accepted(str(body.get("BizId", "")))
        raise error_for(response.status_code, body, response.headers)

    def receipts(self, headers: Mapping[str, str], body: bytes) -> list[str]:
        """out_id of successful reports in an SmsReport callback (a JSON list)."""
        return delivered_tokens(parse_json(body), "body", "out_id",
                                lambda report: report.get("success") is True)

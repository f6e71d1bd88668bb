"""WeChat official-account template messages: cached access_token, message/template/send."""

from __future__ import annotations

import xml.etree.ElementTree as ElementTree
from collections.abc import Mapping
from typing import Any

import httpx

from connectors.adapters.access import TokenCache, with_token
from connectors.adapters.base import Accepted, Delivery
from connectors.adapters.config import WechatSettings
from connectors.adapters.http import auth_error, classify, json_body, request

TOKEN_INVALID = frozenset({"40001", "40014", "42001"})  # invalid / malformed / expired token
RETRYABLE = frozenset({"-1", "45009", "45011"})  # system busy / API quota / frequency limit
QUOTA_WAIT = 60.0  # WeChat sends no Retry-After: wait this long after a quota answer


def template(settings: WechatSettings, delivery: Delivery) -> dict[str, Any]:
    """The template message: the tracked read_url is the message's url (opened by a tap)."""
    return {
        "touser": delivery.address,
        "template_id": settings.template_id,
        "url": delivery.read_url,
        "client_msg_id": delivery.send_id,  # WeChat's own de-duplication id
        "data": {"first": {"value": delivery.title}, "keyword1": {"value": delivery.body},
                 "remark": {"value": "Open to mark as read"}},
    }


def error_for(body: Mapping[str, Any]) -> Exception:
    """Map a non-zero errcode: token errors refresh, busy/quota retry, the rest are permanent."""
    code = str(body.get("errcode"))
    return classify(code, 200, {}, message=str(body.get("errmsg", "")), refresh=TOKEN_INVALID,
                    retryable=RETRYABLE, wait=QUOTA_WAIT if code in ("45009", "45011") else None)


class WechatAdapter:
    """Adapter for the WECHAT channel."""

    name = "wechat"

    def __init__(self, settings: WechatSettings, base_url: str) -> None:
        self.settings = settings
        self.base_url = base_url
        self.tokens = TokenCache(self._fetch_token, margin=300.0)

    def __repr__(self) -> str:
        return f"WechatAdapter(base_url={self.base_url!r})"

    async def _fetch_token(self, http: httpx.AsyncClient) -> tuple[str, float]:
        query = {"grant_type": "client_credential", "appid": self.settings.app_id,
                 "secret": self.settings.app_secret.get_secret_value()}
        response = await request(http, "GET", f"{self.base_url}/cgi-bin/token", params=query,
                                 sends=False)
        body = json_body(response)
        if not body.get("access_token"):
            code = body.get("errcode", response.status_code)
            status = 503 if str(code) == "-1" else response.status_code  # -1: system busy
            raise auth_error(code, status, body.get("errmsg"))
        return str(body["access_token"]), float(body.get("expires_in", 7200))

    async def send(self, http: httpx.AsyncClient, delivery: Delivery) -> Accepted:
        """POST the template message with ?access_token=; a new token once when refused."""
        payload = template(self.settings, delivery)

        async def call(token: str) -> Accepted:
            response = await request(http, "POST",
                                     f"{self.base_url}/cgi-bin/message/template/send",
                                     params={"access_token": token}, json=payload)
            body = json_body(response)
            if body.get("errcode") == 0:
                return Accepted(str(body.get("msgid", "")))
            raise error_for(body)

        return await with_token(http, self.tokens, call)

    def receipts(self, headers: Mapping[str, str], body: bytes) -> list[str]:
        """Always [] for a valid TEMPLATESENDJOBFINISH event: WeChat echoes only its MsgID.

        The WECHAT channel is account-level; its READ comes through the tracked url.
        """
        if b"<!DOCTYPE" in body.upper() or b"<!ENTITY" in body.upper():
            raise ValueError("callback body declares a DTD or entities (refused: XML bombs)")
        try:  # no DTD, so no entity to expand; expat (>= 2.4) also caps amplification
            root = ElementTree.fromstring(body)  # noqa: S314
        except ElementTree.ParseError as exc:
            raise ValueError(f"callback body is not XML: {exc}") from None
        if root.tag != "xml" or root.findtext("MsgType") != "event" or not root.findtext("MsgID"):
            raise ValueError("callback is not a WeChat event with a MsgID")
        return []

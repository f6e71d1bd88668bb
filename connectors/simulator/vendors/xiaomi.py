"""Xiaomi Mi Push as the simulator speaks it: /v3/message/regid and form receipts data=JSON."""

from __future__ import annotations

import json
import time
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from connectors.simulator.core import Arrival, Simulator
from connectors.simulator.vendors import arrival, form, reply

NAME = "xiaomi"


def receipt_body(item: Arrival, message_id: str) -> tuple[str, bytes]:
    """A receipt callback: form field data = {msgId: {param, type 1 (delivered), targets}}."""
    event = {"param": item.receipt_token, "type": 1, "targets": item.address,
             "jobkey": message_id, "barStatus": "Enable", "timestamp": int(time.time() * 1000)}
    return ("application/x-www-form-urlencoded",
            urlencode({"data": json.dumps({message_id: event})}).encode())


def routes(sim: Simulator) -> list[Route]:
    """POST /v3/message/regid."""
    conf = sim.providers.vendors[NAME]

    async def send(request: Request) -> Response:
        fields = await form(request)
        if request.headers.get("authorization") != f"key={conf.app_secret.get_secret_value()}":
            return reply({"result": "error", "code": 21301, "description": "认证失败",
                          "reason": "Authentication failed"}, 401)
        if fields.get("restricted_package_name") != conf.package_name:
            return reply({"result": "error", "code": 22022, "description": "包名不匹配",
                          "reason": "package name mismatch"})
        try:
            data = json.loads(fields["payload"])
            data["receipt_token"] = fields["extra.callback.param"]
            item = arrival(NAME, "XIAOMI", data, fields.get("registration_id"),
                           callback_url=fields.get("extra.callback"))
        except (ValueError, KeyError, TypeError) as exc:
            return reply({"result": "error", "code": 10017, "description": "参数错误",
                          "reason": f"bad parameters: {exc}"})
        verdict, message_id = await sim.admit(item, receipt_body)
        if verdict.outcome == "outage":
            return reply({"result": "error", "code": 10000, "description": "服务内部错误"}, 503,
                         verdict.retry_after)
        if verdict.outcome == "reject":
            code = verdict.code or "20301"
            retry = verdict.retry_after if code in ("-1", "10000", "200001") else None
            return reply({"result": "error", "code": int(code), "description": "rejected",
                          "reason": "rejected by the simulator"}, 200, retry)
        return reply({"result": "ok", "code": 0, "description": "成功",
                      "data": {"id": message_id}, "trace_id": message_id})

    return [Route("/v3/message/regid", send, methods=["POST"])]

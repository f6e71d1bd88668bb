"""vivo push as the simulator speaks it: /message/auth, /message/send, task receipts."""

from __future__ import annotations

import time

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from connectors.adapters.vivo import sign
from connectors.simulator.core import Arrival, Simulator
from connectors.simulator.vendors import arrival, dumps, reply

NAME = "vivo"
RETRYABLE = ("10070", "10071", "-1")


def receipt_body(item: Arrival, message_id: str) -> tuple[str, bytes]:
    """A receipt callback: {taskId: {param, targets, ackTime}}."""
    task = {"param": item.receipt_token, "targets": item.address,
            "ackTime": int(time.time() * 1000), "ackType": 1}
    return "application/json", dumps({message_id: task})


def routes(sim: Simulator) -> list[Route]:
    """The auth endpoint and the single-push endpoint."""
    conf = sim.providers.vendors[NAME]

    async def auth(request: Request) -> Response:
        try:
            body = await request.json()
            expected = sign(conf.app_id, conf.app_key, str(body["timestamp"]),
                            conf.app_secret.get_secret_value())
            ok = body.get("appId") == conf.app_id and body.get("sign") == expected
        except (ValueError, KeyError, TypeError):
            ok = False
        if not ok:
            return reply({"result": 10200, "desc": "sign error"})
        token, _ = sim.issue_token(NAME)
        return reply({"result": 0, "desc": "请求成功", "authToken": token})

    async def send(request: Request) -> Response:
        if not sim.token_ok(NAME, request.headers.get("authToken")):
            await request.body()
            return reply({"result": 10000, "desc": "权限认证失败"})
        try:
            body = await request.json()
            data = dict(body["clientCustomMap"])
            data["receipt_token"] = body["extra"]["callback.param"]
            item = arrival(NAME, "VIVO", data, body.get("regId"),
                           callback_url=body["extra"].get("callback"))
        except (ValueError, KeyError, TypeError) as exc:
            return reply({"result": 10050, "desc": f"参数错误 {exc}"})
        verdict, message_id = await sim.admit(item, receipt_body)
        if verdict.outcome == "outage":
            return reply({"result": -1, "desc": "服务繁忙"}, 503, verdict.retry_after)
        if verdict.outcome == "reject":
            code = verdict.code or "10302"
            return reply({"result": int(code), "desc": "rejected by the simulator"}, 200,
                         verdict.retry_after if code in RETRYABLE else None)
        return reply({"result": 0, "desc": "请求成功", "taskId": message_id})

    return [Route("/message/auth", auth, methods=["POST"]),
            Route("/message/send", send, methods=["POST"])]

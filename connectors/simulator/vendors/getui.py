"""GeTui v2 as the simulator speaks it: /v2/{appId}/auth and /v2/{appId}/push/single/cid."""

from __future__ import annotations

import json
import time

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from connectors.adapters.getui import sign
from connectors.simulator.core import Simulator
from connectors.simulator.vendors import app_receipt_body, arrival, reply

NAME = "getui"
RETRYABLE = ("10005", "20003", "-1")


def routes(sim: Simulator) -> list[Route]:
    """The auth endpoint and the single-cid push endpoint."""
    conf = sim.providers.vendors[NAME]

    async def auth(request: Request) -> Response:
        try:
            body = await request.json()
            ok = (request.path_params["app_id"] == conf.app_id
                  and body.get("appkey") == conf.app_key
                  and body.get("sign") == sign(conf.app_key, str(body["timestamp"]),
                                               conf.master_secret.get_secret_value()))
        except (ValueError, KeyError, TypeError):
            ok = False
        if not ok:
            return reply({"code": 10002, "msg": "sign error"})
        token, lifetime = sim.issue_token(NAME)
        expire = int((time.time() + lifetime) * 1000)
        return reply({"code": 0, "msg": "success",
                      "data": {"expire_time": str(expire), "token": token}})

    async def send(request: Request) -> Response:
        raw = await request.body()
        if not sim.token_ok(NAME, request.headers.get("token")):
            return reply({"code": 10001, "msg": "token invalid"})
        try:
            body = json.loads(raw)
            note = body["push_message"]["notification"]
            request_id = body["request_id"]
            if not 10 <= len(request_id) <= 32:
                raise ValueError("request_id must have 10 to 32 characters")
            item = arrival(NAME, "GETUI", json.loads(note["payload"]),
                           body["audience"]["cid"][0])
        except (ValueError, KeyError, TypeError, IndexError) as exc:
            return reply({"code": 20001, "msg": f"param error: {exc}"})
        # GeTui drops a push whose request_id it has already taken
        verdict, message_id = await sim.admit(item, app_receipt_body, key=request_id)
        if verdict.outcome == "outage":
            return reply({"code": 20003, "msg": "server busy"}, 503, verdict.retry_after)
        if verdict.outcome == "reject":
            code = verdict.code or "20001"
            return reply({"code": int(code), "msg": "rejected by the simulator"}, 200,
                         verdict.retry_after if code in RETRYABLE else None)
        return reply({"code": 0, "msg": "",
                      "data": {message_id: {item.address: "successed_online"}}})

    return [Route("/v2/{app_id}/auth", auth, methods=["POST"]),
            Route("/v2/{app_id}/push/single/cid", send, methods=["POST"])]

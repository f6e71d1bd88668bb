"""Huawei Push Kit as the simulator speaks it: OAuth token, messages:send, biTag receipts."""

from __future__ import annotations

import json
import time

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from connectors.simulator.core import Arrival, Simulator
from connectors.simulator.vendors import arrival, dumps, reply
from connectors.simulator.vendors import form as read_form

NAME = "huawei"


def receipt_body(item: Arrival, message_id: str) -> tuple[str, bytes]:
    """A Push Kit receipt callback for one delivered message."""
    status = {"biTag": item.receipt_token, "appid": "", "token": item.address, "status": 0,
              "timestamp": int(time.time() * 1000), "requestId": message_id}
    return "application/json", dumps({"statuses": [status]})


def routes(sim: Simulator) -> list[Route]:
    """The OAuth token endpoint and the send endpoint."""
    conf = sim.providers.vendors[NAME]

    async def token(request: Request) -> Response:
        form = await read_form(request)
        if (form.get("grant_type") != "client_credentials"
                or form.get("client_id") != conf.app_id
                or form.get("client_secret") != conf.client_secret.get_secret_value()):
            return reply({"error": 1101, "error_description": "invalid client"}, 400)
        access, lifetime = sim.issue_token(NAME)
        return reply({"access_token": access, "expires_in": int(lifetime),
                      "token_type": "Bearer"})

    async def send(request: Request) -> Response:
        if request.path_params["appid"] != conf.app_id:
            return reply({"code": "80300002", "msg": "No permission to send"}, 403)
        bearer = request.headers.get("authorization", "").removeprefix("Bearer ")
        if not sim.token_ok(NAME, bearer):
            return reply({"code": "80200003", "msg": "OAuth token expired"}, 401)
        try:
            message = (await request.json())["message"]
            data = json.loads(message["data"])
            data["receipt_token"] = message["android"]["bi_tag"]
            item = arrival(NAME, "HUAWEI", data, (message.get("token") or [None])[0])
        except (ValueError, KeyError, TypeError) as exc:
            return reply({"code": "80100003", "msg": f"Illegal payload: {exc}"}, 400)
        verdict, message_id = await sim.admit(item, receipt_body)
        if verdict.outcome == "outage":
            return reply({"code": "81000001", "msg": "System inner error"}, 503,
                         verdict.retry_after)
        if verdict.outcome == "reject":
            code = verdict.code or "80300007"
            status = 503 if code == "80600003" else 400
            return reply({"code": code, "msg": "rejected by the simulator"}, status,
                         verdict.retry_after if status == 503 else None)
        return reply({"code": "80000000", "msg": "Success", "requestId": message_id})

    return [Route("/oauth2/v3/token", token, methods=["POST"]),
            Route("/v1/{appid}/messages:send", send, methods=["POST"])]

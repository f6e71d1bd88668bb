"""OPPO push as the simulator speaks it: /server/v1/auth, notification/unicast, arrival events."""

from __future__ import annotations

import json
import time

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from connectors.adapters.oppo import sign
from connectors.simulator.core import Arrival, Simulator
from connectors.simulator.vendors import arrival, dumps, form, reply

NAME = "oppo"
RETRYABLE = ("-1", "-2", "33")


def receipt_body(item: Arrival, message_id: str) -> tuple[str, bytes]:
    """A receipt callback: a JSON list of push_arrive events with call_back_parameter."""
    event = {"messageId": message_id, "appId": "", "taskId": message_id,
             "registrationIds": item.address, "eventTime": int(time.time() * 1000),
             "param": item.receipt_token, "eventType": "push_arrive"}
    return "application/json", dumps([event])


def routes(sim: Simulator) -> list[Route]:
    """The auth endpoint and the unicast endpoint."""
    conf = sim.providers.vendors[NAME]

    async def auth(request: Request) -> Response:
        fields = await form(request)
        expected = sign(conf.app_key, fields.get("timestamp", ""),
                        conf.master_secret.get_secret_value())
        if fields.get("app_key") != conf.app_key or fields.get("sign") != expected:
            return reply({"code": 14, "message": "Invalid Sign"})
        token, _ = sim.issue_token(NAME)
        return reply({"code": 0, "message": "Success",
                      "data": {"auth_token": token, "create_time": int(time.time() * 1000)}})

    async def unicast(request: Request) -> Response:
        fields = await form(request)
        if not sim.token_ok(NAME, request.headers.get("auth_token")):
            return reply({"code": 11, "message": "Invalid AuthToken"})
        try:
            message = json.loads(fields["message"])
            note = message["notification"]
            data = json.loads(note["action_parameters"])
            data["receipt_token"] = note["call_back_parameter"]
            item = arrival(NAME, "OPPO", data, message.get("target_value"),
                           callback_url=note.get("call_back_url"))
        except (ValueError, KeyError, TypeError) as exc:
            return reply({"code": 28, "message": f"Invalid Message: {exc}"})
        verdict, message_id = await sim.admit(item, receipt_body)
        if verdict.outcome == "outage":
            return reply({"code": -1, "message": "Service Currently Unavailable"}, 503,
                         verdict.retry_after)
        if verdict.outcome == "reject":
            code = verdict.code or "10000"
            return reply({"code": int(code), "message": "rejected by the simulator"}, 200,
                         verdict.retry_after if code in RETRYABLE else None)
        return reply({"code": 0, "message": "Success", "data": {"messageId": message_id}})

    return [Route("/server/v1/auth", auth, methods=["POST"]),
            Route("/server/v1/message/notification/unicast", unicast, methods=["POST"])]

"""JPush v3 as the simulator speaks it: /v3/push with basic auth, callbacks with params."""

from __future__ import annotations

import base64
import json
import time

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from connectors.simulator.core import Arrival, Simulator
from connectors.simulator.vendors import arrival, dumps, reply

NAME = "jpush"
STATUS = {"1011": 400, "1003": 400, "1004": 401, "2002": 429, "1000": 500, "2008": 503}


def receipt_body(item: Arrival, message_id: str) -> tuple[str, bytes]:
    """A callback event: delivered (callback_type 1) with the push's callback params."""
    event = {"msg_id": message_id, "registration_id": item.address, "callback_type": 1,
             "params": {"receipt_token": item.receipt_token},
             "timestamp": int(time.time() * 1000)}
    return "application/json", dumps([event])


def routes(sim: Simulator) -> list[Route]:
    """POST /v3/push."""
    conf = sim.providers.vendors[NAME]
    expected = "Basic " + base64.b64encode(
        f"{conf.app_key}:{conf.master_secret.get_secret_value()}".encode()).decode()

    def error(code: str, message: str, retry: float | None = None) -> Response:
        status = STATUS.get(code, 400)
        headers = {"X-Rate-Limit-Reset": f"{retry:g}"} if status == 429 and retry else None
        return reply({"error": {"code": int(code), "message": message}}, status,
                     retry if status >= 500 else None, headers)

    async def send(request: Request) -> Response:
        raw = await request.body()
        if request.headers.get("authorization") != expected:
            return error("1004", "Authen failed")
        try:
            body = json.loads(raw)
            extras = body["notification"]["android"]["extras"]
            data = {**extras, "receipt_token": body["callback"]["params"]["receipt_token"]}
            item = arrival(NAME, "JPUSH", data, body["audience"]["registration_id"][0],
                           callback_url=body["callback"].get("url"))
        except (ValueError, KeyError, TypeError, IndexError) as exc:
            return error("1003", f"Parameter value is invalid: {exc}")
        verdict, message_id = await sim.admit(item, receipt_body)
        if verdict.outcome == "outage":
            return error("2008", "Server busy", verdict.retry_after)
        if verdict.outcome == "reject":
            return error(verdict.code or "1011", "rejected by the simulator", verdict.retry_after)
        return reply({"sendno": "0", "msg_id": message_id})

    return [Route("/v3/push", send, methods=["POST"])]

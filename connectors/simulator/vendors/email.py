"""SendGrid as the simulator speaks it: /v3/mail/send, Event Webhook 'delivered' events."""

from __future__ import annotations

import json
import re
import time

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from connectors.simulator.core import Arrival, Simulator
from connectors.simulator.vendors import arrival, bearer, dumps, reply

NAME = "email"
LINK = re.compile(r"https?://\S+")
STATUS = {"429": 429, "500": 500, "503": 503, "400": 400, "403": 403, "413": 413}


def receipt_body(item: Arrival, message_id: str) -> tuple[str, bytes]:
    """An Event Webhook post: one 'delivered' event with the mail's custom_args."""
    event = {"email": item.address, "timestamp": int(time.time()), "event": "delivered",
             "sg_message_id": f"{message_id}.filter0001", "send_id": item.send_id,
             "receipt_token": item.receipt_token}
    return "application/json", dumps([event])


def routes(sim: Simulator) -> list[Route]:
    """POST /v3/mail/send."""
    conf = sim.providers.vendors[NAME]

    def error(status: int, message: str, retry: float | None = None) -> Response:
        headers = {"X-RateLimit-Reset": str(int(time.time() + (retry or 1)))} \
            if status == 429 else None
        return reply({"errors": [{"message": message, "field": None, "help": None}]}, status,
                     retry if status >= 500 else None, headers)

    async def send(request: Request) -> Response:
        raw = await request.body()
        if bearer(request) != conf.api_key.get_secret_value():
            return error(401, "The provided authorization grant is invalid, expired, or revoked")
        try:
            body = json.loads(raw)
            person = body["personalizations"][0]
            text = next(c["value"] for c in body["content"] if c["type"] == "text/plain")
            links = LINK.findall(text)
            data = {**person["custom_args"], "read_url": links[-1] if links else ""}
            item = arrival(NAME, "EMAIL", data, person["to"][0]["email"], channel="EMAIL")
            if not body.get("from", {}).get("email"):
                raise ValueError("from.email is required")
        except (ValueError, KeyError, TypeError, IndexError, StopIteration) as exc:
            return error(400, f"Bad Request: {exc}")
        verdict, message_id = await sim.admit(item, receipt_body)
        if verdict.outcome == "outage":
            return error(503, "Service Unavailable", verdict.retry_after)
        if verdict.outcome == "reject":
            status = STATUS.get(verdict.code or "400", 400)
            return error(status, "rejected by the simulator", verdict.retry_after)
        return Response(status_code=202, headers={"X-Message-Id": message_id})

    return [Route("/v3/mail/send", send, methods=["POST"])]

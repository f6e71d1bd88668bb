"""APNs as the simulator speaks it: /3/device/{token} with an ES256 provider token (h2c or 1.1)."""

from __future__ import annotations

import json

import jwt
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from connectors.simulator.core import Simulator
from connectors.simulator.vendors import app_receipt_body, arrival, bearer, reply

NAME = "apns"
VERIFIED = 10_000  # provider tokens remembered as verified (forgotten all at once past it)
STATUS = {"BadDeviceToken": 400, "DeviceTokenNotForTopic": 400, "BadTopic": 400,
          "Unregistered": 410, "PayloadTooLarge": 413, "TooManyRequests": 429,
          "InternalServerError": 500, "ServiceUnavailable": 503, "Shutdown": 503,
          "ExpiredProviderToken": 403, "InvalidProviderToken": 403}


def routes(sim: Simulator) -> list[Route]:
    """POST /3/device/{token}."""
    conf = sim.providers.vendors[NAME]
    verified: set[str] = set()  # provider tokens whose signature was checked (an ES256
    # verification costs more than the rest of the request)

    def error(reason: str, retry: float | None = None) -> Response:
        status = STATUS.get(reason, 400)
        return reply({"reason": reason}, status, retry if status in (429, 500, 503) else None)

    async def send(request: Request) -> Response:
        raw = await request.body()  # read first: an h2 stream answered unread may fail
        sim.stats[f"apns.http/{request.scope.get('http_version')}"] += 1
        token = bearer(request, "bearer")
        if token not in verified:  # as APNs: a provider token is checked once, then trusted
            try:
                header = jwt.get_unverified_header(token)
                claims = jwt.decode(token, sim.settings.public_key(NAME), algorithms=["ES256"],
                                    options={"require": ["iss", "iat"]})
                if header.get("kid") != conf.key_id or claims["iss"] != conf.team_id:
                    raise jwt.InvalidTokenError("unknown key id or team id")
            except jwt.PyJWTError:
                return error("InvalidProviderToken")
            if len(verified) >= VERIFIED:
                verified.clear()
            verified.add(token)
        if sim.token_revoked(NAME, token):
            return error("ExpiredProviderToken")
        if request.headers.get("apns-topic") != conf.topic:
            return error("DeviceTokenNotForTopic" if request.headers.get("apns-topic")
                         else "MissingTopic")
        if request.headers.get("apns-push-type") not in ("alert", "background"):
            return error("InvalidPushType")
        try:
            body = json.loads(raw)
            item = arrival(NAME, "APNS", body["pushcascade"], request.path_params["token"])
        except (ValueError, KeyError, TypeError):
            return error("BadPayload" if request.path_params["token"] else "BadDeviceToken")
        verdict, _ = await sim.admit(item, app_receipt_body)
        if verdict.outcome == "outage":
            return error("ServiceUnavailable", verdict.retry_after)
        if verdict.outcome == "reject":
            return error(verdict.code or "BadDeviceToken", verdict.retry_after)
        apns_id = request.headers.get("apns-id", "")
        return Response(status_code=200, headers={"apns-id": apns_id})

    return [Route("/3/device/{token}", send, methods=["POST"])]

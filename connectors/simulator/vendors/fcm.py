"""FCM HTTP v1 as the simulator speaks it: JWT-bearer token grant, messages:send."""

from __future__ import annotations

import jwt
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from connectors.simulator.core import Simulator
from connectors.simulator.vendors import app_receipt_body, arrival, bearer, form, reply

NAME = "fcm"
GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"


def _error(status: int, rpc: str, code: str, message: str) -> dict[str, object]:
    detail = {"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode": code}
    return {"error": {"code": status, "message": message, "status": rpc, "details": [detail]}}


REJECT = {"UNREGISTERED": (404, "NOT_FOUND"), "INVALID_ARGUMENT": (400, "INVALID_ARGUMENT"),
          "SENDER_ID_MISMATCH": (403, "PERMISSION_DENIED"),
          "QUOTA_EXCEEDED": (429, "RESOURCE_EXHAUSTED"), "UNAVAILABLE": (503, "UNAVAILABLE"),
          "INTERNAL": (500, "INTERNAL")}


def routes(sim: Simulator) -> list[Route]:
    """The OAuth2 token endpoint and projects/{id}/messages:send."""
    conf = sim.providers.vendors[NAME]

    async def token(request: Request) -> Response:
        fields = await form(request)
        try:
            if fields.get("grant_type") != GRANT:
                raise jwt.InvalidTokenError("unsupported grant_type")
            claims = jwt.decode(fields.get("assertion", ""), sim.settings.public_key(NAME),
                                algorithms=["RS256"], audience=str(request.url),
                                options={"require": ["iss", "aud", "iat", "exp", "scope"]})
            if claims["iss"] != conf.client_email:
                raise jwt.InvalidTokenError("unknown service account")
        except jwt.PyJWTError as exc:
            return reply({"error": "invalid_grant", "error_description": str(exc)}, 400)
        access, lifetime = sim.issue_token(NAME)
        return reply({"access_token": access, "expires_in": int(lifetime),
                      "token_type": "Bearer"})

    async def send(request: Request) -> Response:
        if not sim.token_ok(NAME, bearer(request)):
            return reply({"error": {"code": 401, "status": "UNAUTHENTICATED",
                                    "message": "Request had invalid authentication credentials."}},
                         401)
        if request.path_params["project"] != conf.project_id:
            return reply(_error(403, "PERMISSION_DENIED", "SENDER_ID_MISMATCH", "wrong project"),
                         403)
        try:
            message = (await request.json())["message"]
            item = arrival(NAME, "FCM", message["data"], message.get("token"))
        except (ValueError, KeyError, TypeError) as exc:
            return reply(_error(400, "INVALID_ARGUMENT", "INVALID_ARGUMENT", str(exc)), 400)
        verdict, message_id = await sim.admit(item, app_receipt_body)
        if verdict.outcome == "outage":
            return reply(_error(503, "UNAVAILABLE", "UNAVAILABLE", "The service is unavailable."),
                         503, verdict.retry_after)
        if verdict.outcome == "reject":
            code = verdict.code or "UNREGISTERED"
            status, rpc = REJECT.get(code, (400, "INVALID_ARGUMENT"))
            return reply(_error(status, rpc, code, "rejected by the simulator"), status,
                         verdict.retry_after if status in (429, 500, 503) else None)
        return reply({"name": f"projects/{conf.project_id}/messages/{message_id}"})

    return [Route("/token", token, methods=["POST"]),
            Route("/v1/projects/{project}/messages:send", send, methods=["POST"])]

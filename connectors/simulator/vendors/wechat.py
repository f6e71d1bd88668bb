"""WeChat as the simulator speaks it: /cgi-bin/token, template/send, TEMPLATESENDJOBFINISH XML."""

from __future__ import annotations

import json
import time

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from connectors.simulator.core import Arrival, Simulator
from connectors.simulator.vendors import arrival, reply

NAME = "wechat"


def receipt_body(item: Arrival, message_id: str) -> tuple[str, bytes]:
    """The event WeChat pushes to the account's server when a template message was delivered."""
    xml = (f"<xml><ToUserName><![CDATA[gh_pushcascade]]></ToUserName>"
           f"<FromUserName><![CDATA[{item.address}]]></FromUserName>"
           f"<CreateTime>{int(time.time())}</CreateTime><MsgType><![CDATA[event]]></MsgType>"
           f"<Event><![CDATA[TEMPLATESENDJOBFINISH]]></Event><MsgID>{message_id}</MsgID>"
           f"<Status><![CDATA[success]]></Status></xml>")
    return "text/xml", xml.encode()


def routes(sim: Simulator) -> list[Route]:
    """The access_token endpoint and the template send endpoint."""
    conf = sim.providers.vendors[NAME]

    async def token(request: Request) -> Response:
        q = request.query_params
        if q.get("grant_type") != "client_credential" or q.get("appid") != conf.app_id:
            return reply({"errcode": 40013, "errmsg": "invalid appid"})
        if q.get("secret") != conf.app_secret.get_secret_value():
            return reply({"errcode": 40125, "errmsg": "invalid appsecret"})
        access, lifetime = sim.issue_token(NAME)
        return reply({"access_token": access, "expires_in": int(lifetime)})

    async def send(request: Request) -> Response:
        raw = await request.body()
        if not sim.token_ok(NAME, request.query_params.get("access_token")):
            return reply({"errcode": 40001, "errmsg": "invalid credential, access_token is "
                                                      "invalid or not latest"})
        try:
            body = json.loads(raw)
            if body.get("template_id") != conf.template_id:
                return reply({"errcode": 40037, "errmsg": "invalid template_id"})
            data = {"send_id": body["client_msg_id"], "read_url": body.get("url")}
            item = arrival(NAME, "WECHAT", data, body.get("touser"), channel="WECHAT",
                           required=("send_id",))
        except (ValueError, KeyError, TypeError) as exc:
            return reply({"errcode": 47001, "errmsg": f"data format error: {exc}"})
        # WeChat sends one message per openid + client_msg_id within 10 minutes
        verdict, message_id = await sim.admit(item, receipt_body,
                                              key=f"{item.address}/{item.send_id}", window=600)
        if verdict.outcome == "outage":
            return reply({"errcode": -1, "errmsg": "system error"})
        if verdict.outcome == "reject":
            return reply({"errcode": int(verdict.code or "43004"),
                          "errmsg": "rejected by the simulator"})
        return reply({"errcode": 0, "errmsg": "ok", "msgid": int(message_id.rsplit("-", 1)[1])})

    return [Route("/cgi-bin/token", token, methods=["GET"]),
            Route("/cgi-bin/message/template/send", send, methods=["POST"])]

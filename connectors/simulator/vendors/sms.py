"""Aliyun SMS as the simulator speaks it: signed SendSms RPC, SmsReport receipts by out_id."""

from __future__ import annotations

import json
import time

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from connectors.adapters.sms import signature
from connectors.simulator.core import Arrival, Simulator
from connectors.simulator.vendors import arrival, dumps, form, reply

NAME = "sms"
STATUS = {"isv.BUSINESS_LIMIT_CONTROL": 200, "Throttling.User": 400, "isp.SYSTEM_ERROR": 500,
          "ServiceUnavailable": 503}


def receipt_body(item: Arrival, message_id: str) -> tuple[str, bytes]:
    """An SmsReport message: delivered, with the request's OutId."""
    now = time.strftime("%Y-%m-%d %H:%M:%S")
    report = {"phone_number": item.address, "send_time": now, "report_time": now,
              "success": True, "err_code": "DELIVERED", "err_msg": "用户接收成功",
              "sms_size": "1", "biz_id": message_id, "out_id": item.receipt_token}
    return "application/json", dumps([report])


def routes(sim: Simulator) -> list[Route]:
    """POST / with Action=SendSms."""
    conf = sim.providers.vendors[NAME]

    def error(code: str, message: str, retry: float | None = None) -> Response:
        status = STATUS.get(code, 400)
        return reply({"Code": code, "Message": message, "RequestId": "sim"}, status,
                      retry if status >= 500 else None)

    async def send(request: Request) -> Response:
        fields = await form(request)
        given = fields.pop("Signature", "")
        if fields.get("AccessKeyId") != conf.access_key_id:
            return error("InvalidAccessKeyId.NotFound", "Specified access key is not found.")
        if given != signature(fields, conf.access_key_secret.get_secret_value()):
            return error("SignatureDoesNotMatch", "Specified signature is not matched.")
        if fields.get("Action") != "SendSms" or fields.get("SignName") != conf.sign_name:
            return error("isv.SMS_SIGNATURE_ILLEGAL", "unknown action or sign name")
        try:
            param = json.loads(fields["TemplateParam"])
            data = {"send_id": param["ref"], "read_url": param.get("link"),
                    "receipt_token": fields["OutId"]}
            item = arrival(NAME, "SMS", data, fields.get("PhoneNumbers"), channel="SMS")
        except (ValueError, KeyError, TypeError) as exc:
            return error("isv.INVALID_PARAMETERS", f"invalid parameters: {exc}")
        verdict, message_id = await sim.admit(item, receipt_body)
        if verdict.outcome == "outage":
            return error("ServiceUnavailable", "The request has failed.", verdict.retry_after)
        if verdict.outcome == "reject":
            return error(verdict.code or "isv.MOBILE_NUMBER_ILLEGAL", "rejected by the simulator",
                         verdict.retry_after)
        return reply({"Code": "OK", "Message": "OK", "BizId": message_id, "RequestId": "sim"})

    return [Route("/", send, methods=["POST"])]

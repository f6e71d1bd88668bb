"""An ASGI middleware keeping the last vendor requests (method, path, headers, body) for tests."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from starlette.types import ASGIApp, Message, Receive, Scope, Send


@dataclass(frozen=True)
class Recorded:
    """One vendor request as the simulator received it (kept in memory only, never logged)."""

    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes
    http_version: str


class Journal:
    """Wraps the app; appends a Recorded when the response starts."""

    def __init__(self, app: ASGIApp, records: deque[Recorded]) -> None:
        self.app = app
        self.records = records

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].startswith("/_control"):
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        while True:  # read the whole body first, so a request refused early is recorded whole
            message = await receive()
            if message["type"] != "http.request":
                break
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        body = b"".join(chunks)
        replayed = False

        async def receiving() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                self.records.append(_record(scope, body))
            await send(message)

        await self.app(scope, receiving, sending)


def _record(scope: Scope, body: bytes) -> Recorded:
    headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
    return Recorded(scope["method"], scope["path"], scope.get("query_string", b"").decode(),
                    headers, body, str(scope.get("http_version", "")))

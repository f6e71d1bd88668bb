"""The ack gateway: vendors' receipt callbacks and people's read actions become Ack records.

Every ack is proven by a signed token (connectors/tokens.py) and answered 2xx only after the
broker acknowledged its record on push.acks (keyed by account_id, murmur2)."""

from __future__ import annotations

import asyncio
import contextlib
import html
import logging
import time
from collections import OrderedDict
from collections.abc import AsyncIterator
from typing import Any

from confluent_kafka import KafkaError, Message, Producer
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route
from starlette.schemas import SchemaGenerator
from starlette.types import ASGIApp, Receive, Scope, Send

from connectors.adapters import UnknownTarget
from connectors.adapters.registry import Registry
from connectors.adapters.signatures import SignatureError, verify_callback
from connectors.metrics import ACK_WRITE, ACKS, REFUSED
from connectors.settings import ConnectorSettings
from connectors.tokens import MAX_LENGTH, Signer, TokenError
from schemas import Codec, RecordError, check_caps
from streams.domain.records import unquoted
from streams.kafka import dead_producer, producer
from streams.metrics import Flow
from streams.settings import Settings

#: (send_id, kind) pairs already recorded (per gateway): a link opened twice, a receipt repeated
#: in a body or replayed later is recorded once.
SEEN_ACKS = 200_000
#: Rate limiters kept (client addresses and tokens, the least recently seen dropped first).
LIMITERS = 100_000
log = logging.getLogger("pushcascade.gateway")
#: How long a request waits for the broker before the gateway answers 503.
BROKER_WAIT = 10.0

#: The link page: nothing loaded from elsewhere, not framed, not indexed, no referrer.
PAGE_HEADERS = {"Content-Security-Policy": "default-src 'none'; frame-ancestors 'none'",
                "Referrer-Policy": "no-referrer", "X-Content-Type-Options": "nosniff",
                "Cache-Control": "no-store"}

SCHEMAS = SchemaGenerator({"openapi": "3.0.0",
                           "info": {"title": "pushcascade ack gateway", "version": "1"}})


class AckWriter:
    """Produces Ack records and waits, without blocking the loop, for the broker's answer."""

    def __init__(self, settings: Settings, codec: Codec) -> None:
        self.settings, self.codec = settings, codec
        self.producer = self._new_producer()
        self.retired: list[Producer] = []  # replaced producers, polled until their reports end
        self._poller: asyncio.Task[None] | None = None
        self.flow = Flow("gateway")

    def _new_producer(self) -> Producer:
        return producer(self.settings.connections.kafka_bootstrap_servers,
                        **{"message.timeout.ms": round(BROKER_WAIT * 1000)})

    async def start(self) -> None:
        """Serve delivery reports on the loop."""
        self._poller = asyncio.create_task(self._poll())

    async def stop(self) -> None:
        """Flush and stop."""
        if self._poller:
            self._poller.cancel()
        await asyncio.get_running_loop().run_in_executor(None, self.producer.flush, 10)

    async def _poll(self) -> None:
        while True:
            self.producer.poll(0)
            for old in list(self.retired):
                old.poll(0)
                if not len(old):
                    self.retired.remove(old)
            await asyncio.sleep(0.005)

    def _renew(self, failed: Producer, err: KafkaError) -> None:
        """Replace a producer that writes nothing more (dead_producer), so that the acks after
        it are written again instead of answered 503 for ever; its queued acks are purged
        (their senders get 503 and send again)."""
        if failed is not self.producer:
            return  # replaced already
        log.warning("the producer was fenced or failed (%s): a new one takes its place",
                    err.str())
        self.producer = self._new_producer()
        self.retired.append(failed)
        failed.purge()

    async def write(self, acks: list[dict[str, Any]]) -> None:
        """Produce the acks; return once all are acknowledged, raise if any is not."""
        loop = asyncio.get_running_loop()
        futures, sent_by = [], self.producer
        for ack in acks:
            future: asyncio.Future[None] = loop.create_future()

            def delivered(err: KafkaError | None, _: Message,
                          f: asyncio.Future[None] = future) -> None:
                if err is not None and dead_producer(err):
                    self._renew(sent_by, err)
                if not f.done():
                    f.set_exception(RuntimeError(err.str())) if err else f.set_result(None)

            self.producer.produce(self.settings.topic("push.acks"),
                                  key=ack["account_id"].encode(),
                                  value=self.codec.encode("Ack", ack), on_delivery=delivered,
                                  timestamp=ack["acked_at"])  # the READ's time in the router
            futures.append(future)
        async with asyncio.timeout(BROKER_WAIT + 1):  # (no gather, no wait_for task per request)
            for future in futures:
                await future
        written = time.time()
        for ack in acks:
            ACKS.labels(ack["kind"]).inc()
            ACK_WRITE.observe(max(0.0, written - ack["acked_at"] / 1000))
        self.flow.sent(self.settings.topic("push.acks"), len(acks))


def refuse(status: int, reason: str, message: str) -> JSONResponse:
    """A 4xx/5xx answer with its reason, counted."""
    REFUSED.labels(reason).inc()
    return JSONResponse({"error": reason, "message": message}, status_code=status)


class Limits:
    """A leaky bucket per key: `rate` units per `period`, up to `rate` at once, as aiolimiter's
    AsyncLimiter leaks (one float per key: when its bucket is empty, the generic cell rate
    algorithm), the least recently used key dropped beyond LIMITERS. A limiter object per key
    kept 100,000 objects for the garbage collector to walk: read acks' p99 145 ms, now 35."""

    def __init__(self, rate: float, period: float) -> None:
        self.rate, self.interval = rate, period / rate
        self._empty_at: OrderedDict[str, float] = OrderedDict()

    def allows(self, key: str, now: float | None = None) -> bool:
        """True (and one unit taken) while key is within its rate; never waits."""
        now = time.monotonic() if now is None else now
        empty_at = max(self._empty_at.pop(key, now), now)
        fits = empty_at + self.interval - now <= self.rate * self.interval + 1e-9
        self._empty_at[key] = empty_at + self.interval if fits else empty_at
        if len(self._empty_at) > LIMITERS:
            self._empty_at.popitem(last=False)
        return fits


def unfit(codec: Codec, ack: dict[str, Any], now: float) -> tuple[str, str] | None:
    """Why a validly signed token's ack cannot be recorded, as (reason, message), or None:
    "invalid_ack" when it is not a valid Ack (e.g. a channel this gateway does not know: the
    field and what is wrong, never the value), "over_cap" when it breaks a cap of
    schemas/validation.py (the field and the limit)."""
    try:
        record = codec.validate("Ack", ack)
    except RecordError as exc:
        return "invalid_ack", f"the token's ack is not an Ack this gateway records: " \
                              f"{unquoted(str(exc))}"
    try:
        check_caps("Ack", record, now)
    except RecordError as exc:
        return "over_cap", str(exc)
    return None


def create_app(settings: Settings, config: ConnectorSettings, registry: Registry,
               codec: Codec | None = None) -> Starlette:
    """The gateway's ASGI app."""
    codec = codec or Codec(settings.connections.schema_registry_url or None)
    signer = Signer(config.keys, config.signing_key_id, config.ack_token_ttl)
    writer = AckWriter(settings, codec)
    seen: OrderedDict[str, None] = OrderedDict()
    clients = Limits(config.gateway_client_rate, 1.0)
    tokens_used = Limits(config.gateway_token_rate, 60.0)

    def first_time(acks: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The acks whose (send_id, kind) this gateway has not recorded, each once, marked."""
        fresh = []
        for ack in acks:
            key = f'{ack["send_id"]} {ack["kind"]}'  # a string: nothing for the collector
            if key not in seen:
                seen[key] = None  # before the write: a repeat meanwhile is a repeat
                fresh.append(ack)
        while len(seen) > SEEN_ACKS:
            seen.popitem(last=False)
        return fresh

    def forget(acks: list[dict[str, Any]]) -> None:
        for ack in acks:
            seen.pop(f'{ack["send_id"]} {ack["kind"]}', None)

    def provider_of(ack: dict[str, Any]) -> str | None:
        try:
            return registry.name_for(ack["channel"], ack["route"])
        except UnknownTarget:
            return None

    async def body_of(request: Request) -> bytes | Response:
        length = request.headers.get("content-length")
        if length and length.isdigit() and int(length) > config.ack_max_body:
            return refuse(413, "too_large", f"body over {config.ack_max_body} bytes")
        body = b""
        try:
            async with asyncio.timeout(config.gateway_read_timeout):  # a slow body holds nothing
                async for chunk in request.stream():
                    body += chunk
                    if len(body) > config.ack_max_body:
                        return refuse(413, "too_large",
                                      f"body over {config.ack_max_body} bytes")
        except TimeoutError:
            return refuse(408, "timeout", f"body not received within "
                          f"{config.gateway_read_timeout:g} s")
        return body

    async def written(acks: list[dict[str, Any]]) -> Response | None:
        try:
            await writer.write(acks)
        except (RuntimeError, TimeoutError) as exc:
            log.warning("acks not written: %s", exc)
            return refuse(503, "broker_unavailable", "ack not written, try again")
        return None

    async def callback(request: Request) -> Response:
        """A vendor's delivery-receipt callback (in its own format): RECEIPT acks.
        ---
        summary: A vendor's delivery-receipt callback, recorded as RECEIPT acks
        responses:
          200: {description: the receipts were recorded}
          400: {description: malformed body}
          401: {description: the vendor's signature is missing or wrong (when it signs)}
          403: {description: no valid receipt token in it}
          404: {description: unknown provider}
          413: {description: body too large}
          422: {description: every receipt in it is not a valid Ack or breaks a cap (the field
            named)}
          429: {description: too many requests from this address (Retry-After)}
          503: {description: the broker did not acknowledge; the vendor retries}
        """
        name = request.path_params["provider"]
        try:
            adapter = registry.adapter(name)
        except UnknownTarget:
            return refuse(404, "unknown_provider", f"no provider called {name!r}")
        body = await body_of(request)
        if isinstance(body, Response):
            return body
        try:
            verify_callback(name, registry.config.vendors.get(name), request.headers,
                            request.query_params, body, time.time())
        except SignatureError as exc:
            return refuse(401, "bad_signature", f"{name} callback: {exc}")
        try:
            tokens = adapter.receipts(dict(request.headers), body)
        except ValueError as exc:
            return refuse(400, "malformed", f"{name} callback: {exc}")
        acks, refused, unfits = [], 0, []
        now = time.time()
        for text in tokens:
            try:
                ack = signer.verify(text, "RECEIPT").ack(now)
            except TokenError:
                refused += 1
                continue
            why = unfit(codec, ack, now)
            # a receipt counts only from the provider it went to (an invalid ack has none)
            if (why is None or why[0] == "over_cap") and provider_of(ack) != name:
                refused += 1
            elif why is not None:
                unfits.append(why)
            else:
                acks.append(ack)
        if tokens and not acks and unfits:
            return refuse(422, *unfits[0])
        if tokens and not acks:
            return refuse(403, "bad_token", f"none of {len(tokens)} receipt tokens is valid")
        if refused:
            REFUSED.labels("bad_token").inc(refused)
        for reason, _ in unfits:
            REFUSED.labels(reason).inc()
        fresh = first_time(acks)
        failed = await written(fresh) if fresh else None
        if failed:
            forget(fresh)
            return failed
        return JSONResponse({"recorded": len(fresh), "repeated": len(acks) - len(fresh),
                             "refused": refused})

    async def read_token(request: Request) -> Any:
        text = request.path_params["token"]
        if len(text) > MAX_LENGTH:
            return refuse(414, "too_large", f"token over {MAX_LENGTH} characters")
        if not tokens_used.allows(text):
            return refuse(429, "rate_limited", "this link is being opened too often")
        try:
            return signer.verify(text, "READ")
        except TokenError as exc:
            return refuse(403, "bad_token", str(exc))

    async def link(request: Request) -> Response:
        """A tracked link opened (GET or HEAD): a page whose button records the read; nothing
        is recorded here, so mail scanners and link previews that fetch it read nothing.
        ---
        summary: The tracked link's page (records nothing; its button POSTs the read)
        responses:
          200: {description: the page}
          403: {description: forged, expired or not a read token}
          414: {description: token too long}
          429: {description: this link opened too often, or too many requests from this address}
        """
        token = await read_token(request)
        if isinstance(token, Response):
            return token
        action = html.escape(request.url.path, quote=True)
        page = (f"<!doctype html><html><head><meta charset=utf-8><meta name=viewport "
                f"content='width=device-width'><meta name=robots content=noindex>"
                f"<title>Open message</title></head><body><form method=post action='{action}'>"
                f"<p>{html.escape(str(token.channel))} message</p>"
                f"<button type=submit>Open</button></form></body></html>")
        return HTMLResponse(page, headers=PAGE_HEADERS)

    async def read(request: Request) -> Response:
        """A person's read action (the link page's button, the app's button or reply): one READ.
        ---
        summary: A read action (the link page's button, the app's button or reply), one READ
        responses:
          200: {description: recorded (the app's POST /read; the link page's button when the
            message has no link it may lead to)}
          303: {description: recorded; on to the message's link (the link page's button)}
          403: {description: forged, expired or not a read token}
          414: {description: token too long}
          422: {description: the token's ack is not a valid Ack or breaks a cap (the field named)}
          429: {description: this link used too often, or too many requests from this address}
          503: {description: the broker did not acknowledge; try again}
        """
        token = await read_token(request)
        if isinstance(token, Response):
            return token
        now = time.time()
        ack = token.ack(now)
        why = unfit(codec, ack, now)
        if why is not None:
            return refuse(422, *why)
        fresh = first_time([ack])
        repeat = not fresh
        if fresh:
            failed = await written(fresh)
            if failed:
                forget(fresh)
                return failed
        if request.url.path.startswith("/r/") and config.allows_link(token.link):
            return RedirectResponse(str(token.link), status_code=303)
        if request.url.path.startswith("/r/"):
            return HTMLResponse(f"<p>Thank you: {html.escape(token.channel)} message read.</p>",
                                headers=PAGE_HEADERS)
        return JSONResponse({"recorded": not repeat})

    async def healthz(_: Request) -> Response:
        """Liveness.
        ---
        summary: Liveness
        """
        return JSONResponse({"status": "ok"})

    async def readyz(_: Request) -> Response:
        """Readiness: the broker answers metadata requests.
        ---
        summary: Readiness (the broker answers)
        responses:
          200: {description: ready}
          503: {description: no broker}
        """
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(None, lambda: writer.producer.list_topics(timeout=2))
        except Exception as exc:  # its text names the brokers: logged, never answered
            log.warning("not ready: the broker did not answer: %s", exc)
            return JSONResponse({"status": "not ready"}, status_code=503)
        return JSONResponse({"status": "ready"})

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        await writer.start()
        try:
            yield
        finally:
            await writer.stop()

    routes = [
        Route("/callbacks/{provider}", callback, methods=["POST"]),
        Route("/r/{token}", link, methods=["GET"]),  # and HEAD
        Route("/r/{token}", read, methods=["POST"]),
        Route("/read/{token}", read, methods=["POST"]),
        Route("/healthz", healthz),
        Route("/readyz", readyz),
    ]
    return Starlette(routes=routes, lifespan=lifespan,
                     middleware=[Middleware(ClientRate, limits=clients)])


class ClientRate:
    """ASGI middleware: 429 for a client address over its rate (PUSHCASCADE_GATEWAY_CLIENT_RATE)."""

    def __init__(self, app: ASGIApp, limits: Limits) -> None:
        self.app, self.limits = app, limits

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            address = (scope.get("client") or ("?", 0))[0]
            if not self.limits.allows(address):
                response = refuse(429, "rate_limited", "too many requests from this address")
                response.headers["Retry-After"] = "1"
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def admin_app(public: Starlette) -> Starlette:
    """The gateway's private port: Prometheus metrics and the public app's OpenAPI description."""

    async def metrics(_: Request) -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    async def openapi(_: Request) -> Response:
        return JSONResponse(SCHEMAS.get_schema(routes=public.routes))

    return Starlette(routes=[Route("/metrics", metrics), Route("/openapi.json", openapi)])

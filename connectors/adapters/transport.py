"""The adapters' transports: httpx's API over aiohttp's HTTP/1.1 pool (or, for APNs, our HTTP/2
connections: connectors/adapters/http2.py).

Measured against the provider simulator with 500 calls in flight (README, Benchmarks): httpx's
own HTTP/1.1 pool made 133 calls/s, aiohttp 2,043/s, httpx over this transport 1,888/s. The
adapters keep httpx's API; aiohttp's errors become httpx's, so what may have reached the vendor
stays told apart from what cannot have (connectors.adapters.http.NOT_SENT)."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

import aiohttp
import httpx
from httpx._client import USE_CLIENT_DEFAULT, UseClientDefault
from httpx._content import encode_request  # httpx's own body encodings (form, JSON, bytes)
from httpx._types import (
    AuthTypes,
    CookieTypes,
    HeaderTypes,
    QueryParamTypes,
    RequestContent,
    RequestData,
    RequestExtensions,
    RequestFiles,
    TimeoutTypes,
)

from connectors.adapters.http2 import Http2Transport

Headers = list[tuple[str, str]]


@functools.lru_cache(maxsize=4096)
def checked(url: str) -> str:
    """The URL as httpx parses and writes it; httpx.InvalidURL when it refuses it (remembered
    per URL: a vendor's send URL is one, or one per device token)."""
    return str(httpx.URL(url))


class AiohttpTransport(httpx.AsyncBaseTransport):
    """An httpx transport sending through one aiohttp session (created on first use, in the
    running loop) with at most `max_connections` connections."""

    def __init__(self, max_connections: int) -> None:
        self.max_connections = max_connections
        self._session: aiohttp.ClientSession | None = None
        self._timeouts: dict[tuple[float | None, float | None], aiohttp.ClientTimeout] = {}

    def _open(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self.max_connections, limit_per_host=0),
                cookie_jar=aiohttp.DummyCookieJar())
        return self._session

    async def exchange(self, method: str, url: str, body: bytes, headers: Headers,
                       connect: float | None, read: float | None,
                       request: httpx.Request | None = None) -> httpx.Response:
        """Send one request and read its whole answer; httpx's timeouts (connect: a connection
        from the pool or a new one; read: between bytes of the answer) and error types."""
        timeout = self._timeouts.get((connect, read))
        if timeout is None:
            timeout = self._timeouts[connect, read] = aiohttp.ClientTimeout(
                total=None, connect=connect, sock_read=read)
        try:
            async with self._open().request(method, url, data=body or None, timeout=timeout,
                                            headers=headers, allow_redirects=False) as answer:
                content = await answer.read()
        except aiohttp.InvalidURL as exc:  # refused before anything was sent
            raise httpx.LocalProtocolError(str(exc), request=request) from exc
        except aiohttp.ConnectionTimeoutError as exc:  # no connection within the time: unsent
            raise httpx.ConnectTimeout(str(exc), request=request) from exc
        except aiohttp.ClientConnectorError as exc:  # refused, DNS, TLS: unsent
            raise httpx.ConnectError(str(exc), request=request) from exc
        except (TimeoutError, aiohttp.SocketTimeoutError) as exc:  # sent, no answer
            raise httpx.ReadTimeout(str(exc), request=request) from exc
        except aiohttp.ClientError as exc:  # reset or closed mid-exchange: may have been sent
            raise httpx.ReadError(f"{type(exc).__name__}: {exc}", request=request) from exc
        # the body comes decoded (aiohttp undoes Content-Encoding): its framing headers go
        framed = [(k, v) for k, v in answer.raw_headers
                  if k.lower() not in (b"content-encoding", b"content-length")]
        return httpx.Response(answer.status, headers=framed, content=content, request=request)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Send an httpx request (httpx's timeouts from its extensions)."""
        timeouts = request.extensions.get("timeout", {})
        body = await request.aread()  # whole: aiohttp frames it (a streamed body's chunked
        headers = [(k, v) for k, v in request.headers.multi_items()  # encoding goes)
                   if k.lower() not in ("transfer-encoding", "content-length")]
        return await self.exchange(request.method, str(request.url), body, headers,
                                   timeouts.get("connect"), timeouts.get("read"), request)

    async def aclose(self) -> None:
        """Close the session and its connections."""
        if self._session is not None:
            await self._session.close()
            self._session = None


class Client(httpx.AsyncClient):
    """httpx's client whose plain requests (a body, headers, no query, auth flow, redirects,
    event hooks or cookies: every adapter's call but JPush's basic auth and WeChat's token
    query) go straight to its transport's exchange, without building an httpx Request: a
    third of the client's CPU per call."""

    def __init__(self, *, timeout: float | httpx.Timeout,
                 transport: AiohttpTransport | Http2Transport) -> None:
        super().__init__(timeout=timeout, transport=transport)
        self.exchanger = transport
        self._defaults = {k.lower(): v for k, v in self.headers.items()}

    async def request(self, method: str, url: httpx.URL | str, *,
                      content: RequestContent | None = None, data: RequestData | None = None,
                      files: RequestFiles | None = None, json: Any | None = None,
                      params: QueryParamTypes | None = None, headers: HeaderTypes | None = None,
                      cookies: CookieTypes | None = None,
                      auth: AuthTypes | UseClientDefault | None = USE_CLIENT_DEFAULT,
                      follow_redirects: bool | UseClientDefault = USE_CLIENT_DEFAULT,
                      timeout: TimeoutTypes | UseClientDefault = USE_CLIENT_DEFAULT,
                      extensions: RequestExtensions | None = None) -> httpx.Response:
        """One request (see httpx.AsyncClient.request)."""
        if (files is not None or params is not None or cookies is not None
                or auth is not USE_CLIENT_DEFAULT or follow_redirects is not USE_CLIENT_DEFAULT
                or timeout is not USE_CLIENT_DEFAULT or extensions is not None
                or not isinstance(headers, Mapping | None) or self.auth is not None
                or self.follow_redirects or str(self.base_url) or self.cookies
                or any(self.event_hooks.values()) or self.is_closed):
            return await super().request(
                method, url, content=content, data=data, files=files, json=json, params=params,
                headers=headers, cookies=cookies, auth=auth, follow_redirects=follow_redirects,
                timeout=timeout, extensions=extensions)
        target = checked(str(url))  # an address httpx refuses raises here, as through httpx
        framing, stream = encode_request(content=content, data=data, json=json)
        if not isinstance(stream, httpx.ByteStream):  # a streamed body: httpx's own path
            return await super().request(method, url, content=content, headers=headers)
        body = b"".join(stream)
        sent = {**self._defaults, **{str(k).lower(): str(v) for k, v in (headers or {}).items()}}
        for name, value in framing.items():  # as httpx: the caller's Content-Type wins
            if name != "Content-Length":  # (aiohttp frames the body itself)
                sent.setdefault(name.lower(), value)
        return await self.exchanger.exchange(method, target, body, list(sent.items()),
                                             self.timeout.connect, self.timeout.read)

"""The adapters' HTTP/1.1 transport: httpx's API over aiohttp's connection pool.

Measured against the provider simulator with 500 calls in flight (README, Benchmarks): httpx's
own HTTP/1.1 pool made 133 calls/s, aiohttp 2,043/s, httpx over this transport 1,888/s. The
adapters keep httpx's API; aiohttp's errors become httpx's, so what may have reached the vendor
stays told apart from what cannot have (connectors.adapters.http.NOT_SENT)."""

from __future__ import annotations

from typing import Any

import aiohttp
import httpx


class AiohttpTransport(httpx.AsyncBaseTransport):
    """An httpx transport sending through one aiohttp session (created on first use, in the
    running loop) with at most `max_connections` connections."""

    def __init__(self, max_connections: int) -> None:
        self.max_connections = max_connections
        self._session: aiohttp.ClientSession | None = None

    def _open(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self.max_connections, limit_per_host=0),
                cookie_jar=aiohttp.DummyCookieJar())
        return self._session

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Send one request; httpx's timeouts (connect: a connection from the pool or a new one;
        read: between bytes of the answer) and error types."""
        timeouts = request.extensions.get("timeout", {})
        timeout = aiohttp.ClientTimeout(total=None, connect=timeouts.get("connect"),
                                        sock_read=timeouts.get("read"))
        body = await request.aread()
        try:
            async with self._open().request(
                    request.method, str(request.url), data=body or None, timeout=timeout,
                    headers=list(request.headers.multi_items()),
                    allow_redirects=False) as answer:
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
        headers = [(k, v) for k, v in answer.raw_headers
                   if k.lower() not in (b"content-encoding", b"content-length")]
        return httpx.Response(answer.status, headers=headers, content=content, request=request)

    async def aclose(self) -> None:
        """Close the session and its connections."""
        if self._session is not None:
            await self._session.close()
            self._session = None


class Client(httpx.AsyncClient):
    """httpx's client whose plain requests go straight to its transport: without an auth
    flow, redirects, event hooks or cookies (the adapters use none of them but JPush's basic
    auth, which takes httpx's own path) a call skips four layers of httpx per request."""

    async def send(self, request: httpx.Request, *, stream: bool = False,
                   auth: Any = httpx.USE_CLIENT_DEFAULT,
                   follow_redirects: Any = httpx.USE_CLIENT_DEFAULT) -> httpx.Response:
        """Send request, read its whole answer (see httpx.AsyncClient.send)."""
        if (stream or auth is not httpx.USE_CLIENT_DEFAULT or self.auth is not None
                or follow_redirects is True or self.follow_redirects
                or any(self.event_hooks.values())):
            return await super().send(request, stream=stream, auth=auth,
                                      follow_redirects=follow_redirects)
        if self.is_closed:
            raise RuntimeError("Cannot send a request, as the client has been closed.")
        response = await self._transport_for_url(request.url).handle_async_request(request)
        response.request = request
        await response.aread()
        return response

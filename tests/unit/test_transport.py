"""The adapters' transport (httpx's API over aiohttp's pool) on real sockets: answers come
through whole, and each failure keeps its meaning for the dispatcher: a connection refused was
never sent, a request the server took and never answered may have been."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Callable
from typing import Any, cast

import httpx
import pytest

from connectors.adapters.base import ProviderError
from connectors.adapters.http import request
from connectors.adapters.http2 import Http2Transport
from connectors.adapters.transport import AiohttpTransport, Client

Make = Callable[..., httpx.AsyncClient]


def generic(timeout: float = 2.0) -> httpx.AsyncClient:
    """httpx's own request path over the transport."""
    return httpx.AsyncClient(timeout=timeout, transport=AiohttpTransport(10))


def fast(timeout: float = 2.0) -> httpx.AsyncClient:
    """The adapters' client: plain requests straight to the transport."""
    return Client(timeout=timeout, transport=AiohttpTransport(10))


def http2(timeout: float = 2.0) -> httpx.AsyncClient:
    """The APNs adapter's client: HTTP/2 (prior knowledge) through httpcore straight."""
    return Client(timeout=timeout, transport=Http2Transport())


@pytest.fixture(params=[generic, fast], ids=["httpx-path", "fast-path"])
def client(request: pytest.FixtureRequest) -> Make:
    return cast(Make, request.param)


@pytest.fixture(params=[generic, fast, http2], ids=["httpx-path", "fast-path", "http2"])
def any_client(request: pytest.FixtureRequest) -> Make:
    """Every client an adapter may send with (failures mean the same on each)."""
    return cast(Make, request.param)


async def serve(handler) -> tuple[asyncio.AbstractServer, str]:
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    return server, f"http://127.0.0.1:{port}"


async def streamed() -> AsyncIterator[bytes]:
    """A request body given in chunks."""
    yield b"first,"
    yield b"second"


@pytest.mark.parametrize(("sent", "got"), [({"data": {"a": "b"}}, "a=b"),
                                           ({"content": streamed}, "first,second")],
                         ids=["form", "streamed"])
def test_an_answer_comes_through_whole(client: Make, sent: dict[str, Any], got: str) -> None:
    """The body arrives whole and framed once (a streamed one keeps no chunked header beside
    its length), the answer comes back whole."""
    async def main() -> None:
        async def handler(reader, writer) -> None:
            head = await reader.readuntil(b"\r\n\r\n")
            assert b"transfer-encoding" not in head.lower(), head
            length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                              if line.lower().startswith(b"content-length")))
            body = await reader.readexactly(length)
            answer = b'{"Code":"OK","got":"' + body + b'"}'
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nX-Id: 7\r\n"
                         b"Content-Length: %d\r\n\r\n%s" % (len(answer), answer))
            await writer.drain()
            writer.close()

        server, url = await serve(handler)
        body = {k: v() if callable(v) else v for k, v in sent.items()}
        async with server, client() as http:
            answer = await request(http, "POST", f"{url}/", **body)
        assert answer.status_code == 200
        assert answer.headers["x-id"] == "7"
        assert answer.json() == {"Code": "OK", "got": got}

    asyncio.run(main())


def test_a_refused_connection_was_not_sent(any_client: Make) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]

    async def main() -> None:
        async with any_client() as http:
            with pytest.raises(ProviderError) as caught:
                await request(http, "POST", f"http://127.0.0.1:{port}/", data={"a": "b"})
        assert caught.value.code == "UNREACHABLE" and not caught.value.ambiguous

    asyncio.run(main())


@pytest.mark.parametrize("hang_up", [False, True])
def test_a_request_taken_and_never_answered_may_have_been_sent(any_client: Make,
                                                              hang_up: bool) -> None:
    async def main() -> None:
        async def handler(reader, writer) -> None:
            await reader.readuntil(b"\r\n\r\n")
            if hang_up:  # the connection dies mid-exchange
                writer.close()
                return
            await asyncio.sleep(5)  # no answer within the read timeout

        server, url = await serve(handler)
        async with server, any_client(timeout=0.5) as http:
            with pytest.raises(ProviderError) as caught:
                await request(http, "POST", f"{url}/", data={"a": "b"})
        assert caught.value.ambiguous and caught.value.retryable
        assert caught.value.code == ("UNREACHABLE" if hang_up else "TIMEOUT")

    asyncio.run(main())


@pytest.mark.parametrize("body", [
    {"json": {"to": "用户", "n": 1.5}}, {"data": {"a": "b c", "d": "~é"}},
    {"content": b"raw", "headers": {"Content-Type": "text/x"}},
    {"json": [1], "headers": {"content-type": "application/x+json", "X-Trace": "7"}}])
def test_the_fast_path_sends_what_httpx_sends(body: dict[str, Any]) -> None:
    """Same method, path, headers (names are case-free) and body bytes on the wire."""
    async def main() -> list[tuple[bytes, set[tuple[str, str]], bytes]]:
        seen: list[tuple[bytes, set[tuple[str, str]], bytes]] = []

        async def handler(reader, writer) -> None:
            head = await reader.readuntil(b"\r\n\r\n")
            start, *lines = head.decode().split("\r\n")
            headers = {tuple(part.strip().lower() for part in line.split(":", 1))
                       for line in lines if line}
            length = int(dict(headers).get("content-length", "0"))
            seen.append((start.encode(), headers, await reader.readexactly(length)))
            writer.write(b"HTTP/1.1 204 No Content\r\n\r\n")
            await writer.drain()
            writer.close()

        server, url = await serve(handler)
        async with server:
            for make in (generic, fast):
                async with make() as http:
                    assert (await request(http, "POST", f"{url}/p", **body)).status_code == 204
        return seen

    (start, headers, sent), again = asyncio.run(main())
    assert again == (start, headers, sent)


@pytest.mark.parametrize("make", [generic, fast, http2], ids=["httpx-path", "fast-path", "http2"])
def test_an_address_httpx_refuses_is_refused_alike_before_anything_is_sent(make: Make) -> None:
    """A push token no URL can carry is a permanent error of the send, never a retry."""
    async def main() -> None:
        async with make() as http:
            with pytest.raises(httpx.InvalidURL):
                await request(http, "POST", "http://127.0.0.1:9/3/device/tok\x01en", json={})

    asyncio.run(main())


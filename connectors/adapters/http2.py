"""The APNs adapter's HTTP/2 transport: asyncio and the h2 protocol library, one connection per
origin; the requests started in one turn of the loop leave in one socket write.

Measured with the APNs adapter's calls to one simulator process, 500 in flight, alternated
three times: httpx's HTTP/2 client 818-842 calls/s, this transport 2,107-2,204/s (aiohttp's
HTTP/1.1 pool 2,776-3,148/s). h2's own work is ~180 µs a request; httpx's cost was httpcore's
anyio locks and cancel scopes, three socket writes per request and httpx's layers.

What a failure means is kept as the dispatcher needs it (connectors.adapters.http.NOT_SENT): no
connection, or a stream the server refused unprocessed (REFUSED_STREAM, or past a GOAWAY's last
stream), was never acted on; a connection lost or a stream reset after the request went out, or
no answer in time, may have been."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from dataclasses import dataclass, field
from typing import cast
from urllib.parse import urlsplit

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import httpx

Headers = list[tuple[str, str]]
Origin = tuple[str, str, int]  # scheme, host, port
#: Headers HTTP/2 forbids or frames itself (RFC 9113 8.2.2; :authority stands for Host).
CONNECTION_HEADERS = frozenset({"host", "connection", "keep-alive", "proxy-connection",
                                "transfer-encoding", "upgrade", "content-length"})
#: Our receive window per connection: answers are small, but 500 streams' worth must fit.
RECEIVE_WINDOW = 2 ** 24


class StreamRefused(httpx.ConnectError):
    """The server refused the stream before acting on it (REFUSED_STREAM, or a stream beyond a
    GOAWAY's last stream id): nothing of the request was processed."""


@dataclass
class _Stream:
    answer: asyncio.Future[tuple[int, list[tuple[bytes, bytes]], bytes]]
    status: int = 0
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    chunks: list[bytes] = field(default_factory=list)


class _Connection(asyncio.Protocol):
    """One HTTP/2 connection: its streams, their answers and the request bodies flow control
    holds back."""

    def __init__(self) -> None:
        self.h2 = h2.connection.H2Connection(h2.config.H2Configuration(
            client_side=True, header_encoding=None))
        self.streams: dict[int, _Stream] = {}
        self.held: dict[int, memoryview] = {}  # request bytes waiting for window
        self.room = asyncio.Event()  # a stream ended or the peer allowed more
        self.transport: asyncio.Transport | None = None
        self.usable = True  # False once closed, lost or told to go away
        self.flushing = False  # a write is scheduled

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Send the preface and settings; widen our receive window."""
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self.h2.initiate_connection()
        self.h2.increment_flow_control_window(RECEIVE_WINDOW)
        self._write()

    def data_received(self, data: bytes) -> None:
        """Feed the bytes to h2 and act on its events."""
        try:
            events = self.h2.receive_data(data)
        except h2.exceptions.ProtocolError as exc:
            self._fail_all(httpx.RemoteProtocolError(f"HTTP/2 protocol error: {exc}"))
            if self.transport is not None:
                self.transport.close()
            return
        for event in events:
            self._on(event)
        self._write()

    def connection_lost(self, exc: Exception | None) -> None:
        """Every open stream may have been acted on: ambiguous."""
        self._fail_all(httpx.ReadError(f"connection lost: {exc or 'closed by the peer'}"))

    def _on(self, event: h2.events.Event) -> None:
        if isinstance(event, h2.events.ResponseReceived):
            if (stream := self.streams.get(event.stream_id)) is not None:
                stream.headers = list(event.headers)
        elif isinstance(event, h2.events.DataReceived):
            if (stream := self.streams.get(event.stream_id)) is not None:
                stream.chunks.append(event.data)
            self.h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
        elif isinstance(event, h2.events.StreamEnded):
            self._end(event.stream_id, None)
        elif isinstance(event, h2.events.StreamReset):
            refused = event.error_code == h2.errors.ErrorCodes.REFUSED_STREAM
            self._end(event.stream_id, (StreamRefused if refused else httpx.ReadError)(
                f"stream reset by the server ({event.error_code!r})"))
        elif isinstance(event, h2.events.ConnectionTerminated):
            self.usable = False
            last = event.last_stream_id or 0
            for sid in [s for s in self.streams if s > last]:
                self._end(sid, StreamRefused(f"beyond the GOAWAY's last stream {last}"))
        elif isinstance(event, (h2.events.WindowUpdated, h2.events.RemoteSettingsChanged)):
            self._send_held()
            self.room.set()

    def _end(self, sid: int, error: Exception | None) -> None:
        stream = self.streams.pop(sid, None)
        self.held.pop(sid, None)
        self.room.set()
        if stream is None or stream.answer.done():
            return
        if error is not None:
            stream.answer.set_exception(error)
            return
        status = next((int(v) for k, v in stream.headers if k == b":status"), 0)
        stream.answer.set_result((status, [(k, v) for k, v in stream.headers
                                           if not k.startswith(b":")], b"".join(stream.chunks)))

    def _fail_all(self, error: Exception) -> None:
        self.usable = False
        for sid in list(self.streams):
            self._end(sid, error)

    def _send_held(self) -> None:
        for sid in list(self.held):
            view = self.held[sid]
            while view:
                window = min(self.h2.local_flow_control_window(sid),
                             self.h2.max_outbound_frame_size)
                if window <= 0:
                    break
                self.h2.send_data(sid, bytes(view[:window]), end_stream=len(view) <= window)
                view = view[window:]
            if view:
                self.held[sid] = view
            else:
                del self.held[sid]

    def _write(self) -> None:
        """Write what h2 has to send once the loop's current callbacks ran: the requests
        started meanwhile go out in one socket write."""
        if not self.flushing:
            self.flushing = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self.flushing = False
        out = self.h2.data_to_send()
        if out and self.transport is not None and not self.transport.is_closing():
            self.transport.write(out)

    def open_streams(self) -> int:
        """Streams sent and not yet answered."""
        return len(self.streams)

    def start(self, headers: list[tuple[bytes, bytes]], body: bytes) -> tuple[int, _Stream]:
        """Write one request (its headers and as much of its body as the windows allow)."""
        sid = self.h2.get_next_available_stream_id()
        stream = _Stream(asyncio.get_running_loop().create_future())
        self.streams[sid] = stream
        self.h2.send_headers(sid, headers, end_stream=not body)
        if body:
            self.held[sid] = memoryview(body)
            self._send_held()
        self._write()
        return sid, stream

    def cancel(self, sid: int) -> None:
        """Give up on a stream (its answer came too late, or its task was cancelled)."""
        if self.streams.pop(sid, None) is not None and self.usable:
            self.held.pop(sid, None)
            with contextlib.suppress(h2.exceptions.ProtocolError):  # closed on its side
                self.h2.reset_stream(sid, h2.errors.ErrorCodes.CANCEL)
            self._write()
        self.room.set()


class Http2Transport(httpx.AsyncBaseTransport):
    """An httpx transport over one HTTP/2 connection per origin (h2 prior knowledge on
    http://, ALPN h2 on https://), opened on first use and again after it is lost."""

    def __init__(self) -> None:
        self._connections: dict[Origin, _Connection] = {}
        self._connecting: dict[Origin, asyncio.Lock] = {}

    async def _connection(self, origin: Origin, timeout: float | None) -> _Connection:
        known = self._connections.get(origin)
        if known is not None and known.usable:
            return known
        async with self._connecting.setdefault(origin, asyncio.Lock()):
            known = self._connections.get(origin)
            if known is not None and known.usable:
                return known
            scheme, host, port = origin
            tls: ssl.SSLContext | None = None
            if scheme == "https":
                tls = ssl.create_default_context()
                tls.set_alpn_protocols(["h2"])
            loop = asyncio.get_running_loop()
            try:
                async with asyncio.timeout(timeout):
                    transport, connection = await loop.create_connection(
                        _Connection, host, port, ssl=tls, server_hostname=host if tls else None)
            except TimeoutError as exc:
                raise httpx.ConnectTimeout(f"no connection to {host}:{port}") from exc
            except OSError as exc:
                raise httpx.ConnectError(f"{host}:{port}: {exc}") from exc
            agreed = transport.get_extra_info("ssl_object")
            if agreed is not None and agreed.selected_alpn_protocol() != "h2":
                transport.close()
                raise httpx.ConnectError(f"{host}:{port} does not speak HTTP/2")
            self._connections[origin] = connection
            return connection

    async def exchange(self, method: str, url: str, body: bytes, headers: Headers,
                       connect: float | None, read: float | None) -> httpx.Response:
        """Send one request and read its whole answer; httpx's timeouts and error types."""
        target = urlsplit(url)  # checked by httpx already (transport.checked)
        scheme, host = target.scheme, target.hostname or ""
        origin = (scheme, host, target.port or (443 if scheme == "https" else 80))
        try:  # a usable connection with a free stream within the connect timeout, or the
            async with asyncio.timeout(connect):  # request was never sent
                while True:
                    connection = await self._connection(origin, connect)
                    if (connection.open_streams()
                            < connection.h2.remote_settings.max_concurrent_streams):
                        break
                    connection.room.clear()
                    await connection.room.wait()
        except TimeoutError as exc:
            raise httpx.PoolTimeout("no usable HTTP/2 connection or free stream in time") from exc
        path = (target.path or "/") + (f"?{target.query}" if target.query else "")
        sent = [(b":method", method.encode()), (b":scheme", scheme.encode()),
                (b":authority", target.netloc.encode()), (b":path", path.encode()),
                *((k.lower().encode(), v.encode()) for k, v in headers
                  if k.lower() not in CONNECTION_HEADERS),
                (b"content-length", str(len(body)).encode())]
        try:
            sid, stream = connection.start(sent, body)
        except h2.exceptions.ProtocolError as exc:  # it began closing meanwhile: nothing sent
            connection.usable = False
            raise StreamRefused(f"the connection is closing: {exc}") from exc
        try:
            async with asyncio.timeout(read):
                status, answer, content = await asyncio.shield(stream.answer)
        except TimeoutError as exc:
            connection.cancel(sid)
            raise httpx.ReadTimeout("no answer in time") from exc
        except asyncio.CancelledError:
            connection.cancel(sid)
            raise
        return httpx.Response(status, headers=answer, content=content)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Send an httpx request (httpx's timeouts from its extensions)."""
        timeouts = request.extensions.get("timeout", {})
        return await self.exchange(request.method, str(request.url), await request.aread(),
                                   list(request.headers.items()), timeouts.get("connect"),
                                   timeouts.get("read"))

    async def aclose(self) -> None:
        """Close every connection."""
        for connection in self._connections.values():
            if connection.transport is not None:
                connection.transport.close()
        self._connections.clear()

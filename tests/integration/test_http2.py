"""The APNs adapter's HTTP/2 transport on real sockets: flow control and the server's stream limit
hold a request back but never lose it, and a stream the server refused unprocessed is told
apart from one it may have acted on."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.settings
import httpx
import pytest
import uvloop

from connectors.adapters.base import ProviderError
from connectors.adapters.http import request
from connectors.adapters.http2 import Http2Transport
from connectors.adapters.transport import Client
from connectors.simulator import Simulator, SimulatorSettings, SimulatorThread


def http2(timeout: float = 10.0) -> Client:
    return Client(timeout=timeout, transport=Http2Transport())


Answer = Callable[[h2.connection.H2Connection, h2.events.Event], None]


@contextlib.asynccontextmanager
async def h2_server(answer: Answer, max_streams: int | None = None) -> AsyncIterator[str]:
    """An HTTP/2 server on loopback acting on each event with `answer`; its base URL."""
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
        if max_streams is not None:
            conn.local_settings = h2.settings.Settings(client=False, initial_values={
                h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: max_streams})
        conn.initiate_connection()
        writer.write(conn.data_to_send())
        while data := await reader.read(65536):
            for event in conn.receive_data(data):
                answer(conn, event)
            writer.write(conn.data_to_send())
            await writer.drain()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    async with server:
        yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"


async def refused_by(answer: Answer, timeout: float = 3.0) -> ProviderError:
    """The ProviderError of one APNs-shaped request to an h2_server acting with `answer`."""
    async with h2_server(answer) as url, http2(timeout=timeout) as http:
        with pytest.raises(ProviderError) as caught:
            await request(http, "POST", f"{url}/3/device/x", json={})
    return caught.value


@pytest.fixture(scope="module")
def simulator():
    sim = Simulator(SimulatorSettings(port=0, seed=1))
    with SimulatorThread(sim) as thread:
        yield thread


@pytest.mark.parametrize("run", [asyncio.run, uvloop.run], ids=["asyncio", "uvloop"])
def test_a_body_larger_than_the_flow_control_window_arrives_whole(simulator, run) -> None:
    """On both event loops the services run on (the dispatcher's is uvloop)."""
    body = b"x" * 300_000  # the peer's initial window is 65,535 bytes

    async def main() -> int:
        async with http2() as http:
            answer = await request(http, "POST", f"{simulator.url}/apns/3/device/big",
                                   content=body, headers={"apns-topic": "t"})
            return answer.status_code

    assert run(main()) == 403  # no provider token: refused, after reading it all
    recorded = [r for r in simulator.sim.journal if r.path == "/apns/3/device/big"]
    assert len(recorded[-1].body) == len(body) and recorded[-1].http_version == "2"


def test_more_requests_than_the_server_allows_streams_are_all_answered() -> None:
    """A server allowing 5 concurrent streams, 60 requests at once: they wait for a stream."""

    def answer(conn: h2.connection.H2Connection, event: h2.events.Event) -> None:
        if isinstance(event, h2.events.StreamEnded):
            conn.send_headers(event.stream_id, [(":status", "200")], end_stream=True)

    async def main() -> list[int]:
        async with h2_server(answer, max_streams=5) as url, http2() as http:
            await request(http, "POST", f"{url}/x", json={})  # its settings known
            answers = await asyncio.gather(*(request(http, "POST", f"{url}/x", json={"i": i})
                                             for i in range(60)))
        return [a.status_code for a in answers]

    assert asyncio.run(main()) == [200] * 60


@pytest.mark.parametrize("how", ["reset", "goaway"])
def test_a_stream_refused_unprocessed_was_not_sent(how: str) -> None:
    """REFUSED_STREAM, or a GOAWAY whose last stream is before ours: the request may be sent
    again safely (not ambiguous)."""

    def answer(conn: h2.connection.H2Connection, event: h2.events.Event) -> None:
        if isinstance(event, h2.events.RequestReceived):
            if how == "reset":
                conn.reset_stream(event.stream_id, h2.errors.ErrorCodes.REFUSED_STREAM)
            else:
                conn.close_connection(last_stream_id=0)

    refused = asyncio.run(refused_by(answer))
    assert refused.retryable and not refused.ambiguous, refused


def test_a_stream_reset_after_the_request_went_out_may_have_been_acted_on() -> None:
    def answer(conn: h2.connection.H2Connection, event: h2.events.Event) -> None:
        if isinstance(event, h2.events.StreamEnded):
            conn.reset_stream(event.stream_id, h2.errors.ErrorCodes.INTERNAL_ERROR)

    reset = asyncio.run(refused_by(answer))
    assert reset.retryable and reset.ambiguous, reset


def test_a_lost_connection_is_replaced_for_the_next_request(simulator) -> None:
    async def main() -> list[int]:
        transport = Http2Transport()
        async with Client(timeout=5.0, transport=transport) as http:
            first = await request(http, "GET", f"{simulator.url}/_control/health")
            for connection in transport._connections.values():  # the peer hangs up
                assert connection.transport is not None
                connection.transport.abort()
            await asyncio.sleep(0.1)
            second = await request(http, "GET", f"{simulator.url}/_control/health")
            return [first.status_code, second.status_code]

    assert asyncio.run(main()) == [200, 200]


def test_after_a_goaway_the_next_request_goes_on_a_new_connection() -> None:
    """APNs sends GOAWAY when it shuts a connection down: the streams it took are answered,
    the next request opens a new connection."""
    connections = []

    def answer(conn: h2.connection.H2Connection, event: h2.events.Event) -> None:
        if isinstance(event, h2.events.StreamEnded):
            conn.send_headers(event.stream_id, [(":status", "200")], end_stream=True)
            conn.close_connection(last_stream_id=event.stream_id)
            connections.append(conn)

    async def main() -> list[int]:
        async with h2_server(answer) as url, http2() as http:
            return [(await request(http, "POST", f"{url}/x", json={})).status_code
                    for _ in range(3)]

    assert asyncio.run(main()) == [200, 200, 200]
    assert len(set(map(id, connections))) == 3


def test_an_unanswered_request_times_out_ambiguous_and_frees_its_stream() -> None:
    async def main() -> tuple[ProviderError, int]:
        transport = Http2Transport()
        async with (h2_server(lambda conn, event: None) as url,  # takes requests, answers none
                    Client(timeout=0.5, transport=transport) as http):
            with pytest.raises(ProviderError) as caught:
                await request(http, "POST", f"{url}/3/device/x", json={})
            left = sum(c.open_streams() for c in transport._connections.values())
        return caught.value, left

    timed_out, left = asyncio.run(main())
    assert timed_out.code == "TIMEOUT" and timed_out.ambiguous and left == 0


def test_an_https_origin_that_does_not_offer_http2_is_refused_unsent() -> None:
    with pytest.raises(httpx.ConnectError):
        asyncio.run(Http2Transport().exchange("POST", "https://127.0.0.1:9/x", b"", [], 1.0, 1.0))

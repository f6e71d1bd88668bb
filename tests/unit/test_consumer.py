"""The worker's Faust consumer: what it acknowledges, and reading a partition again."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import faust
import faust.streams
import pytest
from faust.types import TP
from faust.types.tuples import ConsumerMessage

from streams.app import ReadOffsets, create_app
from streams.settings import Settings

TOPIC = "t-push.requests"


@pytest.fixture
def app(tmp_path) -> Iterator[faust.App]:
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    app = create_app(Settings(topic_prefix="t-", data_dir=str(tmp_path)), "127.0.0.1:1")
    app.topics.add(app.topic(TOPIC))  # an acknowledged topic, as an agent's source is
    loop.run_until_complete(app.topics._update_indices())
    app.flow_control.resume()
    yield app
    asyncio.set_event_loop(None)
    loop.close()


def _message(app: faust.App, offset: int, generation: int | None = None) -> ConsumerMessage:
    gen = app.consumer_generation_id if generation is None else generation
    return ConsumerMessage(TOPIC, 0, offset, 0.0, 0, [], b"k", b"v", None, 1, 1, TP(TOPIC, 0),
                           generation_id=gen)


def test_a_handled_message_of_the_current_generation_is_acknowledged(app) -> None:
    consumer = app.consumer
    assert consumer.ack(_message(app, 5)) is True
    assert list(consumer._acked[TP(TOPIC, 0)]) == [5]


def test_a_message_read_before_the_latest_rebalance_is_not_acknowledged(app) -> None:
    # Faust's stream acknowledges such a message without handling it; an ack would let the
    # commit cover a record nobody handled
    consumer = app.consumer
    app.consumer_generation_id = 3
    old = _message(app, 7, generation=2)
    assert consumer.ack(old) is False
    assert old.acked  # done with, so a rebalance does not wait for it
    assert not consumer._acked.get(TP(TOPIC, 0))
    assert consumer.ack(_message(app, 8, generation=3)) is True


def test_nothing_is_acknowledged_while_flow_is_suspended(app) -> None:
    app.flow_control.suspend()
    assert app.consumer.ack(_message(app, 9)) is False
    assert not app.consumer._acked.get(TP(TOPIC, 0))


def test_streams_acknowledge_through_the_consumer() -> None:
    # the compiled stream iterator inlines Consumer.ack, past the check above
    assert faust.streams._CStreamIterator is None


def test_a_read_offset_never_makes_faust_drop_a_record_read_again() -> None:
    offsets = ReadOffsets(lambda: None)
    tp = TP(TOPIC, 0)
    offsets[tp] = 120
    # Faust's fetch loop drops a record below offsets[tp]: after a seek back to 100 the rest of
    # an older batch raised it to 120, and records 100..119 would be dropped unhandled
    assert offsets[tp] is None
    assert offsets.get(tp) == 120  # what was read last, for the idle watch

"""Fuzz the router's per-record path, `Router.handle` of a real (unstarted) Router: decode,
expected record, caps at the record's time, the owner partition, then the handler. Any bytes
on any input topic get exactly one defined outcome: a dead letter with its reason, a forward to
the owner partition, or the handler's effects; a valid record is never dead-lettered but for
the handler's own refusal, and an invalid one never reaches state."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections import deque
from collections.abc import Iterator
from typing import Any

import faust
import pytest
from faust.types.tuples import Message
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas import SchemaError, enforce_caps, key_partition
from streams.privacy import masked
from streams.router import FORWARDED, INPUTS, Router
from streams.settings import Settings
from tests.fuzz.counts import examples, outcome, target
from tests.fuzz.strategies import CODEC, NOW, wire
from tests.fuzz.test_fuzz_handlers import INPUTS as RECORDS
from tests.fuzz.test_fuzz_handlers import STAMPED

pytestmark = pytest.mark.broker
FUZZ = settings(max_examples=examples(50), deadline=None, suppress_health_check=[
    HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture])
OUTSIDE = [t for t in INPUTS if t != FORWARDED]
SOURCES = [*OUTSIDE, "campaign.decisions", "", "push.sends", "nope"]
STATE_BYTES = 64 * 1024


@pytest.fixture(scope="module")
def router(broker: Any) -> Iterator[Router]:
    """A real Router on the test broker, never started: `handle` is called directly."""
    settings_ = Settings(kafka_bootstrap_servers=broker.bootstrap,
                         topic_prefix=f"fz{uuid.uuid4().hex[:8]}.")
    router_ = Router(settings_, broker.bootstrap)
    yield router_
    router_.outbox.producer.close()  # before the broker stops (it would retry to connect)


@st.composite
def _input(draw: st.DrawFn, partitions: int) -> tuple[str, str, int, bytes | None, float]:
    """(topic, source header, partition, value, timestamp s) of one message a worker reads."""
    topic = draw(st.sampled_from([*INPUTS, *OUTSIDE]))
    source = draw(st.sampled_from(SOURCES)) if topic == FORWARDED else topic
    valid = [k for k in RECORDS if k[0] == source]
    if valid and draw(st.integers(0, 2)):
        name = valid[0][1]
        record = CODEC.validate(name, draw(RECORDS[valid[0]]))
        if name in STAMPED:
            record[STAMPED[name]] = round(NOW * 1000) + draw(st.integers(-86_400_000,
                                                                         86_400_000))
        value: bytes | None = CODEC.encode(name, record)
        owner = key_partition(record["account_id"], partitions) if "account_id" in record \
            else 0
        partition = draw(st.sampled_from([owner, owner, draw(st.integers(0, partitions - 1))]))
    else:
        value = draw(st.one_of(wire(), st.none()))
        partition = draw(st.integers(0, partitions - 1))
    stamp = draw(st.one_of(st.just(NOW), st.floats(NOW - 86_400, NOW + 86_400),
                           st.sampled_from([0.0, -1.0, 946_684_799.0, 4e12])))
    return topic, source, partition, value, stamp


def _valid(source: str, value: bytes | None, expected: dict[str, str], now: float) -> bool:
    """Independently of the router: whether the record is one its input topic may carry."""
    try:
        name, record = CODEC.decode_named(value, source)
        enforce_caps(source, name, record, now)
    except SchemaError:
        return False
    return expected.get(source) == name and (name == "CampaignDecision"
                                             or bool(record.get("account_id")))


def _reset(router: Router) -> None:
    """A fresh worker's memory: no batch, no pending writes, no campaign waits."""
    state = router.state
    state.event = None
    state.dirty.clear()
    state.flushing.clear()
    router.waits.clear()
    router.tallies.clear()


def test_any_input_has_one_defined_outcome(router: Router) -> None:
    loop = asyncio.new_event_loop()
    prefix, partitions = router.prefix, router.partitions
    offsets = iter(range(10**12))

    @FUZZ
    @given(st.lists(_input(partitions), min_size=1, max_size=8))
    @target("router.handle")
    def run(inputs: list[tuple[str, str, int, bytes | None, float]]) -> None:
        _reset(router)
        queue = deque(inputs)
        hops = 0
        while queue:
            topic, source, partition, value, stamp = queue.popleft()
            hops += 1
            assert hops < 100, "records forwarded in a loop"
            headers = [("source", source.encode())] if topic == FORWARDED else []
            msg = Message(prefix + topic, partition, next(offsets), stamp, 0, headers,
                          b"k", value, None)
            now = stamp if stamp > 0 else None
            router.state.begin(partition)
            loop.run_until_complete(router.handle(faust.Event(router.app, b"k", value,
                                                              headers, msg)))
            assert router.state.event is not None, "handle closed the event"
            pending = router.state.event[1]
            router.state.done()
            letters, forwards, others = [], [], []
            for out_topic, _key, out_value, out_partition, out_headers in pending.outputs:
                assert out_topic.startswith(prefix)
                name = out_topic[len(prefix):]
                if name == "push.dlq":
                    letter = CODEC.decode(out_value, name, expected="DeadLetter")
                    assert letter["error"] and letter["topic"] == prefix + topic
                    assert letter["value"] == masked(CODEC, value, source)  # no address
                    letters.append(letter)
                elif name == FORWARDED:
                    header = dict(out_headers or [])["source"].decode()
                    forwards.append((FORWARDED, header, out_partition, out_value, stamp))
                else:
                    CODEC.decode(out_value, name)
                    others.append(name)
            for (table, key), written in pending.writes.items():
                text = json.dumps(written, allow_nan=False)
                assert len(text) < STATE_BYTES, (table, key)
            valid = now is not None and _valid(source, value, router.expected, now)
            if letters:
                assert len(letters) == 1 and not forwards and not others
                assert not pending.writes, "a dead-lettered record changed state"
                assert not valid or letters[0]["error"].startswith("ack for unknown"), \
                    letters[0]["error"]
                label = "dead letter" if not valid else "dead letter (handler refused)"
            elif forwards:
                assert valid and len(forwards) == 1 and not others and not pending.writes
                queue.extend(forwards)
                label = "forwarded to its owner"
            else:
                assert valid or now is None, (source, value)
                label = "applied"
            outcome("router.handle", label)

    try:
        run()
    finally:
        loop.close()

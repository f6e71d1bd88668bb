"""Fuzz the sink's row path into real ClickHouse (chDB): any bytes on an event topic end as
exactly one row (a record that decodes, ClickHouse storing what the sink framed) or one dead
letter with a reason (a bad header, an undecodable datum, a value ClickHouse refuses), never
both, never a row for a record that does not decode, and never a batch the sink retries
forever (a poison record)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Message
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from connectors.clickhouse.client import client, database
from connectors.clickhouse.migrate import Migrator
from connectors.clickhouse.sink import Sink
from connectors.clickhouse.tables import TABLES
from connectors.settings import ConnectorSettings
from schemas import SchemaError
from streams.harness import Tap
from streams.settings import Settings
from streams.topics import create_topics
from tests.fuzz.counts import examples, outcome, target
from tests.fuzz.strategies import CODEC, NOW_MS, wire

pytestmark = pytest.mark.broker
FUZZ = settings(max_examples=examples(50), deadline=None, suppress_health_check=[
    HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture])
TOPICS = sorted(TABLES)


@pytest.fixture(scope="module")
def sink(broker: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sink]:
    """A real Sink on migrated chDB tables and the test broker (for its dead letters); its
    consume loop is not run. Rows stay countable per offset: merges are stopped and an insert
    does not collapse rows of one key (the tables' dedupe is not what is fuzzed here)."""
    settings_ = Settings(kafka_bootstrap_servers=broker.bootstrap,
                         topic_prefix=f"fz{uuid.uuid4().hex[:8]}.")
    create_topics(settings_, broker.bootstrap)
    dsn = f"chdb://{Path(tmp_path_factory.mktemp('fuzz-sink')) / 'chdb'}"
    Migrator(dsn).up()
    ch = client(dsn, database(dsn))
    ch.set_client_setting("optimize_on_insert", "0")
    for table in TABLES.values():
        ch.command(f"SYSTEM STOP MERGES {table.name}")
    running = Sink(settings_, ConnectorSettings(), ch, CODEC, group=f"fz-{uuid.uuid4().hex}")
    yield running
    running.inserter.shutdown()
    running.consumer.close()
    running.producer.flush(10)
    ch.close()


def _message(topic: str, partition: int, offset: int, value: bytes | None) -> Message:
    return Message(topic=topic, partition=partition, offset=offset, key=b"k", value=value)


def test_every_event_record_is_one_row_or_one_dead_letter(sink: Sink) -> None:
    offsets = iter(range(1, 10**12))

    @FUZZ
    @given(st.lists(st.sampled_from(TOPICS).flatmap(
        lambda t: st.tuples(st.just(t), wire((TABLES[t].record,)))), min_size=1, max_size=6))
    @target("sink.rows")
    def run(records: list[tuple[str, bytes]]) -> None:
        batch = [_message(sink.prefix + topic, 0, next(offsets), value)
                 for topic, value in records]
        letters = sink.dead_letters
        sink.absorb(batch)
        assert sink.flush(), "ClickHouse failed on these records: the sink would retry forever"
        letters = sink.dead_letters - letters
        rows = 0
        for msg, (topic, value) in zip(batch, records, strict=True):
            table = TABLES[topic]
            found = sink.ch.query(
                f"SELECT count() FROM {table.name} WHERE topic = %(t)s AND offset = %(o)s",
                parameters={"t": msg.topic(), "o": msg.offset()}).result_rows[0][0]
            assert found in (0, 1), f"{found} rows for one record"
            try:
                CODEC.decode(value, topic, expected=table.record)
            except SchemaError:
                assert not found, f"a row for an undecodable {table.record}: {value!r}"
                outcome("sink.rows", "undecodable: dead letter")
                continue
            rows += found
            outcome("sink.rows", "row" if found else "decodes, ClickHouse refused: dead letter")
        assert rows + letters == len(batch), (rows, letters, len(batch))

    run()


ACK = {"message_id": "m-1", "account_id": "a-1", "channel": "APP", "kind": "RECEIPT",
       "device_id": "d-1", "route": "XIAOMI", "send_id": "s-1", "acked_at": NOW_MS}


def test_a_record_with_trailing_bytes_is_a_dead_letter_not_a_row(sink: Sink) -> None:
    value = CODEC.encode("Ack", ACK) + b"\x01"
    with pytest.raises(SchemaError, match="1 trailing bytes"):
        CODEC.decode(value, "push.acks")
    letters, topic = sink.dead_letters, sink.prefix + "push.acks"
    sink.absorb([_message(topic, 1, 7, value)])
    assert sink.flush()
    rows = sink.ch.query("SELECT count() FROM acks WHERE topic = %(t)s AND partition = 1 AND "
                         "offset = 7", parameters={"t": topic}).result_rows[0][0]
    assert (rows, sink.dead_letters - letters) == (0, 1)


def test_a_varint_clickhouse_cannot_read_is_a_dead_letter_not_a_stall(sink: Sink) -> None:
    # found by the fuzz profile at 2,000 examples: fastavro reads a varint padded to 11 bytes,
    # ClickHouse's Avro parser refuses it ("Invalid Avro varint", an avro::Exception), and the
    # sink took that for an outage and retried the batch forever
    def varint(n: int, length: int = 0) -> bytes:
        z, out = (n << 1) ^ (n >> 63), bytearray()
        while z >= 0x80 or len(out) < length - 1:
            out.append(z & 0x7F | 0x80)
            z >>= 7
        return bytes(out + bytes([z]))

    good = CODEC.encode("Ack", ACK)
    value = good.replace(varint(NOW_MS), varint(NOW_MS, 11))
    assert value != good and CODEC.decode(value, "push.acks") == CODEC.decode(good, "push.acks")
    letters, topic = sink.dead_letters, sink.prefix + "push.acks"
    sink.absorb([_message(topic, 1, 9, value), _message(topic, 1, 10, good)])
    assert sink.flush()
    rows = sink.ch.query("SELECT offset FROM acks WHERE topic = %(t)s AND partition = 1 AND "
                         "offset IN (9, 10)", parameters={"t": topic}).result_rows
    assert (rows, sink.dead_letters - letters) == ([(10,)], 1)


def test_a_record_whose_string_is_not_utf8_is_a_dead_letter_not_a_row(sink: Sink) -> None:
    good = CODEC.encode("Ack", {**ACK, "message_id": "m\u00e9"})  # é is c3 a9
    value = good.replace(b"m\xc3\xa9", b"m\xc3\x28")
    with pytest.raises(SchemaError, match="UnicodeDecodeError"):
        CODEC.decode(value, "push.acks")
    letters, topic = sink.dead_letters, sink.prefix + "push.acks"
    sink.absorb([_message(topic, 1, 8, value)])
    assert sink.flush()
    rows = sink.ch.query("SELECT count() FROM acks WHERE topic = %(t)s AND partition = 1 AND "
                         "offset = 8", parameters={"t": topic}).result_rows[0][0]
    assert (rows, sink.dead_letters - letters) == (0, 1)


def test_a_record_with_a_union_branch_out_of_range_is_a_dead_letter_not_a_row(
        sink: Sink) -> None:
    good = CODEC.encode("Ack", {**ACK, "message_id": "m", "account_id": "a", "device_id": None})
    assert good[5:12] == b"\x02m\x02a\x00\x00\x00"  # ids, channel APP, kind RECEIPT, null
    value = good[:11] + b"\x04" + good[12:]  # device_id: branch 2 of [null, string]
    with pytest.raises(SchemaError, match="IndexError"):
        CODEC.decode(value, "push.acks")
    letters, topic = sink.dead_letters, sink.prefix + "push.acks"
    sink.absorb([_message(topic, 1, 9, value)])
    assert sink.flush()
    rows = sink.ch.query("SELECT count() FROM acks WHERE topic = %(t)s AND partition = 1 AND "
                         "offset = 9", parameters={"t": topic}).result_rows[0][0]
    assert (rows, sink.dead_letters - letters) == (0, 1)


def test_an_undecodable_record_near_the_size_limit_is_dead_lettered(sink: Sink) -> None:
    """Its letter would be over the producer's 1 MB limit with the value in it: the value is
    left out, its size kept, and the sink goes on."""
    value = b"\x01" + b"x" * 999_900  # bad magic; this size is produced and read back fine
    letters, topic = sink.dead_letters, sink.prefix + "push.acks"
    sink.absorb([_message(topic, 2, 0, value)])
    assert sink.flush() and sink.dead_letters - letters == 1 and not sink.undelivered
    with Tap(sink.settings, "push.dlq") as dlq:
        found = dlq.wait_for(lambda rs: any(
            (r["topic"], r["partition"], r["offset"]) == (topic, 2, 0) for r in rs), 30)
    letter = next(r for r in found if (r["topic"], r["partition"], r["offset"]) == (topic, 2, 0))
    assert (letter["value"], letter["omitted_value_bytes"]) == (None, len(value))
    assert "bad magic byte 0x01" in letter["error"] and letter["key"] == b"k"

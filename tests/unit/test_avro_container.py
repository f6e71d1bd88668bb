"""The sink's Avro container files: varints, and files that a reference reader decodes."""

from __future__ import annotations

import io

from fastavro import reader, schemaless_writer
from hypothesis import given
from hypothesis import strategies as st

from connectors.clickhouse.avro import SYNC, Container, string, varint, zigzag
from schemas import Codec


def fastavro_long(n: int) -> bytes:
    """fastavro's encoding of a long: the reference."""
    buf = io.BytesIO()
    schemaless_writer(buf, "long", n)
    return buf.getvalue()


@given(st.integers(-(2**63), 2**63 - 1))
def test_zigzag_and_varint_encode_a_long_as_avro_does(n):
    assert zigzag(n) == fastavro_long(n)
    assert varint((n << 1) ^ (n >> 63)) == fastavro_long(n)
    if n >= 0:
        assert varint(n << 1) == fastavro_long(n)  # how the sink encodes offsets and lengths


def test_a_container_of_wire_values_reads_back_with_coordinates_and_renamed_fields():
    codec = Codec()
    letters = [{"key": None, "value": b"x", "topic": "push.requests", "partition": p,
                "offset": 10**p, "error": f"bad {p}", "failed_at": 1_700_000_000_000 + p}
               for p in range(3)]
    values = [codec.encode("DeadLetter", r) for r in letters]
    container = Container(codec.writer_json(codec.schema_id("DeadLetter")), {
        "topic": "source_topic", "partition": "source_partition", "offset": "source_offset"})
    blocks = []
    for i, value in enumerate(values):
        body = string("t.push.dlq") + zigzag(2) + varint(i << 20 << 1) + value[5:]
        blocks.append(b"\x02" + varint(len(body) << 1) + body + SYNC)
    rows = list(reader(io.BytesIO(container.file(blocks))))
    assert [(r["topic"], r["partition"], r["offset"]) for r in rows] == [
        ("t.push.dlq", 2, i << 20) for i in range(3)]
    assert [(r["source_topic"], r["source_partition"], r["source_offset"], r["error"],
             r["value"]) for r in rows] == [
        ("push.requests", p, 10**p, f"bad {p}", b"x") for p in range(3)]

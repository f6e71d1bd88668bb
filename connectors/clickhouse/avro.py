"""Avro object container files built from Confluent wire-format values, for ClickHouse to
decode (`FORMAT Avro`): the sink builds no row in Python (it only checks, with the codec, that
each record decodes).

Avro's binary encoding of a record is the concatenation of its fields, so prefixing a datum
with the encoded topic, partition and offset makes it a datum of the writer schema with three
more leading fields. Each datum is its own block, so a datum never shifts its neighbours."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping

#: The Kafka coordinates every row carries, as leading Avro fields.
META_FIELDS = [{"name": "topic", "type": "string"}, {"name": "partition", "type": "int"},
               {"name": "offset", "type": "long"}]
#: One sync marker for every container this process writes (any 16 bytes will do).
SYNC = os.urandom(16)
_SMALL = [bytes([u]) for u in range(0x80)]


def varint(u: int) -> bytes:
    """Avro's base-128 varint of an unsigned value (a zigzag-encoded int or long)."""
    if u < 0x80:
        return _SMALL[u]
    if u < 0x4000:
        return bytes((u & 0x7F | 0x80, u >> 7))
    if u < 0x200000:
        return bytes((u & 0x7F | 0x80, (u >> 7) & 0x7F | 0x80, u >> 14))
    out = bytearray()
    while u >= 0x80:
        out.append(u & 0x7F | 0x80)
        u >>= 7
    out.append(u)
    return bytes(out)


def zigzag(n: int) -> bytes:
    """Avro's variable-length zigzag encoding of an int or long."""
    return varint((n << 1) ^ (n >> 63))


def string(text: str) -> bytes:
    """Avro encoding of a string."""
    data = text.encode()
    return zigzag(len(data)) + data


class Container:
    """The header of a container file for one writer schema, and files of datums."""

    def __init__(self, writer_json: str, rename: Mapping[str, str] | None = None) -> None:
        schema = json.loads(writer_json)
        fields = [dict(f, name=(rename or {}).get(f["name"], f["name"])) for f in schema["fields"]]
        schema = dict(schema, fields=META_FIELDS + fields)
        meta = {"avro.schema": json.dumps(schema).encode(), "avro.codec": b"null"}
        header = bytearray(b"Obj\x01")
        header += zigzag(len(meta))
        for key, value in meta.items():
            header += string(key) + zigzag(len(value)) + value
        header += b"\x00" + SYNC
        self.header = bytes(header)

    def file(self, blocks: Iterable[bytes]) -> bytes:
        """A container file of blocks, each `b"\\x02"` (one datum), the datum's length as a
        zigzag varint, the datum, and SYNC."""
        return self.header + b"".join(blocks)

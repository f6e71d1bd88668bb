"""Avro object container files built from Confluent wire-format values, for ClickHouse to
decode (`FORMAT Avro`): the sink never decodes a record in Python.

Avro's binary encoding of a record is the concatenation of its fields, so prefixing a datum
with the encoded topic, partition and offset makes it a datum of the writer schema with three
more leading fields. Each datum is its own block: a datum that cannot be read fails the insert
(the sink then finds it in Python and dead-letters it) without shifting its neighbours."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping

#: The Kafka coordinates every row carries, as leading Avro fields.
META_FIELDS = [{"name": "topic", "type": "string"}, {"name": "partition", "type": "int"},
               {"name": "offset", "type": "long"}]
_BLOCK_OF_ONE = b"\x02"  # zigzag(1)


def zigzag(n: int) -> bytes:
    """Avro's variable-length zigzag encoding of an int or long."""
    n = (n << 1) ^ (n >> 63)
    out = bytearray()
    while n & ~0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def string(text: str) -> bytes:
    """Avro encoding of a string."""
    data = text.encode()
    return zigzag(len(data)) + data


def coordinates(topic: bytes, partition: int, offset: int) -> bytes:
    """The leading fields of a row: `topic` already encoded with `string`."""
    return topic + zigzag(partition) + zigzag(offset)


class Container:
    """The header of a container file for one writer schema, and files of datums."""

    def __init__(self, writer_json: str, rename: Mapping[str, str] | None = None) -> None:
        schema = json.loads(writer_json)
        fields = [dict(f, name=(rename or {}).get(f["name"], f["name"])) for f in schema["fields"]]
        schema = dict(schema, fields=META_FIELDS + fields)
        self.sync = os.urandom(16)
        meta = {"avro.schema": json.dumps(schema).encode(), "avro.codec": b"null"}
        header = bytearray(b"Obj\x01")
        header += zigzag(len(meta))
        for key, value in meta.items():
            header += string(key) + zigzag(len(value)) + value
        header += b"\x00" + self.sync
        self.header = bytes(header)

    def file(self, datums: Iterable[bytes]) -> bytes:
        """A container file holding these datums, one block each."""
        sync = self.sync
        return self.header + b"".join(
            _BLOCK_OF_ONE + zigzag(len(d)) + d + sync for d in datums)

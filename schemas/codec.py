"""Confluent wire format codec: 0x00, 4-byte big-endian schema id, schemaless Avro datum."""

from __future__ import annotations

import json
import struct
from collections.abc import Mapping
from functools import cache
from io import BytesIO
from typing import Any, cast

from fastavro import parse_schema, schemaless_reader, schemaless_writer
from fastavro.schema import to_parsing_canonical_form

from schemas.errors import RecordError, SchemaError
from schemas.loader import (
    NAMESPACE,
    expanded,
    load_schema,
    pinned_ids,
    record_names,
    schema_json,
    strip_logical,
    wire_schema,
)
from schemas.validation import compile_validator

__all__ = ["Codec", "RecordError", "SchemaError", "load_schema", "schema_json"]

MAGIC = 0
_HEADER = struct.Struct(">BI")
#: Characters of a reader's error kept in a SchemaError: a UnicodeDecodeError's repr holds the
#: whole undecodable string, which made a dead letter larger than the broker takes.
REASON_CHARS = 200


_RANGES = {"int": (-(1 << 31), (1 << 31) - 1), "long": (-(1 << 63), (1 << 63) - 1)}


@cache
def _ranged(name: str) -> tuple[tuple[str, int, int], ...]:
    """The int and long fields of a record with their ranges: fastavro reads a varint of any
    length into either without a check (an int field of 2**63 decoded)."""
    out = []
    for field in expanded(name)["fields"]:
        kind = field["type"]
        branches = kind if isinstance(kind, list) else [kind]
        for branch in branches:
            base = branch["type"] if isinstance(branch, dict) else branch
            if base in _RANGES:
                out.append((field["name"], *_RANGES[base]))
    return tuple(out)


@cache
def _has_boolean(name: str) -> bool:
    """Whether a record holds a boolean anywhere (fastavro reads any byte as one)."""
    return '"boolean"' in schema_json(name)


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    """A zigzag varint at pos: its value and the position after it."""
    shift = u = 0
    while True:
        byte = data[pos]
        pos += 1
        u |= (byte & 0x7F) << shift
        if byte < 0x80:
            return (u >> 1) ^ -(u & 1), pos
        shift += 7


def _bad_boolean(schema: Any, data: bytes, pos: int) -> int | None:
    """The first boolean byte that is not 0 or 1 in a datum that decoded, else None.

    fastavro reads any byte as a boolean; ClickHouse refuses one that is not 0 or 1 with an
    error the sink cannot tell from its own failure (it retried such a record forever)."""
    found: list[int] = []
    named: dict[str, Any] = {}

    def walk(node: Any, pos: int) -> int:
        if found:
            return pos
        if isinstance(node, str) and node in named:
            node = named[node]
        if isinstance(node, dict) and "name" in node:
            named[node["name"]] = node
        if isinstance(node, list):
            index, pos = _varint(data, pos)
            return walk(node[index], pos)
        kind = node["type"] if isinstance(node, dict) else node
        if kind == "boolean":
            if data[pos] > 1:
                found.append(data[pos])
            return pos + 1
        if kind in ("int", "long", "enum"):
            return _varint(data, pos)[1]
        if kind in ("float", "double"):
            return pos + (4 if kind == "float" else 8)
        if kind in ("string", "bytes"):
            size, pos = _varint(data, pos)
            return pos + size
        if kind == "fixed":
            return pos + int(node["size"])
        if kind in ("array", "map"):
            while True:
                count, pos = _varint(data, pos)
                if count == 0:
                    return pos
                if count < 0:
                    count, pos = -count, _varint(data, pos)[1]
                for _ in range(count):
                    if kind == "map":
                        pos = walk("string", pos)
                    pos = walk(node["items" if kind == "array" else "values"], pos)
        if kind == "record":
            for field in node["fields"]:
                pos = walk(field["type"], pos)
            return pos
        if isinstance(kind, (dict, list)):
            return walk(kind, pos)
        return pos  # null

    walk(schema, pos)
    return found[0] if found else None


def _brief(exc: Exception) -> str:
    """A reader's error in a bounded number of characters: its type and message."""
    return f"{type(exc).__name__}({str(exc)[:REASON_CHARS]!r})"

# (record name, writer schema, reader schema or None when the writer schema is ours)
_Decoder = tuple[str, dict[str, Any], dict[str, Any] | None]


class Codec:
    """Encode and decode pushcascade records; pinned ids, or a schema registry when given a URL."""

    def __init__(self, registry_url: str | None = None) -> None:
        self._names = record_names()
        self._known = frozenset(self._names)
        self._headers: dict[str, bytes] = {}
        self._decoders: dict[int, _Decoder] = {}
        self._writer_json: dict[int, str] = {}  # registry schemas: the text as registered
        self._registry: Any = None
        if registry_url is None:
            ids = pinned_ids()
            for name in self._names:
                self._remember(name, ids[name])
        else:
            from confluent_kafka.schema_registry import SchemaRegistryClient

            from streams.settings import Connections, Tuning

            connections = Connections(**{})  # auth, CA bundle, subject naming: SCHEMA_REGISTRY_*
            self._registry = SchemaRegistryClient.new_client(
                {**connections.registry_config(), "url": registry_url})
            self._subject_naming = connections.schema_registry_subject_naming
            self._topic_prefix = Tuning(**{}).topic_prefix

    @property
    def names(self) -> tuple[str, ...]:
        """Short names of all records, in pinned-id order."""
        return self._names

    @property
    def registry(self) -> Any:
        """The confluent SchemaRegistryClient in registry mode, else None."""
        return self._registry

    def subject(self, record_name: str) -> str:
        """The registry subject of a record: its full name, or with topic naming `<topic>-value`
        when it is the only record of one topic (records sharing a topic keep their name)."""
        from schemas.topics import CATALOG

        topics = [t.name for t in CATALOG if t.record == record_name]
        if getattr(self, "_subject_naming", "record") == "topic" and len(topics) == 1:
            return f"{self._topic_prefix}{topics[0]}-value"
        return f"{NAMESPACE}.{record_name}"

    def schema_id(self, record_name: str) -> int:
        """The schema id written for `record_name` (registers it in registry mode)."""
        return _HEADER.unpack(self._header(record_name))[1]

    def validate(self, record_name: str, value: Mapping[str, Any]) -> dict[str, Any]:
        """Return the normalized record (defaults filled, datetimes as epoch ms) or raise."""
        self._check_name(record_name)
        return compile_validator(record_name)(value)

    def encode(self, record_name: str, value: Mapping[str, Any]) -> bytes:
        """Validate `value` and return it in the Confluent wire format."""
        record = self.validate(record_name, value)
        buf = BytesIO()
        buf.write(self._header(record_name))
        schemaless_writer(buf, wire_schema(record_name), record)
        return buf.getvalue()

    def decode(self, data: bytes | None, topic: str,
               expected: str | None = None) -> dict[str, Any]:
        """Decode one message value read from `topic`; raise SchemaError when it is not valid."""
        if expected is not None:
            self._check_name(expected)
        return self._decode(data, topic, expected)[1]

    def decode_named(self, data: bytes | None, topic: str) -> tuple[str, dict[str, Any]]:
        """Decode one message value and also return its record name."""
        return self._decode(data, topic, None)

    def identify(self, data: bytes | None, topic: str) -> tuple[str, int]:
        """The record name and schema id of a value, from its header alone (the datum is not
        read); SchemaError when the header is bad or the id unknown."""
        schema_id, decoder = self._header_of(data, topic)
        return decoder[0], schema_id

    def writer_json(self, schema_id: int) -> str:
        """The writer schema of an identified schema id as JSON, logical types kept."""
        return self._writer_json.get(schema_id) or schema_json(self._decoders[schema_id][0])

    def _header_of(self, data: bytes | None, topic: str) -> tuple[int, _Decoder]:
        if not data:
            raise SchemaError(topic, "empty message value")
        if len(data) < 5:
            raise SchemaError(topic, f"{len(data)} bytes, shorter than the 5-byte header")
        magic, schema_id = _HEADER.unpack_from(data)
        if magic != MAGIC:
            raise SchemaError(topic, f"bad magic byte 0x{magic:02x}, expected 0x00")
        return schema_id, self._decoders.get(schema_id) or self._fetch(schema_id, topic)

    def _decode(self, data: bytes | None, topic: str,
                expected: str | None) -> tuple[str, dict[str, Any]]:
        schema_id, decoder = self._header_of(data, topic)
        name, writer, reader = decoder
        if expected is not None and name != expected:
            raise SchemaError(topic, f"expected {expected}, got {name} (schema id {schema_id})")
        data = data or b""  # _header_of refused an empty value
        buf = BytesIO(data)
        buf.seek(5)
        try:
            value = cast(dict[str, Any], schemaless_reader(buf, writer, reader))
        except Exception as exc:  # its text may quote the datum's bytes (addresses): type only
            raise SchemaError(
                topic, f"{name} datum (schema id {schema_id}) is truncated or corrupt: "
                f"{type(exc).__name__} at byte {buf.tell()}"
            ) from None
        extra = len(data) - buf.tell()
        if extra:
            raise SchemaError(
                topic, f"{extra} trailing bytes after the {name} datum (schema id {schema_id})"
            )
        if reader is None and _has_boolean(name):
            bad = _bad_boolean(writer, data, 5)
            if bad is not None:
                raise SchemaError(topic, f"{name} datum (schema id {schema_id}): boolean byte "
                                         f"0x{bad:02x}, not 0x00 or 0x01")
        for field, low, high in _ranged(name):
            number = value.get(field)
            if number is not None and not low <= number <= high:
                raise SchemaError(topic, f"{name}.{field} (schema id {schema_id}): {number} is "
                                         f"out of range for its type")
        return name, value

    def _check_name(self, record_name: str) -> None:
        if record_name not in self._known:
            raise ValueError(f"unknown record {record_name!r}; known: {', '.join(self._names)}")

    def _remember(self, name: str, schema_id: int) -> bytes:
        header = _HEADER.pack(MAGIC, schema_id)
        self._headers[name] = header
        self._decoders.setdefault(schema_id, (name, wire_schema(name), None))
        return header

    def _header(self, record_name: str) -> bytes:
        header = self._headers.get(record_name)
        if header is not None:
            return header
        self._check_name(record_name)
        from confluent_kafka.schema_registry import Schema

        subject = self.subject(record_name)
        schema = Schema(schema_json(record_name), "AVRO")
        schema_id = self._registry.register_schema(subject, schema)
        return self._remember(record_name, schema_id)

    def _fetch(self, schema_id: int, topic: str) -> _Decoder:
        """Look up a schema id not seen before in the registry and build its decoder."""
        if self._registry is None:
            raise SchemaError(topic, f"unknown schema id {schema_id}")
        from confluent_kafka.schema_registry.error import SchemaRegistryError

        try:
            found = self._registry.get_schema(schema_id)
        except SchemaRegistryError as exc:
            if exc.http_status_code == 404:
                raise SchemaError(topic, f"unknown schema id {schema_id}") from exc
            raise
        if (found.schema_type or "AVRO") != "AVRO":
            raise SchemaError(topic, f"schema id {schema_id} is {found.schema_type}, not AVRO")
        try:
            writer = cast(dict[str, Any], parse_schema(strip_logical(json.loads(found.schema_str))))
        except Exception as exc:
            raise SchemaError(topic,
                              f"schema id {schema_id} does not parse: {_brief(exc)}") from exc
        fullname = str(writer.get("name", ""))
        name = fullname.removeprefix(f"{NAMESPACE}.")
        if writer.get("type") != "record" or name not in self._known:
            raise SchemaError(topic, f"schema id {schema_id} is {fullname!r}, not a known record")
        ours = wire_schema(name)
        same = to_parsing_canonical_form(writer) == to_parsing_canonical_form(ours)
        decoder: _Decoder = (name, ours, None) if same else (name, writer, ours)
        self._writer_json[schema_id] = found.schema_str
        self._decoders[schema_id] = decoder
        return decoder

"""Avro schemas of pushcascade and the Confluent wire-format codec that reads and writes them."""

from schemas.codec import Codec, RecordError, SchemaError, load_schema, schema_json
from schemas.loader import pinned_ids, record_names

__all__ = [
    "Codec",
    "RecordError",
    "SchemaError",
    "load_schema",
    "pinned_ids",
    "record_names",
    "schema_json",
]

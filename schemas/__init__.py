"""The contract: Avro schemas, their wire-format codec, the topic catalog, the key partitioner."""

from schemas.codec import Codec, RecordError, SchemaError, load_schema, schema_json
from schemas.loader import pinned_ids, record_names
from schemas.topics import BY_NAME, CATALOG, WRITABLE, TopicSpec, spec

__all__ = [
    "BY_NAME",
    "CATALOG",
    "WRITABLE",
    "Codec",
    "RecordError",
    "SchemaError",
    "TopicSpec",
    "load_schema",
    "pinned_ids",
    "record_names",
    "schema_json",
    "spec",
]

"""The contract: Avro schemas, their wire-format codec, the topic catalog, the key partitioner."""

from schemas.codec import Codec, RecordError, SchemaError, load_schema, schema_json
from schemas.loader import pinned_ids, record_names
from schemas.partitioner import PRODUCER_CONFIG, key_partition, murmur2
from schemas.topics import BY_NAME, CATALOG, WRITABLE, TopicSpec, spec
from schemas.validation import CAPS, caps_table, check_caps, enforce_caps

__all__ = [
    "BY_NAME",
    "CAPS",
    "CATALOG",
    "PRODUCER_CONFIG",
    "WRITABLE",
    "caps_table",
    "check_caps",
    "enforce_caps",
    "Codec",
    "RecordError",
    "SchemaError",
    "TopicSpec",
    "key_partition",
    "load_schema",
    "murmur2",
    "pinned_ids",
    "record_names",
    "schema_json",
    "spec",
]

"""Errors raised by the codec: SchemaError for bad bytes, RecordError for bad records."""

from __future__ import annotations


class SchemaError(ValueError):
    """Bytes on a topic that are not a decodable pushcascade record."""

    def __init__(self, topic: str, reason: str) -> None:
        super().__init__(f"{topic}: {reason}")
        self.topic = topic
        self.reason = reason

    def __reduce__(self) -> tuple[type[SchemaError], tuple[str, str]]:
        return (type(self), (self.topic, self.reason))


class RecordError(ValueError):
    """A record (dict) that does not match its schema; `field` is the dotted path."""

    def __init__(self, record: str, field: str, reason: str) -> None:
        where = f"{record}.{field}" if field else record
        super().__init__(f"{where}: {reason}")
        self.record = record
        self.field = field
        self.reason = reason

    def __reduce__(self) -> tuple[type[RecordError], tuple[str, str, str]]:
        return (type(self), (self.record, self.field, self.reason))

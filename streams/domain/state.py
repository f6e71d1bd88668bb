"""State the handlers read and write: table names, keys owned by one partition, a plain store."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any, Protocol

from streams.domain.compact import compact_bytes

ACCOUNTS, MESSAGES, DEVICES, TALLIES = "accounts", "messages", "devices", "tallies"
CAMPAIGNS = "campaigns"
#: adaptive: one row per partition, what its kinds of reader read (streams.domain.kinds)
KINDS = "kinds"
#: Derived from messages and campaigns in the same batch (never written by a handler): pending
#: deadlines keyed by due time (streams.domain.deadlines), and deliveries waiting on a campaign.
TIMERS, WAITS = "timers", "waits"
ROUTER_TABLES = (ACCOUNTS, MESSAGES, DEVICES, TALLIES, CAMPAIGNS, TIMERS, WAITS, KINDS)


def _key(*parts: object) -> bytes:
    """An unambiguous key: the parts as a compact JSON array."""
    return compact_bytes(parts)


def account_key(account_id: str) -> bytes:
    """Key of an account's state (owned by the account's partition)."""
    return account_id.encode()


def message_key(account_id: str, message_id: str) -> bytes:
    """Key of a message's state: a message_id names a message for its account only."""
    return _key(account_id, message_id)


def device_key(account_id: str, device_id: str) -> bytes:
    """Key of a device's route state, written by the partition of the account it belongs to."""
    return _key(account_id, device_id)


def wait_key(campaign_id: str, key: bytes) -> bytes:
    """Key of a message waiting on a campaign's decision."""
    return _key(campaign_id, key.decode())


def tally_key(campaign_id: str, partition: int) -> bytes:
    """Key of one account partition's tally of a campaign (every partition has its own)."""
    return _key(campaign_id, partition)


def kinds_key(partition: int) -> bytes:
    """Key of one account partition's kinds of reader (every partition learns its own)."""
    return _key("kinds", partition)


def parse_key(key: bytes) -> list[Any]:
    """The parts of a composite key."""
    parts = json.loads(key)
    assert isinstance(parts, list)
    return parts


class Tables(Protocol):
    """Read and write access to the state of the partition being processed."""

    def get(self, table: str, key: bytes) -> dict[str, Any] | None:
        """The value stored under key, or None."""

    def put(self, table: str, key: bytes, value: dict[str, Any]) -> None:
        """Store a value (JSON-compatible) under key."""

    def delete(self, table: str, key: bytes) -> None:
        """Remove key."""


class MemoryTables:
    """Tables as plain dicts: for tests and tools (values are copied through JSON, as stored)."""

    def __init__(self) -> None:
        self.data: dict[str, dict[bytes, str]] = {}

    def get(self, table: str, key: bytes) -> dict[str, Any] | None:
        """The value stored under key, or None."""
        raw = self.data.get(table, {}).get(key)
        return None if raw is None else json.loads(raw)

    def put(self, table: str, key: bytes, value: dict[str, Any]) -> None:
        """Store a copy of the value."""
        self.data.setdefault(table, {})[key] = json.dumps(value)

    def delete(self, table: str, key: bytes) -> None:
        """Remove key."""
        self.data.get(table, {}).pop(key, None)

    def items(self, table: str) -> Iterator[tuple[bytes, dict[str, Any]]]:
        """Every key and value of a table."""
        for key, raw in list(self.data.get(table, {}).items()):
            yield key, json.loads(raw)

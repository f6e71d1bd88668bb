"""The event tables as data: which topic fills which table, and a record's row (pure).

This is the declaration the migrations must match (tests/integration/test_warehouse.py
compares them, and checks that what ClickHouse decodes from the sink's Avro equals the row
built here). The sink inserts `insert_columns`; the Python rows serve the benchmark's bare
insert. Nothing personal leaves here: no address, push token, title or body has a column."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Any

#: Kafka coordinates every row carries, after the record's own columns.
META = ("topic", "partition", "offset")

Row = tuple[Any, ...]


@dataclass(frozen=True)
class Table:
    """One table: its name, the record it holds, its stored columns, the record fields the
    sink inserts (EPHEMERAL columns included; ClickHouse derives the rest), record fields
    renamed to their column, the same row built in Python (benchmarks, checks), and the time
    field whose day is its partition (`PARTITION BY toDate(day)`; None: not partitioned)."""

    name: str
    record: str
    columns: tuple[str, ...]
    row: Callable[[dict[str, Any]], Row]
    fields: tuple[str, ...] = ()
    rename: dict[str, str] = field(default_factory=dict)
    day: str | None = None

    @property
    def all_columns(self) -> tuple[str, ...]:
        """The record's columns followed by the Kafka coordinates."""
        return self.columns + META

    @property
    def insert_columns(self) -> tuple[str, ...]:
        """The columns the sink inserts from a record's fields (after renaming)."""
        return (self.fields or self.columns) + META


def _s(value: Any) -> str:
    return "" if value is None else str(value)


def _fields(*names: str) -> Callable[[dict[str, Any]], Row]:
    """A row of these record fields, None as '' (for route, device_id and the like)."""
    getter = itemgetter(*names)

    def build(record: dict[str, Any]) -> Row:
        values: Row = getter(record)
        return tuple("" if v is None else v for v in values) if None in values else values

    return build


#: The largest UInt16: a counter stored in such a column saturates there (migration 0003).
UINT16_MAX = 65535


def _request(r: dict[str, Any]) -> Row:
    return (r["message_id"], r["account_id"], r["importance"], r["read_action"],
            bool(r.get("link")), r["campaign_id"], min(len(r["device_ids"]), UINT16_MAX),
            r["created_at"])


def _outcome(r: dict[str, Any]) -> Row:
    return (r["send_id"], r["message_id"], r["account_id"], r["channel"], _s(r["device_id"]),
            _s(r["route"]), r["provider"], r["status"], _s(r["provider_message_id"]),
            _s(r["error_code"]), r["attempts"], max(0, r["latency_ms"]), r["at"])


def _device(r: dict[str, Any]) -> Row:
    return (r["device_id"], r["account_id"], r["manufacturer"], r["model"], list(r["routes"]),
            r["active"], r["registered_at"])


def _dead_letter(r: dict[str, Any]) -> Row:
    return (r["topic"], r["partition"], r["offset"], r["error"], r["failed_at"])


SENDS = ("send_id", "message_id", "account_id", "channel", "device_id", "route", "reason",
         "attempt", "importance", "sent_at")
ACKS = ("message_id", "account_id", "channel", "kind", "device_id", "route", "send_id",
        "acked_at")
RESULTS = ("message_id", "account_id", "status", "channel", "device_id", "route", "send_id",
           "detail", "at")
ESCALATIONS = ("message_id", "account_id", "from_channel", "to_channel", "deadline_at",
               "fired_at")
ROUTE_CHANGES = ("device_id", "account_id", "from_route", "to_route", "success_rate", "reason",
                 "changed_at")
DECISIONS = ("campaign_id", "targeted", "acked", "ratio", "threshold", "fallback", "decided_at")
LIFECYCLE = ("account_id", "lifecycle", "pushes", "changed_at")
SETTINGS = ("account_id", "primary", "secondary", "updated_at")

#: Unprefixed topic -> its table.
TABLES: dict[str, Table] = {
    "push.requests": Table("requests", "PushRequest", (
        "message_id", "account_id", "importance", "read_action", "has_link", "campaign_id",
        "device_count", "created_at"), _request, fields=(
        "message_id", "account_id", "importance", "read_action", "link", "campaign_id",
        "device_ids", "created_at"), day="created_at"),
    "push.sends": Table("sends", "ChannelSend", SENDS, _fields(*SENDS), day="sent_at"),
    "push.acks": Table("acks", "Ack", ACKS, _fields(*ACKS), day="acked_at"),
    "push.results": Table("results", "DeliveryResult", RESULTS, _fields(*RESULTS), day="at"),
    "push.escalations": Table("escalations", "Escalation", ESCALATIONS, _fields(*ESCALATIONS),
                              day="deadline_at"),
    "device.route-changes": Table("route_changes", "RouteChange", ROUTE_CHANGES,
                                  _fields(*ROUTE_CHANGES), day="changed_at"),
    "campaign.decisions": Table("campaign_decisions", "CampaignDecision", DECISIONS,
                                _fields(*DECISIONS), day="decided_at"),
    "account.lifecycle": Table("lifecycle", "AccountLifecycle", LIFECYCLE,
                               _fields(*LIFECYCLE), day="changed_at"),
    "push.outcomes": Table("outcomes", "ProviderOutcome", (
        "send_id", "message_id", "account_id", "channel", "device_id", "route", "provider",
        "status", "provider_message_id", "error_code", "attempts", "latency_ms", "at"),
        _outcome, day="at"),
    "device.registry": Table("devices", "DeviceRegistration", (
        "device_id", "account_id", "manufacturer", "model", "routes", "active",
        "registered_at"), _device),
    "account.settings": Table("account_settings", "AccountSettings", SETTINGS,
                              _fields(*SETTINGS)),
    "push.dlq": Table("dead_letters", "DeadLetter", (
        "source_topic", "source_partition", "source_offset", "error", "failed_at"),
        _dead_letter, rename={"topic": "source_topic", "partition": "source_partition",
                              "offset": "source_offset"}, day="failed_at"),
}

#: The views the migrations create, for the schema test and the README.
VIEWS = ("send_acks", "channel_hourly", "route_hourly", "device_routes", "manufacturer_routes",
         "message_summary", "campaign_summary")


def row(table: Table, record: dict[str, Any], topic: str, partition: int, offset: int) -> Row:
    """The row of one decoded record with its Kafka coordinates."""
    return table.row(record) + (topic, partition, offset)

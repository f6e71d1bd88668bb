"""Promises 3 and 4, pure: Kafka records and ClickHouse rows in, a Check out.

A table's identity is its ReplacingMergeTree key (the migrations' ORDER BY, kept in `KEYS`;
a test compares them): a record the router or a replay repeated is one row after FINAL."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from typing import Any

from connectors.clickhouse.tables import TABLES
from streams.verify.model import Check, short

Key = tuple[str, ...]
Rec = Mapping[str, Any]

#: Each table's deduplication key (its ORDER BY).
KEYS: dict[str, tuple[str, ...]] = {
    "requests": ("account_id", "message_id"),
    "sends": ("channel", "route", "reason", "send_id"),
    "acks": ("channel", "kind", "account_id", "message_id", "send_id", "device_id"),
    "results": ("status", "account_id", "message_id", "send_id", "device_id"),
    "escalations": ("from_channel", "account_id", "message_id"),
    "route_changes": ("device_id", "changed_at", "to_route"),
    "campaign_decisions": ("campaign_id",),
    "lifecycle": ("account_id", "lifecycle"),
    "outcomes": ("channel", "provider", "send_id"),
    "devices": ("device_id",),
    "account_settings": ("account_id",),
    "dead_letters": ("source_topic", "source_partition", "source_offset"),
}
#: Key columns stored as DateTime64 (compared as epoch milliseconds).
TIMES = {"changed_at"}


def key_sql(table: str) -> str:
    """The key of each row of `table` as strings, for a SELECT list (aliases k0, k1, …)."""
    parts = [f"toString(toUnixTimestamp64Milli({c}))" if c in TIMES else f"toString({c})"
             for c in KEYS[table]]
    return ", ".join(f"{p} AS k{i}" for i, p in enumerate(parts))


def record_key(topic: str, record: Rec) -> Key:
    """The table key of one decoded record of `topic` (as the sink stores it)."""
    table = TABLES[topic]
    values = dict(zip(table.columns, table.row(dict(record)), strict=True))
    return tuple(str(values[c]) for c in KEYS[table.name])


def stored_once(table: str, kafka: Iterable[tuple[Key, int, int]],
                rows: Iterable[tuple[Key, int, int]], sunk: Mapping[int, int],
                dead: set[tuple[int, int]] = frozenset()) -> Check:  # type: ignore[assignment]
    """Every record (key, partition, offset) the sink has committed past is one row of its
    table (`rows`: key, partition, offset, read with FINAL); no row names a record Kafka does
    not hold; records after the sink's committed offset are pending; dead-lettered ones are
    excused."""
    check = Check(3, f"{table}: each record stored once")
    stored: dict[Key, list[tuple[int, int]]] = defaultdict(list)
    for key, partition, offset in rows:
        stored[key].append((partition, offset))
    held: dict[tuple[int, int], Key] = {}
    missing: dict[Key, tuple[int, int]] = {}
    for key, partition, offset in kafka:
        held[(partition, offset)] = key
        if key in stored or (partition, offset) in dead:
            check.checked += 1
        elif offset >= sunk.get(partition, 0):
            check.pending += 1
        else:
            missing.setdefault(key, (partition, offset))
            check.checked += 1
    for key, (partition, offset) in missing.items():
        check.fail(f"{_name(key)} ({partition}@{offset}) is not in {table}")
    for key, where in stored.items():
        if len(where) > 1:
            check.fail(f"{_name(key)} is stored {len(where)} times")
        for partition, offset in where:
            if held.get((partition, offset)) != key:
                check.fail(f"row {_name(key)} names {partition}@{offset}, "
                           "which holds no such record")
    return check


def _name(key: Key) -> str:
    return "/".join(short(k, 24) for k in key if k)


# -- promise 4 -------------------------------------------------------------------------------

#: campaign_summary beside the campaign's original-route sends and their receipts.
CAMPAIGNS_SQL = """
SELECT c.campaign_id AS campaign_id, c.targeted AS targeted, c.acked AS acked,
       c.ratio AS ratio, c.threshold AS threshold, c.fallback AS fallback,
       c.fallback_sends AS fallback_sends, o.sends AS original_sends,
       o.received AS original_received
FROM campaign_summary AS c
LEFT JOIN
(
    SELECT assumeNotNull(q.campaign_id) AS campaign_id, count() AS sends,
           countIf(a.received) AS received
    FROM (SELECT * FROM send_acks WHERE reason = 'ORIGINAL_ROUTE') AS a
    INNER JOIN (SELECT account_id, message_id, campaign_id FROM requests FINAL
                WHERE campaign_id IS NOT NULL) AS q
        ON q.account_id = a.account_id AND q.message_id = a.message_id
    GROUP BY campaign_id
) AS o ON o.campaign_id = c.campaign_id
"""
#: Each requested message as ClickHouse sees it: read, when, escalated.
MESSAGES_SQL = """
SELECT account_id, message_id, read, toUnixTimestamp64Milli(first_read_at) AS first_read_ms,
       escalated
FROM message_summary
"""


def campaigns_agree(decisions: Iterable[Rec], rows: Iterable[Rec]) -> Check:
    """campaign.decisions against campaign_summary: one decision per campaign, the same
    counts, ratio = acked / targeted, fallback iff ratio < threshold, no fallback send without
    a fallback decision, no more targets or acks than original-route sends and receipts."""
    check = Check(4, "campaign decisions and tallies")
    topic: dict[str, set[tuple[int, int, bool]]] = defaultdict(set)
    for d in decisions:
        topic[d["campaign_id"]].add((d["targeted"], d["acked"], bool(d["fallback"])))
    table = {r["campaign_id"]: r for r in rows}
    for cid, seen in topic.items():
        check.checked += 1
        if len(seen) > 1:
            check.fail(f"campaign {cid}: decided {len(seen)} different ways")
        row = table.get(cid)
        if row is None:
            check.pending += 1
            continue
        targeted, acked, fallback = int(row["targeted"]), int(row["acked"]), _bool(row["fallback"])
        if (targeted, acked, fallback) not in seen:
            check.fail(f"campaign {cid}: ClickHouse {targeted}/{acked} fallback={fallback}, "
                       f"the topic {sorted(seen)}")
        ratio = acked / targeted if targeted else 0.0
        if abs(float(row["ratio"]) - ratio) > 1e-9 or fallback != (ratio < float(row["threshold"])):
            check.fail(f"campaign {cid}: ratio {row['ratio']} / fallback {fallback} do not follow "
                       f"from {acked}/{targeted} and threshold {row['threshold']}")
        if not fallback and int(row["fallback_sends"] or 0) > 0:
            check.fail(f"campaign {cid}: {row['fallback_sends']} fallback sends, "
                       "decided no fallback")
        if targeted > int(row["original_sends"] or 0) or acked > int(row["original_received"]
                                                                        or 0):
            check.fail(f"campaign {cid}: tally {acked}/{targeted} exceeds ClickHouse's "
                       f"{row['original_received']}/{row['original_sends']} original-route "
                       "receipts/sends")
    return check


def messages_agree(results: Iterable[Rec], escalations: Iterable[Rec], rows: Iterable[Rec],
                   now_ms: int, settle_ms: int) -> Check:
    """message_summary against push.results and push.escalations: read in ClickHouse exactly
    when the stream processors reported a READ, escalated exactly when they escalated."""
    check = Check(4, "message read/escalated")
    read = {(r["account_id"], r["message_id"]) for r in results if r["status"] == "READ"}
    escalated = {(e["account_id"], e["message_id"]) for e in escalations}
    for row in rows:
        key = (row["account_id"], row["message_id"])
        check.checked += 1
        name = f"{short(key[0], 12)}/{short(key[1], 16)}"
        ch_read = _bool(row["read"])
        if ch_read != (key in read):
            recent = ch_read and now_ms < int(row["first_read_ms"]) + settle_ms
            if recent:
                check.pending += 1
            else:
                check.fail(f"{name}: read in ClickHouse {ch_read}, READ reported "
                           f"{key in read}")
        if _bool(row["escalated"]) != (key in escalated):
            check.fail(f"{name}: escalated in ClickHouse {_bool(row['escalated'])}, "
                       f"on push.escalations {key in escalated}")
    return check


def _bool(value: Any) -> bool:
    return value in (True, 1, "1", "true", "True")


#: Every probe ClickHouse holds, with its first RECEIPT (epoch ms; NULL when none came).
PROBES_SQL = """
SELECT s.device_id AS device_id, s.route AS route, s.send_id AS send_id,
       toUnixTimestamp64Milli(s.sent_at) AS sent_ms,
       if(r.send_id = '', NULL, toUnixTimestamp64Milli(r.receipt_at)) AS receipt_ms
FROM (SELECT * FROM sends FINAL WHERE reason = 'PROBE') AS s
LEFT JOIN
(
    SELECT send_id, min(acked_at) AS receipt_at
    FROM acks FINAL WHERE kind = 'RECEIPT' AND send_id != '' GROUP BY send_id
) AS r ON r.send_id = s.send_id
"""


def routes_agree(changes: Iterable[Rec], probes: Iterable[Rec], settle_ms: int) -> Check:
    """A first target route (RouteChange INITIAL) reports k / n for its route: n must be the
    probes ClickHouse holds on that device and route up to the change, and k no more than the
    receipts it holds for them by then (+ settle for clocks). Re-probe rounds are counted in
    the note, not compared (their window is the router's own)."""
    check = Check(4, "route success rates (first probe window)")
    by_route: dict[tuple[str, str], list[Rec]] = defaultdict(list)
    for p in probes:
        by_route[(p["device_id"], p["route"])].append(p)
    reprobes = 0
    for c in changes:
        if c["reason"] != "INITIAL":
            reprobes += 1
            continue
        check.checked += 1
        at, rate = int(c["changed_at"]), float(c["success_rate"])
        window = {p["send_id"]: p for p in by_route.get((c["device_id"], c["to_route"]), [])
                  if int(p["sent_ms"]) <= at}
        n = len(window)
        seen = sum(1 for p in window.values() if p["receipt_ms"] is not None
                   and int(p["receipt_ms"]) <= at + settle_ms)
        k = rate * n
        name = f"device {short(c['device_id'], 16)} {c['to_route']}"
        if n == 0 or abs(k - round(k)) > 1e-6:
            check.fail(f"{name}: rate {rate:.3f} is no count of the {n} probes ClickHouse holds")
        elif round(k) > seen:
            check.fail(f"{name}: rate {rate:.3f} of {n} probes counts {round(k)} receipts, "
                       f"ClickHouse holds {seen}")
    check.note = f"{reprobes} re-probe changes not compared" if reprobes else ""
    return check

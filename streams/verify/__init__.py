"""`pushcascade verify`: read a run's topics, ClickHouse and the provider simulator's record of
calls, and check every promise (streams.verify.outcomes, .stored, .privacy: pure checks;
streams.verify.read: the readers). `run` returns one Check per invariant."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from connectors.clickhouse.tables import TABLES
from streams.lag import SINK_TOPICS
from streams.settings import Settings
from streams.verify.model import PROMISES, Check, skipped, violations
from streams.verify.outcomes import Timing, one_outcome, provider_calls, terminal_outcomes
from streams.verify.privacy import acks_unforged, addresses, personal_data
from streams.verify.read import (
    Raw,
    read_topics,
    run_topics,
    simulator_counts,
    sink_committed,
)
from streams.verify.stored import (
    CAMPAIGNS_SQL,
    MESSAGES_SQL,
    PROBES_SQL,
    campaigns_agree,
    key_sql,
    messages_agree,
    record_key,
    routes_agree,
    stored_once,
)

__all__ = ["PROMISES", "Check", "Timing", "run", "run_settled", "timing", "violations"]

#: What promise 4 cannot see from outside the stream processors (see README "Guarantees").
NOT_CHECKED_4 = ("re-probe rates and learned primaries live in the workers' tables and show "
                 "only as sends and route changes; not compared")


def timing(settings: Settings, settle: float) -> Timing:
    """The run's deadlines from its settings, with this cut-off."""
    from connectors.settings import ConnectorSettings

    tuning = settings.tuning
    return Timing({i: tuning.read_deadline(i) for i in ("LOW", "NORMAL", "HIGH", "URGENT")},
                  tuning.reach_grace, ConnectorSettings(**{}).dispatch_hold, settle)


def run(settings: Settings, *, settle: float = 10.0, simulator_url: str = "",
        warehouse: Any = None, clock: float | None = None) -> list[Check]:
    """Every check on the run under `settings` (its topic prefix, Kafka, ClickHouse DSN).
    `warehouse`: a read-only query object (default: open_warehouse on the DSN)."""
    now_ms = int((clock if clock is not None else time.time()) * 1000)
    when = timing(settings, settle)
    topics = read_topics(settings, run_topics(settings))
    rec = {n: [r.record for r in raws if r.record is not None] for n, raws in topics.items()}

    def records(name: str) -> list[dict[str, Any]]:
        return rec.get(name, [])

    p1, ends = terminal_outcomes(records("push.requests"), records("push.sends"),
                                 records("push.escalations"), records("push.results"), now_ms,
                                 when)
    p1.note = ", ".join(f"{k} {v}" for k, v in sorted(ends.items()))
    checks = [p1, one_outcome(records("push.sends"), records("push.outcomes"), now_ms, when)]
    if simulator_url:
        seen, accepted = simulator_counts(simulator_url)
        checks.append(provider_calls(seen, accepted, records("push.sends"),
                                     records("push.outcomes")))
    else:
        checks.append(skipped(2, "no provider called twice (simulator)",
                              "no simulator URL: the providers' own records are not readable"))
    if warehouse is None:
        warehouse = _warehouse(settings, checks)
    if warehouse is not None:
        stored = _stored(settings, topics, warehouse)
        checks += stored
        checks += _agree(stored, rec, warehouse, now_ms, when)
    checks.append(acks_unforged(records("push.acks"), records("push.sends")))
    found = addresses(records("account.profiles"))
    places = [(f"topic {n}", b"\n\0".join(r.bytes() for r in raws))
              for n, raws in topics.items() if n != "account.profiles"]
    if warehouse is not None:
        places += [(f"table {t.name}", warehouse.text(
            f"SELECT * FROM {t.name} WHERE topic = '{settings.topic(topic)}'",  # noqa: S608
            "TabSeparated").encode()) for topic, t in TABLES.items()]
    checks.append(personal_data(found, places))
    return sorted(checks, key=lambda c: c.promise)


def _warehouse(settings: Settings, checks: list[Check]) -> Any:
    from connectors.clickhouse.warehouse import open_warehouse

    try:
        return open_warehouse(settings.connections.dsn)
    except Exception as exc:  # reported as skipped checks, not as a crash
        why = f"ClickHouse not readable: {str(exc).splitlines()[0] if str(exc) else exc!r}"
        checks += [skipped(3, "every record stored once", why), skipped(4, "agreement", why)]
        return None


def _stored(settings: Settings, topics: Mapping[str, list[Raw]], warehouse: Any) -> list[Check]:
    """Promise 3 per table: the records the sink has committed past against its rows."""
    sunk = sink_committed(settings, SINK_TOPICS)
    dead: dict[str, set[tuple[int, int]]] = {}
    for letter in topics.get("push.dlq", []):
        d = letter.record
        if d is not None:
            source = str(d["topic"]).removeprefix(settings.tuning.topic_prefix)
            dead.setdefault(source, set()).add((int(d["partition"]), int(d["offset"])))
    out = []
    for topic in SINK_TOPICS:
        table = TABLES[topic].name
        kafka = [(record_key(topic, r.record), r.partition, r.offset)
                 for r in topics.get(topic, []) if r.record is not None]
        rows = warehouse.rows(f"SELECT {key_sql(table)}, partition, offset FROM {table} FINAL "  # noqa: S608
                              f"WHERE topic = '{settings.topic(topic)}'")
        # a record verify cannot decode is the consumers' dead letter; ClickHouse may still
        # store its valid prefix (README, Known limitations): its row is not judged here
        odd = {(r.partition, r.offset) for r in topics.get(topic, []) if r.record is None}
        keys = [(tuple(str(v) for k, v in row.items() if k.startswith("k")),
                 int(row["partition"]), int(row["offset"])) for row in rows]
        check = stored_once(table, kafka, [k for k in keys if k[1:] not in odd],
                            sunk.get(topic, {}), dead.get(topic, set()))
        check.note = f"{len(odd)} undecodable records not judged" if odd else ""
        out.append(check)
    return out


def _agree(stored: list[Check], rec: Mapping[str, list[dict[str, Any]]], warehouse: Any,
           now_ms: int, when: Timing) -> list[Check]:
    """Promise 4, once the sink has stored everything (else it would compare half a run)."""
    behind = sum(c.pending for c in stored)
    if behind:
        why = f"the sink has {behind} records still to store; run verify again later"
        return [skipped(4, name, why) for name in (
            "campaign decisions and tallies", "message read/escalated",
            "route success rates (first probe window)")]
    return [campaigns_agree(rec.get("campaign.decisions", []), warehouse.rows(CAMPAIGNS_SQL)),
            messages_agree(rec.get("push.results", []), rec.get("push.escalations", []),
                           warehouse.rows(MESSAGES_SQL), now_ms, when.ms(when.settle)),
            routes_agree(rec.get("device.route-changes", []), warehouse.rows(PROBES_SQL),
                         when.ms(when.settle)),
            skipped(4, "re-probe rates, learned primaries", NOT_CHECKED_4)]


def run_settled(settings: Settings, timeout: float = 60.0, **options: Any) -> list[Check]:
    """`run` again every 2 s until nothing is pending (deadlines due, the sink caught up) or
    `timeout` passed; the last checks."""
    end = time.monotonic() + timeout
    while True:
        checks = run(settings, **options)
        waiting = [c for c in checks if c.pending or "still to store" in c.skipped]
        if not waiting or time.monotonic() > end:
            return checks
        time.sleep(2)

"""Delivery quality of a run, from ClickHouse: reach, cost, speed, and how well the pipeline
learnt each account's channel and each phone's route (against a population's hidden truth).

`measure(rows, window_s, read_deadlines)` reads the views and tables; `accuracy(...)` scores
what was learnt against the truth; both return plain dicts of figures.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

#: Messages: reached (read within the window; read before the message's last read deadline:
#: its last channel send's time plus the read deadline of its importance), time to first read,
#: SMS and sends after a read.
MESSAGES = """
SELECT count() AS messages,
       countIf(m.read AND m.time_to_read_ms <= {window_ms}) AS reached,
       countIf(m.read AND m.first_read_at <=
               addMilliseconds(l.last_send, {deadline_ms_of_importance})) AS reached_in_time,
       quantileExactIf(0.5)(m.time_to_read_ms, m.read) AS read_p50_ms,
       quantileExactIf(0.9)(m.time_to_read_ms, m.read) AS read_p90_ms,
       sum(m.sms_sends) AS sms_sends,
       sum(m.sends_after_read) AS redundant_sends
FROM message_summary AS m
LEFT JOIN
(
    SELECT account_id, message_id, max(sent_at) AS last_send
    FROM sends FINAL WHERE reason IN ('FANOUT', 'PRIMARY', 'ESCALATION')
    GROUP BY account_id, message_id
) AS l ON l.account_id = m.account_id AND l.message_id = m.message_id
"""
#: Sends that reach a person or a phone (not probes, not the account-level APP record), probes.
SENDS = """
SELECT countIf(reason != 'PROBE' AND NOT (channel = 'APP' AND device_id = '')) AS deliveries,
       countIf(reason = 'PROBE') AS probes,
       uniqExactIf(device_id, reason = 'PROBE') AS probed_devices
FROM sends FINAL
"""
#: The channel of each account's latest PRIMARY send: what the pipeline last took as primary.
PRIMARIES = """
SELECT account_id, argMax(channel, sent_at) AS channel
FROM sends FINAL WHERE reason = 'PRIMARY' GROUP BY account_id
"""
#: Each device's target route after its latest route change.
TARGETS = """
SELECT device_id, argMax(to_route, changed_at) AS route
FROM route_changes FINAL GROUP BY device_id
"""

Rows = Callable[[str], list[dict[str, Any]]]


def measure(rows: Rows, window_s: float, read_deadlines: Mapping[str, float]) -> dict[str, Any]:
    """The run's figures per message (`rows(sql)` answers a query as dicts: a warehouse's);
    `read_deadlines` maps importance to the run's read deadline in seconds."""
    ms = {k.upper(): int(round(v * 1000)) for k, v in read_deadlines.items()}
    deadline = "multiIf({}, {})".format(
        ", ".join(f"m.importance = '{k}', {v}" for k, v in sorted(ms.items())), ms["NORMAL"])
    m = rows(MESSAGES.format(window_ms=int(round(window_s * 1000)),
                              deadline_ms_of_importance=deadline))[0]
    s = rows(SENDS)[0]
    n = int(m["messages"]) or 1
    return {
        "messages": int(m["messages"]),
        "reach": round(int(m["reached"]) / n, 4),
        "reach_in_time": round(int(m["reached_in_time"]) / n, 4),
        "sends_per_message": round(int(s["deliveries"]) / n, 3),
        "sms_per_message": round(int(m["sms_sends"]) / n, 3),
        "redundant_per_message": round(int(m["redundant_sends"]) / n, 3),
        "time_to_read_p50_s": _seconds(m["read_p50_ms"]),
        "time_to_read_p90_s": _seconds(m["read_p90_ms"]),
        "probes": int(s["probes"]),
        "probes_per_message": round(int(s["probes"]) / n, 3),
        "probed_devices": int(s["probed_devices"]),
        "reach_window_s": window_s,
    }


def learnt(rows: Rows) -> tuple[dict[str, str], dict[str, str]]:
    """What the pipeline learnt: account -> last primary channel, device -> target route."""
    primaries = {r["account_id"]: r["channel"] for r in rows(PRIMARIES)}
    targets = {r["device_id"]: r["route"] for r in rows(TARGETS)}
    return primaries, targets


def accuracy(primaries: Mapping[str, str], targets: Mapping[str, str],
             true_primary: Mapping[str, str | None], stable: Mapping[str, bool],
             best_routes: Mapping[str, str | None]) -> dict[str, Any]:
    """Share of accounts whose primary is the channel they truly read most (stable readers
    with a PRIMARY send; and the movers apart), share of measured phones whose target route
    (the fallback Method B chose from probes) is their truly best alternative route."""
    def share(accounts: list[str]) -> float | None:
        hits = sum(1 for a in accounts if primaries[a] == true_primary[a])
        return round(hits / len(accounts), 4) if accounts else None

    readers = [a for a in primaries if true_primary.get(a)]
    steady = [a for a in readers if stable.get(a)]
    movers = [a for a in readers if not stable.get(a)]
    devices = [d for d in targets if best_routes.get(d)]
    right = sum(1 for d in devices if targets[d] == best_routes[d])
    return {
        "primary_accuracy_stable": share(steady), "stable_accounts_scored": len(steady),
        "primary_accuracy_movers": share(movers), "movers_scored": len(movers),
        "route_accuracy": round(right / len(devices), 4) if devices else None,
        "devices_scored": len(devices), "devices": len(best_routes),
    }


def _seconds(ms: Any) -> float | None:
    """Milliseconds (nan when nothing was read) as seconds."""
    value = float(ms)
    return None if value != value else round(value / 1000, 2)

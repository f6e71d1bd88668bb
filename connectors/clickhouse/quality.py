"""Delivery quality of a run, from ClickHouse: reach, cost, speed, and how well the pipeline
learnt each account's channel and each phone's route (against a population's hidden truth).

`measure(rows, window_s, read_deadlines, costs)` reads the views and tables; `per_account`
the same per account (for the per-segment breakdown); `pushes` the requests and PRIMARY sends
(for the movers); `accuracy(...)` scores what was learnt against the truth; all return plain
dicts of figures.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from typing import Any

#: Messages: reached (read within the window; read before the message's last read deadline:
#: its last channel send's time plus the read deadline of its importance), time to first read,
#: SMS and sends after a read.
MESSAGES = """
SELECT count() AS messages,
       countIf(m.read) AS read,
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
#: Sends that reach a person or a phone, per account and channel (what they cost).
DELIVERIES = """
SELECT account_id, channel, count() AS sends
FROM sends FINAL WHERE reason != 'PROBE' AND NOT (channel = 'APP' AND device_id = '')
GROUP BY account_id, channel
"""
#: Per account: its messages, those read within the window, its SMS sends.
ACCOUNTS = """
SELECT account_id, count() AS messages,
       countIf(read AND time_to_read_ms <= {window_ms}) AS reached,
       sum(sms_sends) AS sms
FROM message_summary GROUP BY account_id
"""
#: Every request's time (ms) and the channel of each message's PRIMARY send.
REQUESTED = """
SELECT account_id, message_id, toUnixTimestamp64Milli(created_at) AS at FROM requests FINAL
"""
PRIMARY_SENDS = """
SELECT account_id, message_id, argMin(channel, sent_at) AS channel
FROM sends FINAL WHERE reason = 'PRIMARY' GROUP BY account_id, message_id
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


def measure(rows: Rows, window_s: float, read_deadlines: Mapping[str, float],
            costs: Mapping[str, float] | None = None) -> dict[str, Any]:
    """The run's figures per message (`rows(sql)` answers a query as dicts: a warehouse's);
    `read_deadlines` maps importance to the run's read deadline in seconds, `costs` channel to
    the cost of one send (a channel left out costs 0): the cost counts the sends that reach a
    person or a phone (a device's APP send at the APP cost; not probes, not the account-level
    APP record), per message and per message read."""
    ms = {k.upper(): int(round(v * 1000)) for k, v in read_deadlines.items()}
    deadline = "multiIf({}, {})".format(
        ", ".join(f"m.importance = '{k}', {v}" for k, v in sorted(ms.items())), ms["NORMAL"])
    m = rows(MESSAGES.format(window_ms=int(round(window_s * 1000)),
                              deadline_ms_of_importance=deadline))[0]
    s = rows(SENDS)[0]
    cost = sum(int(r["sends"]) * (costs or {}).get(r["channel"], 0.0) for r in rows(DELIVERIES))
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
        "messages_read": int(m["read"]),
        "cost": round(cost, 6),
        "cost_per_message": round(cost / n, 6),
        "cost_per_read": round(cost / int(m["read"]), 6) if int(m["read"]) else None,
    }


def per_account(rows: Rows, window_s: float,
                costs: Mapping[str, float] | None = None) -> dict[str, dict[str, float]]:
    """Per account: messages, reached (read within the window), deliveries (sends that reach
    a person or a phone), SMS sends and their cost."""
    out: dict[str, dict[str, float]] = {}
    for r in rows(ACCOUNTS.format(window_ms=int(round(window_s * 1000)))):
        out[r["account_id"]] = {"messages": int(r["messages"]), "reached": int(r["reached"]),
                                "sms": int(r["sms"]), "deliveries": 0, "cost": 0.0}
    for r in rows(DELIVERIES):
        row = out.setdefault(r["account_id"], {"messages": 0, "reached": 0, "sms": 0,
                                               "deliveries": 0, "cost": 0.0})
        row["deliveries"] += int(r["sends"])
        row["cost"] += int(r["sends"]) * (costs or {}).get(r["channel"], 0.0)
    return out


def pushes(rows: Rows) -> tuple[dict[str, list[tuple[float, str]]], dict[str, dict[str, str]]]:
    """account -> [(requested at, ms since the epoch; message id)], and account ->
    {message id: the channel of its PRIMARY send}."""
    requested: dict[str, list[tuple[float, str]]] = {}
    for r in rows(REQUESTED):
        requested.setdefault(r["account_id"], []).append((float(r["at"]), r["message_id"]))
    primaries: dict[str, dict[str, str]] = {}
    for r in rows(PRIMARY_SENDS):
        primaries.setdefault(r["account_id"], {})[r["message_id"]] = r["channel"]
    return requested, primaries


def learnt(rows: Rows) -> tuple[dict[str, str], dict[str, str]]:
    """What the pipeline learnt: account -> last primary channel, device -> target route."""
    primaries = {r["account_id"]: r["channel"] for r in rows(PRIMARIES)}
    targets = {r["device_id"]: r["route"] for r in rows(TARGETS)}
    return primaries, targets


def accuracy(primaries: Mapping[str, str], targets: Mapping[str, str],
             true_primary: Mapping[str, str | None], stable: Mapping[str, bool],
             best_routes: Mapping[str, str | None], *,
             followed: tuple[int, int] | None = None,
             clear: Collection[str] | None = None,
             clear_accounts: Collection[str] | None = None) -> dict[str, Any]:
    """Share of accounts whose primary is the channel they truly read most (stable readers
    with a PRIMARY send; and the movers apart), share of measured phones whose target route
    (the fallback Method B chose from probes) is their truly best alternative route.

    `followed` (hits, counted): the movers' figure is instead the share of their PRIMARY sends
    after the change (and its grace) that went to the new true primary. `clear`: the phones
    whose best route clearly leads; their own route accuracy beside the overall one.
    `clear_accounts`: likewise the accounts whose best channel clearly leads (stable ones)."""
    def share(accounts: list[str]) -> float | None:
        hits = sum(1 for a in accounts if primaries[a] == true_primary[a])
        return round(hits / len(accounts), 4) if accounts else None

    readers = [a for a in primaries if true_primary.get(a)]
    steady = [a for a in readers if stable.get(a)]
    movers = [a for a in readers if not stable.get(a)]
    devices = [d for d in targets if best_routes.get(d)]
    right = sum(1 for d in devices if targets[d] == best_routes[d])
    sure = [d for d in devices if clear is not None and d in clear]
    sure_right = sum(1 for d in sure if targets[d] == best_routes[d])
    extra: dict[str, Any] = {}
    if followed is not None:
        hits, counted = followed
        extra = {"primary_accuracy_movers": round(hits / counted, 4) if counted else None,
                 "mover_sends_scored": counted}
    if clear_accounts is not None:
        plain = [a for a in steady if a in clear_accounts]
        extra["primary_accuracy_clear"] = share(plain)
        extra["stable_accounts_clear_scored"] = len(plain)
    if clear is not None:
        extra["route_accuracy_clear"] = round(sure_right / len(sure), 4) if sure else None
        extra["devices_clear_scored"] = len(sure)
    return {
        "primary_accuracy_stable": share(steady), "stable_accounts_scored": len(steady),
        "primary_accuracy_movers": share(movers), "movers_scored": len(movers),
        "route_accuracy": round(right / len(devices), 4) if devices else None,
        "devices_scored": len(devices), "devices": len(best_routes), **extra,
    }


def _seconds(ms: Any) -> float | None:
    """Milliseconds (nan when nothing was read) as seconds."""
    value = float(ms)
    return None if value != value else round(value / 1000, 2)

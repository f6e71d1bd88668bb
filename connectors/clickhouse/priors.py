"""The priors job: fleet route rates from ClickHouse onto the compacted `route.priors` topic."""

from __future__ import annotations

import math
import time
from collections.abc import Iterable
from typing import Any

from connectors.clickhouse.warehouse import Warehouse
from schemas import Codec
from streams.domain.priors import FleetRate, Prior, compute
from streams.domain.records import ms

TOPIC = "route.priors"
#: Sends and receipts per manufacturer, model and route (the manufacturer_routes view), of the
#: sends in a span of time and per time bucket ({bucket}: the bucket's start, else 0).
QUERY = """
SELECT d.manufacturer AS manufacturer, d.model AS model, a.route AS route, {bucket} AS at,
       count() AS sends, countIf(a.received) AS receipts
FROM send_acks AS a
INNER JOIN (SELECT device_id, manufacturer, model FROM devices FINAL) AS d
    ON d.device_id = a.device_id
WHERE a.channel = 'APP' AND a.route != ''{span}
GROUP BY manufacturer, model, route, at ORDER BY manufacturer, model, route, at
"""
SINCE = " AND a.sent_at >= {end} - toIntervalMillisecond({ms})"
BEFORE = " AND a.sent_at < {end}"
BUCKET = "toUnixTimestamp(toStartOfInterval(a.sent_at, toIntervalSecond({seconds})))"
#: The warehouse's clock (its newest APP send on a route, ms since the epoch) and how late the
#: receipts of its last RECENT seconds of sends came (their SETTLE_QUANTILE, ms): read from the
#: sends and receipts of those seconds only, not through send_acks (which joins every ack).
SETTLING = """
WITH (SELECT max(sent_at) FROM sends WHERE channel = 'APP' AND route != '') AS newest_at
SELECT toUnixTimestamp64Milli(newest_at) AS newest,
       quantile({quantile})(toUnixTimestamp64Milli(r.receipt_at)
                            - toUnixTimestamp64Milli(s.sent_at)) AS delay
FROM (SELECT send_id, sent_at FROM sends FINAL WHERE channel = 'APP' AND route != ''
      AND sent_at >= newest_at - toIntervalSecond({recent})) AS s
INNER JOIN (SELECT send_id, min(acked_at) AS receipt_at FROM acks FINAL
            WHERE kind = 'RECEIPT' AND send_id != ''
            AND acked_at >= newest_at - toIntervalSecond({recent}) GROUP BY send_id) AS r
    ON r.send_id = s.send_id
"""
#: A send counts once its receipt, if it comes, has come: once this quantile of the recent
#: receipts' delays has passed since it (with `pending` its least)...
SETTLE_QUANTILE = 0.99
#: ...of the receipts of the sends of this many seconds before the newest.
RECENT = 60


#: At most this many time buckets in a window (the fit's work grows with them).
BUCKETS = 200


def bucket_seconds(half_life: float, window: float = 0.0) -> int:
    """The time bucket of sends a half-life weighs alike: a quarter of it, at least 1 s, and
    at least 1/BUCKETS of the window."""
    return max(1, int(half_life / 4), int(window / BUCKETS))


def settled(warehouse: Warehouse, pending: float) -> float | None:
    """Before when (epoch seconds) a send's receipt has had its time: the warehouse's newest
    send less the recent receipts' delay (SETTLE_QUANTILE of its last RECENT seconds), at
    least `pending`. Its clock, not this one: a sink behind shows the sends and their receipts
    late alike; and receipts that come late under load (past the receipt deadline) do not
    count their sends as failures while they are on their way. None: no send yet."""
    [row] = warehouse.rows(SETTLING.format(quantile=SETTLE_QUANTILE, recent=RECENT))
    newest, delay = row["newest"], row["delay"]
    if not newest:
        return None
    late = float(delay) / 1000 if delay is not None and math.isfinite(float(delay)) else 0.0
    return float(newest) / 1000 - max(pending, late)


def fleet_rates(warehouse: Warehouse, window: float = 0.0, pending: float = 0.0,
                half_life: float = 0.0) -> list[FleetRate]:
    """Sends and receipts per manufacturer, model and route: of the `window` seconds of sends
    before those whose receipts may still come (see settled; window 0: all history), per time
    bucket of the half-life (`at` its middle; none without one)."""
    cut = settled(warehouse, pending) if pending > 0 else None
    end = "now64(3)" if cut is None else f"fromUnixTimestamp64Milli({int(cut * 1000)})"
    span = (SINCE.format(end=end, ms=int(window * 1000)) if window > 0 else "") + (
        BEFORE.format(end=end) if cut is not None else "")
    width = bucket_seconds(half_life, window) if half_life > 0 else 0
    sql = QUERY.format(span=span, bucket=BUCKET.format(seconds=width) if width else "0")
    return [FleetRate(str(r["manufacturer"]), str(r["model"]), str(r["route"]),
                      int(r["sends"]), int(r["receipts"]),
                      float(r["at"]) + width / 2 if width else 0.0)
            for r in warehouse.rows(sql)]


def retired(before: Iterable[str], priors: Iterable[Prior]) -> list[str]:
    """The keys published before that these priors no longer have (too few sends in the
    window now): their stale rates are withdrawn, so devices fall back to the default prior
    and try the route again rather than keep an outage's rate."""
    return sorted(set(before) - {p.key for p in priors})


def publish(priors: list[Prior], producer: Any, codec: Codec, topic: str,
            now: float | None = None, retire: Iterable[str] = ()) -> None:
    """Write each prior to the topic, keyed manufacturer/model/route, and a tombstone for
    each key to retire; wait for the acks."""
    at = ms(time.time() if now is None else now)
    for key in retire:
        producer.produce(topic, key=key.encode(), value=None)
    for p in priors:
        producer.produce(topic, key=p.key.encode(), value=codec.encode("RoutePrior", {
            "manufacturer": p.manufacturer, "model": p.model, "route": p.route,
            "success_rate": p.success_rate, "samples": p.samples, "computed_at": at}))
    if producer.flush(30) > 0:
        raise RuntimeError(f"{topic}: priors not acknowledged by the broker within 30s")


def refresh(warehouse: Warehouse, producer: Any, codec: Codec, topic: str,
            min_samples: int, window: float = 0.0, before: Iterable[str] = (),
            pending: float = 0.0, half_life: float = 0.0) -> list[Prior]:
    """Compute the priors from the warehouse (the sends of `window` seconds before the newest
    `pending`; 0: all, weighed by `half_life`, see compute) and publish them, withdrawing the
    keys of `before` (the last refresh's) they no longer have; returns what was published."""
    priors = compute(fleet_rates(warehouse, window, pending, half_life), min_samples,
                     time.time(), half_life)
    publish(priors, producer, codec, topic, retire=retired(before, priors))
    return priors

"""The priors job: fleet route rates from ClickHouse onto the compacted `route.priors` topic."""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from connectors.clickhouse.warehouse import Warehouse
from schemas import Codec
from streams.domain.priors import FleetRate, Prior, compute
from streams.domain.records import ms

TOPIC = "route.priors"
QUERY = ("SELECT manufacturer, model, route, sends, receipts FROM manufacturer_routes "
         "ORDER BY manufacturer, model, route")
#: The same over the sends of a window of time (the manufacturer_routes view, bounded).
RECENT = """
SELECT d.manufacturer AS manufacturer, d.model AS model, a.route AS route,
       count() AS sends, countIf(a.received) AS receipts
FROM send_acks AS a
INNER JOIN (SELECT device_id, manufacturer, model FROM devices FINAL) AS d
    ON d.device_id = a.device_id
WHERE a.channel = 'APP' AND a.route != ''
  AND a.sent_at >= now64(3) - toIntervalMillisecond({start_ms})
  AND a.sent_at < now64(3) - toIntervalMillisecond({end_ms})
GROUP BY manufacturer, model, route ORDER BY manufacturer, model, route
"""


#: The newest sends a windowed rate leaves out (their receipts may still come): a quarter of
#: the window, at most this many seconds.
PENDING = 300.0


def fleet_rates(warehouse: Warehouse, window: float = 0.0) -> list[FleetRate]:
    """Sends and receipts per manufacturer, model and route (manufacturer_routes): of all
    history, or of the `window` seconds of sends before the newest (a quarter of the window,
    at most PENDING s), whose receipts may still come."""
    pending = min(window / 4, PENDING)
    sql = QUERY if window <= 0 else RECENT.format(start_ms=int((window + pending) * 1000),
                                                  end_ms=int(pending * 1000))
    return [FleetRate(str(r["manufacturer"]), str(r["model"]), str(r["route"]),
                      int(r["sends"]), int(r["receipts"]))
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
            min_samples: int, window: float = 0.0, before: Iterable[str] = ()) -> list[Prior]:
    """Compute the priors from the warehouse (the sends of `window` seconds; 0: all) and
    publish them, withdrawing the keys of `before` (the last refresh's) they no longer have;
    returns what was published."""
    priors = compute(fleet_rates(warehouse, window), min_samples)
    publish(priors, producer, codec, topic, retire=retired(before, priors))
    return priors

"""The priors job: fleet route rates from ClickHouse onto the compacted `route.priors` topic."""

from __future__ import annotations

import time
from typing import Any

from connectors.clickhouse.warehouse import Warehouse
from schemas import Codec
from streams.domain.priors import FleetRate, Prior, compute
from streams.domain.records import ms

TOPIC = "route.priors"
QUERY = ("SELECT manufacturer, model, route, sends, receipts FROM manufacturer_routes "
         "ORDER BY manufacturer, model, route")


def fleet_rates(warehouse: Warehouse) -> list[FleetRate]:
    """Sends and receipts per manufacturer, model and route, from the manufacturer_routes view."""
    return [FleetRate(str(r["manufacturer"]), str(r["model"]), str(r["route"]),
                      int(r["sends"]), int(r["receipts"]))
            for r in warehouse.rows(QUERY)]


def publish(priors: list[Prior], producer: Any, codec: Codec, topic: str,
            now: float | None = None) -> None:
    """Write each prior to the topic, keyed manufacturer/model/route, and wait for the acks."""
    at = ms(time.time() if now is None else now)
    for p in priors:
        producer.produce(topic, key=p.key.encode(), value=codec.encode("RoutePrior", {
            "manufacturer": p.manufacturer, "model": p.model, "route": p.route,
            "success_rate": p.success_rate, "samples": p.samples, "computed_at": at}))
    if producer.flush(30) > 0:
        raise RuntimeError(f"{topic}: priors not acknowledged by the broker within 30s")


def refresh(warehouse: Warehouse, producer: Any, codec: Codec, topic: str,
            min_samples: int) -> list[Prior]:
    """Compute the priors from the warehouse and publish them; returns what was published."""
    priors = compute(fleet_rates(warehouse), min_samples)
    publish(priors, producer, codec, topic)
    return priors

"""Fleet route priors: what every device of a manufacturer (or model) receives on (pure).

A device that has not measured a route ranks it by a prior. Instead of one fixed value, the
fleet's measured receipt rate of that route for the device's manufacturer is used, and the
model's own rate where the model alone has enough sends. Rates come from ClickHouse (the
`manufacturer_routes` view) through the `route.priors` topic."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

#: The model field of a manufacturer-wide prior.
ANY_MODEL = None


@dataclass(frozen=True)
class FleetRate:
    """Sends on a route to one manufacturer's model, and how many came back with a receipt."""

    manufacturer: str
    model: str
    route: str
    sends: int
    receipts: int


@dataclass(frozen=True)
class Prior:
    """A route's receipt rate for a manufacturer (model None) or one model, over `samples`."""

    manufacturer: str
    model: str | None
    route: str
    success_rate: float
    samples: int

    @property
    def key(self) -> str:
        """Its key on the compacted topic: manufacturer/model/route, model '*' for all."""
        return f"{self.manufacturer}/{self.model or '*'}/{self.route}"


def normalise(name: str | None) -> str:
    """Manufacturer and model names compare case- and space-insensitively."""
    return " ".join((name or "").lower().split())


def compute(rates: Iterable[FleetRate], min_samples: int) -> list[Prior]:
    """Priors per manufacturer and route, and per model and route, each with at least
    `min_samples` sends; sorted by key."""
    if min_samples < 1:
        raise ValueError("min_samples must be at least 1")
    totals: dict[tuple[str, str | None, str], list[int]] = {}
    for r in rates:
        if r.sends < 0 or not 0 <= r.receipts <= r.sends:
            raise ValueError(f"inconsistent fleet rate {r}")
        maker, model = normalise(r.manufacturer), normalise(r.model)
        if not maker or not r.route:
            continue
        keys: list[tuple[str, str | None, str]] = [(maker, ANY_MODEL, r.route)]
        if model:
            keys.append((maker, model, r.route))
        for key in keys:
            total = totals.setdefault(key, [0, 0])
            total[0] += r.sends
            total[1] += r.receipts
    priors = [Prior(maker, model, route, receipts / sends, sends)
              for (maker, model, route), (sends, receipts) in totals.items()
              if sends >= min_samples]
    return sorted(priors, key=lambda p: p.key)


class PriorBook:
    """The latest prior per key, and the priors of a device."""

    def __init__(self) -> None:
        self._by_key: dict[tuple[str, str | None, str], float] = {}

    def __len__(self) -> int:
        return len(self._by_key)

    def put(self, manufacturer: str, model: str | None, route: str, rate: float) -> None:
        """Remember a prior (a later one for the same key replaces it)."""
        self._by_key[(normalise(manufacturer), normalise(model) or ANY_MODEL, route)] = rate

    def remove(self, manufacturer: str, model: str | None, route: str) -> None:
        """Forget a prior (a tombstone on the topic)."""
        self._by_key.pop((normalise(manufacturer), normalise(model) or ANY_MODEL, route), None)

    def for_device(self, manufacturer: str, model: str,
                   routes: Iterable[str]) -> Mapping[str, float]:
        """Each route's prior for this device: the model's, else the manufacturer's; routes
        the fleet has not measured are left out (the caller's default applies)."""
        maker, mod = normalise(manufacturer), normalise(model)
        found: dict[str, float] = {}
        for route in routes:
            rate = self._by_key.get((maker, mod, route)) if mod else None
            if rate is None:
                rate = self._by_key.get((maker, ANY_MODEL, route))
            if rate is not None:
                found[route] = rate
        return found

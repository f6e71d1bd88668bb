"""Fleet route priors: what every device of a manufacturer (or model) receives on (pure).

A device that has not measured a route ranks it by a prior. Instead of one fixed value, the
fleet's measured receipt rate of that route for the device's manufacturer is used, and the
model's own rate where the model alone has enough sends. Rates come from ClickHouse (the
`manufacturer_routes` view) through the `route.priors` topic. adaptive reads them as a
hierarchy instead: the route's rate across the fleet, the manufacturer's shrunk toward it, the
model's shrunk toward that (a small group's noisy rate does not outrank the fleet's)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from streams.domain.routes import original_route

#: The model field of a manufacturer-wide prior.
ANY_MODEL = None
#: The manufacturer field of a route-wide prior (every manufacturer's sends on the route).
ANY_MANUFACTURER = "*"
#: adaptive shrinks a group's rate toward its parent's (model to manufacturer to the route's
#: across the fleet), its own sends weighing against this many of the parent's: a model with
#: a few dozen sends mostly follows its manufacturer, one with thousands its own rate.
SHRINK_SENDS = 50.0


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
    """Priors per manufacturer and route, per model and route, and per route across the fleet
    (its sends to phones whose own route it is left out: FCM for a Google phone says nothing of
    FCM as another phone's alternative), each with at least `min_samples` sends; by key."""
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
        if original_route(r.manufacturer, r.model).route != r.route:  # the fleet's rate of a
            keys.append((ANY_MANUFACTURER, ANY_MODEL, r.route))  # route as an alternative
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


def shrink(rate: float, samples: float, parent: float | None) -> float:
    """A group's rate drawn toward its parent's, its samples against SHRINK_SENDS."""
    if parent is None:
        return rate
    return (rate * samples + parent * SHRINK_SENDS) / (samples + SHRINK_SENDS)


class PriorBook:
    """The latest prior per key, and the priors of a device."""

    def __init__(self) -> None:
        self._by_key: dict[tuple[str, str | None, str], float] = {}
        self._samples: dict[tuple[str, str | None, str], float] = {}

    def __len__(self) -> int:
        return len(self._by_key)

    def put(self, manufacturer: str, model: str | None, route: str, rate: float,
            samples: float = 0.0) -> None:
        """Remember a prior over `samples` sends (a later one for the same key replaces it)."""
        key = (normalise(manufacturer), normalise(model) or ANY_MODEL, route)
        self._by_key[key] = rate
        self._samples[key] = samples

    def remove(self, manufacturer: str, model: str | None, route: str) -> None:
        """Forget a prior (a tombstone on the topic)."""
        key = (normalise(manufacturer), normalise(model) or ANY_MODEL, route)
        self._by_key.pop(key, None)
        self._samples.pop(key, None)

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

    def shrunk(self, manufacturer: str, model: str,
               routes: Iterable[str]) -> Mapping[str, float]:
        """adaptive's prior of each route for this device: the route's rate across the fleet,
        the manufacturer's drawn toward it, the model's drawn toward that (each level by its
        sends against SHRINK_SENDS); routes no level has are left out."""
        maker, mod = normalise(manufacturer), normalise(model)
        found: dict[str, float] = {}
        for route in routes:
            rate: float | None = None
            levels: list[tuple[str, str | None, str]] = [(ANY_MANUFACTURER, ANY_MODEL, route),
                                                          (maker, ANY_MODEL, route)]
            if mod:
                levels.append((maker, mod, route))
            for key in levels:  # (.get: the follower thread may put or remove a key meanwhile)
                level = self._by_key.get(key)
                if level is not None:
                    rate = shrink(level, self._samples.get(key, 0.0), rate)
            if rate is not None:
                found[route] = rate
        return found

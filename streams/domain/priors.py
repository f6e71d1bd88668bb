"""Fleet route priors: what every device of a manufacturer (or model) receives on (pure).

A device that has not measured a route ranks it by a prior. Instead of one fixed value, the
fleet's measured receipt rate of that route for the device's manufacturer is used, and the
model's own rate where the model alone has enough sends. Rates come from ClickHouse (the
`manufacturer_routes` view) through the `route.priors` topic. adaptive reads them as a
hierarchy instead: the route's rate across the fleet, the manufacturer's shrunk toward it, the
model's shrunk toward that (a small group's noisy rate does not outrank the fleet's)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from streams.domain.routes import original_route

#: The model field of a manufacturer-wide prior.
ANY_MODEL = None
#: The manufacturer field of a route-wide prior (every manufacturer's sends on the route).
ANY_MANUFACTURER = "*"
#: adaptive shrinks a group's rate toward its parent's (model to manufacturer to the route's
#: across the fleet): a group keeps only the part of its distance from its parent that lies
#: beyond this many standard errors of its own sends (at the parent's rate). A difference
#: its noise could explain is shrunk away (a manufacturer whose 20 sends on JPUSH read 0.68
#: against the fleet's 0.85 follows the fleet); a route broken for a manufacturer, or a model
#: measured at length, keeps its own rate.
SHRINK_Z = 2.0


@dataclass(frozen=True)
class FleetRate:
    """Sends on a route to one manufacturer's model, and how many came back with a receipt;
    `at`: when they were sent (the middle of their time bucket, epoch seconds; 0: undated)."""

    manufacturer: str
    model: str
    route: str
    sends: int
    receipts: int
    at: float = 0.0


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


def _weight(at: float, now: float, half_life: float) -> float:
    """A send's weight by its age: 1/2 per half_life (all 1 without one)."""
    return 0.5 ** (max(0.0, now - at) / half_life) if half_life > 0 else 1.0


Key = tuple[str, str | None, str]
#: Rounds of fitting a route's rate as its rate at each time times each model's own factor
#: (at most; it stops once no factor moves by more than FIT_TOLERANCE of itself).
FIT_ROUNDS = 25
FIT_TOLERANCE = 1e-4
#: A route's rate changed where its sends before and after a moment differ by this many
#: standard errors (many moments are tried: a high bar keeps noise from cutting).
CHANGE_Z = 4.0


def compute(rates: Iterable[FleetRate], min_samples: int, now: float = 0.0,
            half_life: float = 0.0) -> list[Prior]:
    """Priors per route across the fleet (its sends to phones whose own route it is left
    out: FCM for a Google phone says nothing of FCM as another phone's alternative), per
    manufacturer and route and per model and route, each over at least `min_samples` sends;
    by key.

    With a `half_life`, the fleet's rate is of its recent sends (each weighs 1/2 per
    half_life of its age, the samples are the weights' sum) since its rate last changed
    (see changed), so a route that fails across the fleet drops out at once and, unused,
    comes back within a few half-lives. A group's rate is the
    route's rate now times the group's own factor, fitted over every send of the window as a
    rate per time times a factor per model: a model that fails where the fleet receives stays
    known after the fleet stops sending it there, and an outage that hits everyone marks no
    group down. Without dates a group's rate is its receipts over its sends. A route that is
    only phones' own (no fleet rate) has its groups' recent rates."""
    if min_samples < 1:
        raise ValueError("min_samples must be at least 1")
    alternatives: dict[str, list[tuple[FleetRate, Key, Key]]] = {}
    own: dict[Key, list[float]] = {}  # weighted sends, weighted receipts
    for r in rates:
        if r.sends < 0 or not 0 <= r.receipts <= r.sends:
            raise ValueError(f"inconsistent fleet rate {r}")
        maker, model = normalise(r.manufacturer), normalise(r.model)
        if not maker or not r.route:
            continue
        keys = ((maker, ANY_MODEL, r.route), (maker, model or ANY_MODEL, r.route))
        if original_route(r.manufacturer, r.model).route != r.route:
            alternatives.setdefault(r.route, []).append((r, *keys))
            continue
        weight = _weight(r.at, now, half_life)
        for key in {keys[0], keys[1]} if model else {keys[0]}:
            total = own.setdefault(key, [0.0, 0.0])
            total[0] += weight * r.sends
            total[1] += weight * r.receipts
    priors: list[Prior] = []
    for route, rows in alternatives.items():
        priors += _route_priors(route, rows, min_samples, now, half_life)
    fitted = {(p.manufacturer, p.model, p.route) for p in priors}
    priors += [Prior(maker, mod, route, receipts / sends, round(sends))
               for (maker, mod, route), (sends, receipts) in own.items()
               if sends >= min_samples and (maker, mod, route) not in fitted]
    return sorted(priors, key=lambda p: p.key)


def _route_priors(route: str, rows: list[tuple[FleetRate, Key, Key]], min_samples: int,
                  now: float, half_life: float) -> list[Prior]:
    """One route's priors from its sends as an alternative (see compute)."""
    weights = {r.at: _weight(r.at, now, half_life) for r, _, _ in rows}
    since = changed(rows, min_samples) if half_life > 0 else None
    recent = [row for row in rows if since is None or row[0].at > since]
    sends_now = sum(weights[r.at] * r.sends for r, _, _ in recent)
    receipts_now = sum(weights[r.at] * r.receipts for r, _, _ in recent)
    if sends_now < min_samples:
        return []  # the route's rate is stale: none of its levels stands
    priors = [Prior(ANY_MANUFACTURER, ANY_MODEL, route, receipts_now / sends_now,
                    round(sends_now))]
    factor = {model: 1.0 for _, _, model in rows}
    at_rate: dict[float, float] = {}
    for _ in range(FIT_ROUNDS):  # rate at each time, then each model's factor, till they agree
        at_rate = _ratio(((r.at, r.receipts, r.sends * factor[m]) for r, _, m in rows))
        fitted = _ratio(((m, r.receipts, r.sends * at_rate[r.at]) for r, _, m in rows),
                        default=1.0)
        settled = all(abs(fitted[m] - f) <= FIT_TOLERANCE * f for m, f in factor.items())
        factor = fitted
        if settled:
            break
    expected_now = sum(weights[r.at] * r.sends * factor[m] for r, _, m in recent)
    rate_now = receipts_now / expected_now if expected_now else 0.0  # per unit of factor
    for level in (1, 2):  # the manufacturer's, each model's
        sends: dict[Key, float] = {}
        for r, *keys in rows:
            sends[keys[level - 1]] = sends.get(keys[level - 1], 0.0) + r.sends
        group = _ratio(((keys[level - 1], r.receipts, r.sends * at_rate[r.at])
                        for r, *keys in rows), default=1.0)
        priors += [Prior(*key, min(1.0, rate_now * group[key]), round(n))
                   for key, n in sends.items() if n >= min_samples
                   and (level == 1 or key[1] is not ANY_MODEL)]
    return priors


def changed(rows: Iterable[tuple[FleetRate, Key, Key]], min_samples: int) -> float | None:
    """The time of a route's newest change of rate (an outage began or ended): the latest
    split of its sends in time whose newer side (at least min_samples sends) receives at a
    rate CHANGE_Z standard errors from the older side's, found again in the newer side till
    none is (as ADWIN does); None without one. The fleet's rate counts only what came after,
    so the failures of an outage that ended do not hold its rate down for half-lives."""
    totals: dict[float, list[float]] = {}
    for r, _, _ in rows:
        total = totals.setdefault(r.at, [0.0, 0.0])
        total[0] += r.sends
        total[1] += r.receipts
    times = sorted(totals)
    since: float | None = None
    while True:
        window = [t for t in times if since is None or t > since]
        sends = sum(totals[t][0] for t in window)
        receipts = sum(totals[t][1] for t in window)
        cut, top = None, CHANGE_Z
        old_sends = old_receipts = 0.0
        for t in window[:-1]:
            old_sends += totals[t][0]
            old_receipts += totals[t][1]
            new_sends, new_receipts = sends - old_sends, receipts - old_receipts
            if old_sends <= 0 or new_sends < min_samples:
                continue
            pooled = receipts / sends
            error = math.sqrt(max(pooled * (1 - pooled), 1e-9) * (1 / old_sends + 1 / new_sends))
            z = abs(old_receipts / old_sends - new_receipts / new_sends) / error
            if z > top:
                cut, top = t, z
        if cut is None:
            return since
        since = cut


def _ratio(rows: Iterable[tuple[Any, float, float]], default: float = 0.0) -> dict[Any, float]:
    """Per key, the sum of the first figures over the sum of the second (default where 0)."""
    sums: dict[Any, list[float]] = {}
    for key, top, bottom in rows:
        total = sums.setdefault(key, [0.0, 0.0])
        total[0] += top
        total[1] += bottom
    return {key: top / bottom if bottom else default for key, (top, bottom) in sums.items()}


def shrink(rate: float, samples: float, parent: float | None) -> float:
    """A group's rate drawn toward its parent's: it keeps the share of its squared distance
    from the parent that its noise (SHRINK_Z standard errors of its samples at the parent's
    rate) does not explain (positive-part James-Stein, one group at a time)."""
    if parent is None:
        return rate
    gap = rate - parent
    noise = SHRINK_Z ** 2 * parent * (1.0 - parent) / samples if samples > 0 else math.inf
    if gap * gap <= noise:
        return parent
    return parent + (1.0 - noise / (gap * gap)) * gap


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
        the manufacturer's drawn toward it, the model's drawn toward that (each by how far it
        lies beyond its own noise: shrink); routes no level has are left out."""
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

"""Route probing: which probes are due, per-device and global rate limits, target changes."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from enum import StrEnum
from typing import Any

from streams.domain import posterior as bayes
from streams.domain.routes import (
    DEFAULT_PRIOR,
    DeviceRoutes,
    ProbeKind,
    SendKind,
    expire_pending,
    rank_alternatives,
    record_probe,
    route_prior,
    success_rate,
)


@dataclass(frozen=True)
class ProbeConfig:
    """Probing settings (counts, thresholds, schedule, rate limits, prior for unmeasured routes)."""

    probe_count_first: int = 100
    probe_count_again: int = 20
    min_route_success: float = 0.8
    reprobe_interval_s: float = 86_400.0
    per_device_probes_per_hour: float = 12.0
    global_probes_per_second: float = 50.0
    probe_timeout_s: float = 300.0
    max_probes_per_plan: int = 3
    target_count: int = 1
    prior: float | Mapping[str, float] = field(default=DEFAULT_PRIOR)
    #: the routes whose prior is the fleet's measured rate (the others' is a default guess)
    fleet: frozenset[str] = frozenset()
    #: adaptive: routes chosen by their posteriors (streams.domain.posterior) instead of
    #: fixed probe windows; evidence halves every half_life_s; the prior counts as
    #: prior_strength outcomes
    bandit: bool = False
    half_life_s: float = 3600.0
    prior_strength: float = 32.0

    def __post_init__(self) -> None:
        if self.probe_count_first < 1 or self.probe_count_again < 1:
            raise ValueError("probe counts must be at least 1")
        if not 0.0 <= self.min_route_success <= 1.0:
            raise ValueError("min_route_success must be within [0, 1]")
        if self.per_device_probes_per_hour <= 0 or self.global_probes_per_second <= 0:
            raise ValueError("probe rate limits must be positive")
        if self.reprobe_interval_s < 0 or self.probe_timeout_s <= 0:
            raise ValueError("reprobe_interval_s must be >= 0 and probe_timeout_s > 0")
        if self.max_probes_per_plan < 1 or self.target_count < 1:
            raise ValueError("max_probes_per_plan and target_count must be at least 1")
        if self.half_life_s <= 0 or self.prior_strength <= 0:
            raise ValueError("half_life_s and prior_strength must be positive")


def posteriors(device: DeviceRoutes, cfg: ProbeConfig, now: float) -> dict[str, bayes.Beta]:
    """Each alternative route's posterior on this device, in registration order: the fleet's
    prior counts as cfg.prior_strength outcomes, the default prior (no fleet rate) as
    bayes.UNINFORMED outcomes."""
    def strength(route: str) -> float:
        return cfg.prior_strength if route in cfg.fleet else bayes.UNINFORMED

    return {r: bayes.posterior(device.stats[r].outcomes if r in device.stats else (),
                               route_prior(r, cfg.prior), now, cfg.half_life_s, strength(r))
            for r in device.alternatives}


def _refill(
    tokens: float | None, at: float | None, now: float, rate: float, capacity: float
) -> tuple[float, float]:
    """Token-bucket refill; a clock that steps back adds nothing and keeps the later stamp."""
    if tokens is None or at is None:
        return capacity, now
    if now <= at:
        return min(tokens, capacity), at
    return min(capacity, tokens + (now - at) * rate), now


@dataclass
class ProbeBudget:
    """Global probe token bucket with counters of granted and denied probes."""

    rate_per_s: float
    capacity: float
    tokens: float
    updated_at: float | None = None
    granted: int = 0
    denied: int = 0

    @classmethod
    def from_config(cls, cfg: ProbeConfig) -> ProbeBudget:
        """A full bucket for cfg.global_probes_per_second, bursting at most one second's worth."""
        capacity = max(1.0, cfg.global_probes_per_second)
        return cls(cfg.global_probes_per_second, capacity, capacity)

    def to_dict(self) -> dict[str, Any]:
        """JSON-compatible form."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ProbeBudget:
        """Inverse of to_dict."""
        return cls(**{f.name: data[f.name] for f in fields(cls) if f.name in data})


def take(budget: ProbeBudget, wanted: int, now: float) -> int:
    """Take up to `wanted` whole tokens from the global budget at time now; return how many."""
    budget.tokens, budget.updated_at = _refill(
        budget.tokens, budget.updated_at, now, budget.rate_per_s, budget.capacity
    )
    granted = max(0, min(wanted, math.floor(budget.tokens + 1e-9)))
    budget.tokens = max(0.0, budget.tokens - granted)
    budget.granted += granted
    budget.denied += max(0, wanted) - granted
    return granted


@dataclass(frozen=True)
class Probe:
    """A probe to send now: route, kind and the send_id it was recorded under."""

    route: str
    kind: ProbeKind
    send_id: str


def _due(device: DeviceRoutes, now: float, cfg: ProbeConfig) -> list[tuple[str, ProbeKind]]:
    """Due probes in priority order: re-probes of targets, then first windows round-robin."""
    due: list[tuple[str, ProbeKind]] = []
    for route in device.target:
        stats = device.stats.get(route)
        if stats is None or route not in device.alternatives:
            continue
        if stats.reprobe_sent == 0:
            started = stats.probed_at is None or now - stats.probed_at >= cfg.reprobe_interval_s
            missing = cfg.probe_count_again if started else 0
        else:
            missing = cfg.probe_count_again - stats.reprobe_sent
        due += [(route, ProbeKind.AGAIN)] * max(0, missing)
    missing_first = {
        r: cfg.probe_count_first - (device.stats[r].probes_sent if r in device.stats else 0)
        for r in device.alternatives
    }
    while len(due) < cfg.max_probes_per_plan and any(n > 0 for n in missing_first.values()):
        for route, n in missing_first.items():
            if n > 0:
                due.append((route, ProbeKind.FIRST))
                missing_first[route] = n - 1
    return due


def _bandit_due(device: DeviceRoutes, now: float,
                cfg: ProbeConfig) -> list[tuple[str, ProbeKind]]:
    """adaptive: one probe of the route whose posterior is uncertain enough to change the
    choice, or that the device has not seen lately (none while a probe is still out)."""
    if any(p.kind is not SendKind.SEND for p in device.pending.values()):
        return []
    seen = {r: sum(bayes.evidence(device.stats[r].outcomes, now, cfg.half_life_s))
            for r in device.alternatives if r in device.stats}
    route = bayes.to_probe(posteriors(device, cfg, now), seen)
    return [(route, ProbeKind.FIRST)] if route else []


def plan_probes(
    device: DeviceRoutes, now: float, cfg: ProbeConfig, budget: ProbeBudget
) -> list[Probe]:
    """Expire stale probes, then record and return the probes due now within both rate limits."""
    expire_pending(device, now, cfg.probe_timeout_s)
    due = _bandit_due(device, now, cfg) if cfg.bandit else _due(device, now, cfg)
    wanted = min(len(due), cfg.max_probes_per_plan)
    if wanted == 0:
        return []
    capacity = max(1.0, cfg.per_device_probes_per_hour)
    device.probe_tokens, device.probe_tokens_at = _refill(
        device.probe_tokens,
        device.probe_tokens_at,
        now,
        cfg.per_device_probes_per_hour / 3600.0,
        capacity,
    )
    allowed = min(wanted, math.floor(device.probe_tokens + 1e-9))
    granted = take(budget, allowed, now) if allowed > 0 else 0
    device.probe_tokens = max(0.0, device.probe_tokens - granted)
    device.probes_deferred += wanted - granted
    probes: list[Probe] = []
    for route, kind in due[:granted]:
        send_id = f"probe:{device.device_id}:{int(now * 1000)}:{device.probe_seq}"
        device.probe_seq += 1
        window = cfg.probe_count_first if kind is ProbeKind.FIRST else cfg.probe_count_again
        record_probe(device, send_id, route, kind, now, window)
        probes.append(Probe(route, kind, send_id))
    return probes


class TargetReason(StrEnum):
    """Why the target route(s) changed."""

    INITIAL = "INITIAL"
    REPROBE_BELOW_MIN = "REPROBE_BELOW_MIN"
    POSTERIOR = "POSTERIOR"  # adaptive: another route's posterior mean leads


@dataclass(frozen=True)
class TargetChange:
    """A change of a device's target route(s), with the re-probe rate that caused it."""

    device_id: str
    previous: list[str]
    target: list[str]
    reason: TargetReason
    reprobe_rate: float | None = None
    rate: float | None = None  # the new target's measured rate (or posterior mean)


def _close_rounds(device: DeviceRoutes, cfg: ProbeConfig) -> dict[str, float]:
    """Turn every complete, settled re-probe round into a reprobe_rate and reset its counters."""
    closed: dict[str, float] = {}
    for route, s in device.stats.items():
        settled = s.reprobe_acked + s.reprobe_lost >= s.reprobe_sent
        if s.reprobe_sent >= cfg.probe_count_again and settled:
            s.reprobe_rate = min(s.reprobe_acked, s.reprobe_sent) / s.reprobe_sent
            s.reprobe_sent = s.reprobe_acked = s.reprobe_lost = 0
            closed[route] = s.reprobe_rate
    return closed


def evaluate_target(device: DeviceRoutes, cfg: ProbeConfig,
                    now: float = 0.0) -> TargetChange | None:
    """Close finished re-probe rounds; set the first target, or replace one that fell below min
    (adaptive: the route with the best posterior mean, once a route has shown anything)."""
    if cfg.bandit:
        return _bandit_target(device, cfg, now)
    closed = _close_rounds(device, cfg)
    previous = list(device.target)
    target = [r for r in previous if r in device.alternatives]
    ranked = rank_alternatives(device, cfg.probe_count_first, cfg.prior)
    if not target:
        measured = all(
            r in device.stats and success_rate(device.stats[r], cfg.probe_count_first) is not None
            for r in device.alternatives
        )
        if not device.alternatives or not measured:
            device.target = target
            return None
        device.target = ranked[: cfg.target_count]
        return TargetChange(device.device_id, previous, list(device.target), TargetReason.INITIAL)
    worst: float | None = None
    for i, route in enumerate(list(target)):
        rate = closed.get(route)
        if rate is None or rate >= cfg.min_route_success:
            continue
        others = [r for r in ranked if r not in target]
        if others:
            target[i] = others[0]
            worst = rate if worst is None else min(worst, rate)
    device.target = target
    if worst is None:
        return None
    return TargetChange(
        device.device_id, previous, list(target), TargetReason.REPROBE_BELOW_MIN, worst
    )


def _bandit_target(device: DeviceRoutes, cfg: ProbeConfig, now: float) -> TargetChange | None:
    beliefs = posteriors(device, cfg, now)
    if not any(device.stats[r].outcomes for r in beliefs if r in device.stats):
        return None
    previous = list(device.target)
    chosen = bayes.target(beliefs, previous[0] if previous else None)
    if chosen is None or previous == [chosen]:
        return None
    device.target = [chosen]
    return TargetChange(device.device_id, previous, [chosen], TargetReason.POSTERIOR,
                        rate=round(beliefs[chosen].mean, 6))


def choose_fallback(device: DeviceRoutes, cfg: ProbeConfig, now: float, key: str) -> str | None:
    """adaptive: the alternative route a fallback send takes, by Thompson sampling (the same
    choice for the same key)."""
    return bayes.thompson(posteriors(device, cfg, now), key)


@dataclass(frozen=True)
class ProbeCost:
    """Probes sent and acknowledged for a device over its lifetime, and probes held back."""

    sent: int
    acked: int
    deferred: int


def probe_cost(device: DeviceRoutes) -> ProbeCost:
    """Sum the device's probe counters across routes (cost visibility)."""
    sent = sum(s.probes_total for s in device.stats.values())
    acked = sum(s.probes_acked_total for s in device.stats.values())
    return ProbeCost(sent, acked, device.probes_deferred)

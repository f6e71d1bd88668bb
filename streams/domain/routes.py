"""Device push routes: manufacturer mapping, per-route statistics, ranking and receipts."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field, fields
from enum import StrEnum
from functools import lru_cache
from importlib import resources
from typing import Any, NamedTuple, Protocol

from streams.domain.posterior import remember

KNOWN_ROUTES: tuple[str, ...] = (
    "HUAWEI",
    "HONOR",
    "XIAOMI",
    "OPPO",
    "VIVO",
    "APNS",
    "FCM",
    "JPUSH",
    "GETUI",
)
DEFAULT_ROUTE = "FCM"
DEFAULT_PRIOR = 0.5
MAX_PENDING = 256
RECENT_ACKED = 32
MAPPING_FILE = "manufacturer_routes.csv"


class SendKind(StrEnum):
    """What a recorded send was: a push (SEND), a probe in its window, or a probe beyond it."""

    SEND = "SEND"
    FIRST = "FIRST"
    AGAIN = "AGAIN"
    EXTRA = "EXTRA"


class ProbeKind(StrEnum):
    """Kind of probe: FIRST measures an alternative, AGAIN re-tests the target route."""

    FIRST = "FIRST"
    AGAIN = "AGAIN"


class SendOutcome(StrEnum):
    """What record_send / record_probe did with a send."""

    RECORDED = "RECORDED"
    DUPLICATE = "DUPLICATE"
    UNKNOWN_ROUTE = "UNKNOWN_ROUTE"
    MISSING_SEND_ID = "MISSING_SEND_ID"


class ReceiptOutcome(StrEnum):
    """What record_receipt did with a RECEIPT ack."""

    COUNTED = "COUNTED"
    DUPLICATE = "DUPLICATE"
    UNKNOWN_SEND = "UNKNOWN_SEND"
    MISSING_SEND_ID = "MISSING_SEND_ID"


# ---------------------------------------------------------------- manufacturer -> original route


@dataclass(frozen=True)
class MappingRule:
    """One row of the manufacturer mapping table."""

    pattern: str
    route: str
    note: str = ""


@dataclass(frozen=True)
class MappingTable:
    """Mapping rules, longest pattern first, and the default route for unmapped devices."""

    rules: tuple[MappingRule, ...]
    default: str = DEFAULT_ROUTE


@dataclass(frozen=True)
class RouteMapping:
    """A device's original route and whether the mapping table matched it."""

    route: str
    matched: bool


def parse_mapping(text: str) -> MappingTable:
    """Parse mapping CSV text ('#' comment lines allowed); raise ValueError on a bad table."""
    lines = [
        line for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")
    ]
    reader = csv.DictReader(io.StringIO("\n".join(lines)))
    if reader.fieldnames is None or not {"manufacturer_pattern", "route"} <= set(reader.fieldnames):
        raise ValueError("mapping table needs columns manufacturer_pattern, route, note")
    rules: list[MappingRule] = []
    default = DEFAULT_ROUTE
    for row in reader:
        pattern = _normalise(row["manufacturer_pattern"])
        route = normalise_route(row["route"])
        if not pattern or route is None:
            raise ValueError(f"bad mapping row: {row!r}")
        if pattern == "*":
            default = route
        else:
            rules.append(MappingRule(pattern, route, (row.get("note") or "").strip()))
    rules.sort(key=lambda rule: -len(rule.pattern))
    return MappingTable(tuple(rules), default)


@lru_cache(maxsize=1)
def load_mapping() -> MappingTable:
    """Load the packaged manufacturer_routes.csv (cached)."""
    package = __package__ or "streams.domain"
    return parse_mapping(resources.files(package).joinpath(MAPPING_FILE).read_text("utf-8"))


def original_route(
    manufacturer: str | None, model: str | None = "", table: MappingTable | None = None
) -> RouteMapping:
    """Map a manufacturer (then, failing that, the model) to the original route; unmapped -> FCM."""
    table = table or load_mapping()
    for text in (_normalise(manufacturer), _normalise(model)):
        for rule in table.rules:
            if _matches(text, rule.pattern):
                return RouteMapping(rule.route, True)
    return RouteMapping(table.default, False)


def _normalise(text: object) -> str:
    return " ".join(str(text or "").lower().split())


def _matches(text: str, pattern: str) -> bool:
    if not text.startswith(pattern):
        return False
    return len(text) == len(pattern) or not text[len(pattern)].isalpha()


# ---------------------------------------------------------------- route names and alternatives


def normalise_route(name: object) -> str | None:
    """Return the canonical route name (case/whitespace-insensitive), or None if unknown."""
    if not isinstance(name, str):
        return None
    route = name.strip().upper()
    return route if route in KNOWN_ROUTES else None


class AlternativeRoutes(NamedTuple):
    """Alternative routes of a device and the registered names that are not known routes."""

    routes: list[str]
    unknown: list[str]


def alternative_routes(original: str, registered: Iterable[object] | None) -> AlternativeRoutes:
    """Registered routes minus the original, order kept, duplicates dropped, unknowns apart."""
    routes: list[str] = []
    unknown: list[str] = []
    for name in registered or ():
        route = normalise_route(name)
        if route is None:
            unknown.append(str(name))
        elif route != original and route not in routes:
            routes.append(route)
    return AlternativeRoutes(routes, unknown)


# ---------------------------------------------------------------- device state


@dataclass
class RouteStats:
    """Counters of one route for one device (first window, current re-probe round, cost)."""

    sends: int = 0
    receipts: int = 0
    probes_sent: int = 0
    probes_acked: int = 0
    probes_lost: int = 0
    reprobe_sent: int = 0
    reprobe_acked: int = 0
    reprobe_lost: int = 0
    reprobe_rate: float | None = None
    probed_at: float | None = None
    probes_total: int = 0
    probes_acked_total: int = 0
    outcomes: list[list[float]] = field(default_factory=list)  # epochs (posterior.remember)

    def to_dict(self) -> dict[str, Any]:
        """JSON-compatible form."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RouteStats:
        """Inverse of to_dict; missing keys take their defaults."""
        return cls(**{f.name: data[f.name] for f in fields(cls) if f.name in data})


@dataclass(frozen=True)
class PendingSend:
    """A send or probe still waiting for its RECEIPT."""

    route: str
    kind: SendKind
    sent_at: float


@dataclass
class DeviceRoutes:
    """Route state of one device, kept in a Faust table through to_dict/from_dict."""

    device_id: str
    account_id: str
    original: str
    alternatives: list[str] = field(default_factory=list)
    stats: dict[str, RouteStats] = field(default_factory=dict)
    target: list[str] = field(default_factory=list)
    mapped: bool = True
    unknown_routes: list[str] = field(default_factory=list)
    pending: dict[str, PendingSend] = field(default_factory=dict)
    recent_acked: list[str] = field(default_factory=list)
    probe_tokens: float | None = None
    probe_tokens_at: float | None = None
    probe_seq: int = 0
    probes_deferred: int = 0
    duplicate_receipts: int = 0
    unmatched_receipts: int = 0
    manufacturer: str = ""
    model: str = ""

    def to_dict(self) -> dict[str, Any]:
        """JSON-compatible form."""
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        data["alternatives"] = list(self.alternatives)
        data["target"] = list(self.target)
        data["unknown_routes"] = list(self.unknown_routes)
        data["recent_acked"] = list(self.recent_acked)
        data["stats"] = {route: s.to_dict() for route, s in self.stats.items()}
        data["pending"] = {
            sid: [p.route, str(p.kind), p.sent_at] for sid, p in self.pending.items()
        }
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DeviceRoutes:
        """Inverse of to_dict; missing optional keys take their defaults."""
        values = {f.name: data[f.name] for f in fields(cls) if f.name in data}
        values["alternatives"] = list(data.get("alternatives", []))
        values["target"] = list(data.get("target", []))
        values["unknown_routes"] = list(data.get("unknown_routes", []))
        values["recent_acked"] = list(data.get("recent_acked", []))
        values["stats"] = {r: RouteStats.from_dict(s) for r, s in data.get("stats", {}).items()}
        values["pending"] = {
            sid: PendingSend(p[0], SendKind(p[1]), float(p[2]))
            for sid, p in data.get("pending", {}).items()
        }
        return cls(**values)


@dataclass(frozen=True)
class Registration:
    """Result of registering a device: its state and what was wrong with the input."""

    device: DeviceRoutes
    matched: bool
    unknown_routes: list[str]


def register_device(
    device_id: str,
    account_id: str,
    manufacturer: str | None,
    model: str | None,
    routes: Iterable[object] | None,
    previous: DeviceRoutes | None = None,
    table: MappingTable | None = None,
) -> Registration:
    """Build a device's route state from a registration, keeping stats of routes it still has."""
    mapping = original_route(manufacturer, model, table)
    alternatives, unknown = alternative_routes(mapping.route, routes)
    keep = {mapping.route, *alternatives}
    device = DeviceRoutes(
        device_id,
        account_id,
        mapping.route,
        alternatives,
        mapped=mapping.matched,
        unknown_routes=unknown,
        manufacturer=manufacturer or "",
        model=model or "",
    )
    if previous is not None:
        device.stats = {r: s for r, s in previous.stats.items() if r in keep}
        device.target = [r for r in previous.target if r in alternatives]
        device.pending = dict(previous.pending)
        device.recent_acked = list(previous.recent_acked)
        device.probe_tokens = previous.probe_tokens
        device.probe_tokens_at = previous.probe_tokens_at
        device.probe_seq = previous.probe_seq
        device.probes_deferred = previous.probes_deferred
        device.duplicate_receipts = previous.duplicate_receipts
        device.unmatched_receipts = previous.unmatched_receipts
    for route in (mapping.route, *alternatives):
        device.stats.setdefault(route, RouteStats())
    return Registration(device, mapping.matched, unknown)


# ---------------------------------------------------------------- sends, probes, receipts


def record_send(
    device: DeviceRoutes, send_id: str | None, route: object, now: float
) -> SendOutcome:
    """Record a push (ORIGINAL_ROUTE or FALLBACK_ROUTE) sent to the device on a route."""
    return _add_pending(device, send_id, route, SendKind.SEND, now, 0)


def record_probe(
    device: DeviceRoutes,
    send_id: str | None,
    route: object,
    kind: ProbeKind,
    now: float,
    window: int,
) -> SendOutcome:
    """Record a probe; it counts in its window (FIRST or AGAIN) only while the window has room."""
    return _add_pending(device, send_id, route, SendKind(kind), now, window)


def _add_pending(
    device: DeviceRoutes,
    send_id: str | None,
    route: object,
    kind: SendKind,
    now: float,
    window: int,
) -> SendOutcome:
    name = normalise_route(route)
    if not send_id:
        return SendOutcome.MISSING_SEND_ID
    if name is None:
        return SendOutcome.UNKNOWN_ROUTE
    if send_id in device.pending or send_id in device.recent_acked:
        return SendOutcome.DUPLICATE
    stats = device.stats.setdefault(name, RouteStats())
    if kind is SendKind.SEND:
        stats.sends += 1
    else:
        stats.probes_total += 1
        if kind is SendKind.FIRST and stats.probes_sent < window:
            stats.probes_sent += 1
        elif kind is SendKind.AGAIN and stats.reprobe_sent < window:
            stats.reprobe_sent += 1
        else:
            kind = SendKind.EXTRA
    while len(device.pending) >= MAX_PENDING:
        oldest = next(iter(device.pending))
        _settle(device, device.pending.pop(oldest), False, now)
    device.pending[send_id] = PendingSend(name, kind, now)
    return SendOutcome.RECORDED


@dataclass(frozen=True)
class ReceiptResult:
    """What a RECEIPT ack matched: outcome, and the route and kind of the acked send."""

    outcome: ReceiptOutcome
    route: str | None = None
    kind: SendKind | None = None


def record_receipt(device: DeviceRoutes, send_id: str | None, now: float) -> ReceiptResult:
    """Count a RECEIPT for a pending send or probe once; duplicates and strays are reported."""
    if not send_id:
        device.unmatched_receipts += 1
        return ReceiptResult(ReceiptOutcome.MISSING_SEND_ID)
    entry = device.pending.pop(send_id, None)
    if entry is None:
        if send_id in device.recent_acked:
            device.duplicate_receipts += 1
            return ReceiptResult(ReceiptOutcome.DUPLICATE)
        device.unmatched_receipts += 1
        return ReceiptResult(ReceiptOutcome.UNKNOWN_SEND)
    _settle(device, entry, True, now)
    device.recent_acked.append(send_id)
    del device.recent_acked[:-RECENT_ACKED]
    return ReceiptResult(ReceiptOutcome.COUNTED, entry.route, entry.kind)


def expire_pending(device: DeviceRoutes, now: float, timeout_s: float) -> int:
    """Settle sends and probes older than timeout_s as lost; return how many expired."""
    expired = [sid for sid, p in device.pending.items() if now - p.sent_at >= timeout_s]
    for sid in expired:
        _settle(device, device.pending.pop(sid), False, now)
    return len(expired)


def _settle(device: DeviceRoutes, entry: PendingSend, acked: bool, now: float) -> None:
    stats = device.stats.setdefault(entry.route, RouteStats())
    remember(stats.outcomes, now, acked)
    if entry.kind is SendKind.SEND:
        stats.receipts += int(acked)
        return
    stats.probes_acked_total += int(acked)
    if entry.kind is SendKind.FIRST:
        stats.probes_acked += int(acked)
        stats.probes_lost += int(not acked)
    elif entry.kind is SendKind.AGAIN:
        stats.reprobe_acked += int(acked)
        stats.reprobe_lost += int(not acked)
    else:
        return
    stats.probed_at = now if stats.probed_at is None else max(stats.probed_at, now)


# ---------------------------------------------------------------- success rates and ranking


def success_rate(stats: RouteStats, probe_count_first: int) -> float | None:
    """First-window rate acked/sent; None until probe_count_first probes were sent and settled.

    A partial window is not used: the seed defines the rate over the full preset count, and a
    small sample (1 of 1 = 1.0) would outrank a well-measured route; the prior covers the gap.
    """
    if probe_count_first <= 0 or stats.probes_sent < probe_count_first:
        return None
    if stats.probes_acked + stats.probes_lost < stats.probes_sent:
        return None
    return min(stats.probes_acked, stats.probes_sent) / stats.probes_sent


def effective_rate(stats: RouteStats, probe_count_first: int) -> float | None:
    """Latest measured rate: the last completed re-probe round, else the first window."""
    if stats.reprobe_rate is not None:
        return stats.reprobe_rate
    return success_rate(stats, probe_count_first)


def route_prior(route: str, prior: float | Mapping[str, float] = DEFAULT_PRIOR) -> float:
    """Prior success rate assumed for an unmeasured route (one value, or per route)."""
    if isinstance(prior, Mapping):
        return float(prior.get(route, DEFAULT_PRIOR))
    return float(prior)


def rank_alternatives(
    device: DeviceRoutes,
    probe_count_first: int,
    prior: float | Mapping[str, float] = DEFAULT_PRIOR,
) -> list[str]:
    """Alternatives by rate, best first; unmeasured use the prior; ties keep registration order."""

    def rate(route: str) -> float:
        stats = device.stats.get(route)
        measured = None if stats is None else effective_rate(stats, probe_count_first)
        return route_prior(route, prior) if measured is None else measured

    order = {route: i for i, route in enumerate(device.alternatives)}
    return sorted(device.alternatives, key=lambda r: (-rate(r), order[r]))


class RankingConfig(Protocol):
    """The settings fallback_routes needs (ProbeConfig satisfies it)."""

    @property
    def probe_count_first(self) -> int: ...

    @property
    def prior(self) -> float | Mapping[str, float]: ...


def fallback_routes(device: DeviceRoutes, cfg: RankingConfig, top_n: int = 1) -> list[str]:
    """Routes to resend on after a missed receipt: current targets first, then the ranking."""
    if top_n <= 0:
        return []
    targets = [r for r in device.target if r in device.alternatives]
    ranked = rank_alternatives(device, cfg.probe_count_first, cfg.prior)
    return (targets + [r for r in ranked if r not in targets])[:top_n]

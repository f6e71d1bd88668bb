"""Pure simulator policy: per-target acceptance, errors and outages; the population's answers."""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from statistics import NormalDist
from typing import Any

#: z of the 90th percentile of the standard normal distribution.
Z90 = NormalDist().inv_cdf(0.9)


def unit(seed: int, *parts: object) -> float:
    """A deterministic number in [0, 1) from the seed and parts (independent of call order)."""
    text = "\x1f".join(str(p) for p in (seed, *parts)).encode()
    return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "big") / 2**64


@dataclass(frozen=True)
class Behaviour:
    """How the provider behind one route or channel answers sends."""

    accept: float = 1.0  # probability a send is accepted
    latency_ms: float = 0.0  # added before answering
    error: str | None = None  # vendor error code of a rejected send (None: the vendor's default)
    outage_until: float | None = None  # epoch seconds: until then every send gets a 5xx
    retry_after: float = 1.0  # Retry-After seconds sent with outage and throttling answers

    def updated(self, changes: Mapping[str, Any], now: float) -> Behaviour:
        """A copy with changes applied ('outage_s' is relative to now); ValueError on bad keys."""
        values = dict(changes)
        if "outage_s" in values:
            seconds = values.pop("outage_s")
            values["outage_until"] = None if seconds is None else now + float(seconds)
        unknown = set(values) - set(asdict(self))
        if unknown:
            raise ValueError(f"unknown behaviour field(s): {', '.join(sorted(unknown))}")
        new = replace(self, **values)
        if not 0.0 <= float(new.accept) <= 1.0:
            raise ValueError("accept must be within 0..1")
        if float(new.latency_ms) < 0 or float(new.retry_after) < 0:
            raise ValueError("latency_ms and retry_after must not be negative")
        return new


@dataclass(frozen=True)
class Verdict:
    """What the provider does with one send: accept it, reject it with a code, or be down."""

    outcome: str  # "accept", "reject" or "outage"
    code: str | None = None
    retry_after: float | None = None


def decide(behaviour: Behaviour, seed: int, target: str, send_id: str, seen: int,
           now: float) -> Verdict:
    """The verdict for the seen-th arrival of send_id at target."""
    if behaviour.outage_until is not None and now < behaviour.outage_until:
        return Verdict("outage", retry_after=behaviour.retry_after)
    if unit(seed, "accept", target, send_id, seen) < behaviour.accept:
        return Verdict("accept")
    return Verdict("reject", code=behaviour.error, retry_after=behaviour.retry_after)


@dataclass(frozen=True)
class Reaction:
    """What the simulated person and phone do after a send was accepted (delays in seconds)."""

    receipt_after: float | None
    read_after: float | None


@dataclass(frozen=True)
class LogNormal:
    """A log-normal delay given by its median and 90th percentile (milliseconds)."""

    median: float
    p90: float

    def at(self, u: float) -> float:
        """The delay (ms) at quantile u of the distribution (u in [0, 1))."""
        sigma = math.log(self.p90 / self.median) / Z90
        return self.median * math.exp(sigma * NormalDist().inv_cdf(min(max(u, 1e-12),
                                                                      1 - 1e-12)))


#: One delay distribution: a uniform [low, high] range or a log-normal (milliseconds).
Delay = tuple[float, float] | LogNormal
#: A delay for every channel, or one per channel (``*`` for the rest).
Delays = Delay | dict[str, Delay]


@dataclass
class Population:
    """Receipt probabilities per route/channel and read probabilities per channel, with overrides.

    ``receipt`` and ``read`` map a route or channel name (or ``*``) to a probability; accounts
    override ``read`` (and ``read_delay_ms``) by account_id, and may change their mind: from
    ``later.at`` (epoch seconds) on, ``later.read`` (and ``later.read_delay_ms``, if given)
    applies. A read delay is a uniform ``[low, high]``, a log-normal ``{median, p90}``, or a
    map of channels (or ``*``) to either, all in milliseconds; devices override ``receipt`` by
    device_id; ``addresses`` link a phone / openid / e-mail / push token to its account_id or
    device_id; ``outages`` list routes or channels that deliver nothing from ``from`` to
    ``until`` (epoch seconds).
    """

    receipt: dict[str, float] = field(default_factory=lambda: {"*": 1.0})
    read: dict[str, float] = field(default_factory=lambda: {"*": 0.0})
    receipt_delay_ms: tuple[float, float] = (20.0, 200.0)
    read_delay_ms: Delays = (100.0, 1000.0)
    accounts: dict[str, dict[str, Any]] = field(default_factory=dict)
    devices: dict[str, dict[str, Any]] = field(default_factory=dict)
    outages: list[tuple[str, float, float]] = field(default_factory=list)
    by_address: dict[str, dict[str, dict[str, Any]]] = field(
        default_factory=lambda: {"accounts": {}, "devices": {}})

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Population:
        """Validate a population document (see the README); ValueError naming the field."""
        if not isinstance(data, Mapping):
            raise ValueError("population must be an object")
        unknown = set(data) - {"receipt", "read", "receipt_delay_ms", "read_delay_ms",
                               "accounts", "devices", "seed", "outages"}
        if unknown:
            raise ValueError(f"unknown population field(s): {', '.join(sorted(unknown))}")
        pop = cls()
        for name in ("receipt", "read"):
            if name in data:
                setattr(pop, name, _probabilities(data[name], name))
        if "receipt_delay_ms" in data:
            pop.receipt_delay_ms = _range(data["receipt_delay_ms"], "receipt_delay_ms")
        if "read_delay_ms" in data:
            pop.read_delay_ms = _delays(data["read_delay_ms"], "read_delay_ms")
        allowed = {"accounts": {"read", "addresses", "read_delay_ms", "later"},
                   "devices": {"receipt", "addresses"}}
        for group, key in (("accounts", "read"), ("devices", "receipt")):
            entries = data.get(group, {})
            if not isinstance(entries, Mapping):
                raise ValueError(f"{group} must map ids to objects")
            checked = {}
            for ident, entry in entries.items():
                where = f"{group}.{ident}"
                if not isinstance(entry, Mapping) or set(entry) - allowed[group]:
                    raise ValueError(f"{where} may hold only "
                                     f"{', '.join(repr(k) for k in sorted(allowed[group]))}")
                addresses = entry.get("addresses", [])
                if not isinstance(addresses, list) or not all(isinstance(a, str)
                                                              for a in addresses):
                    raise ValueError(f"{where}.addresses must be a list of strings")
                one: dict[str, Any] = {key: _probabilities(entry.get(key, {}), f"{where}.{key}"),
                                       "addresses": list(addresses)}
                if "read_delay_ms" in entry:
                    one["read_delay_ms"] = _delays(entry["read_delay_ms"],
                                                   f"{where}.read_delay_ms")
                if "later" in entry:
                    one["later"] = _later(entry["later"], f"{where}.later")
                checked[str(ident)] = one
                for address in addresses:
                    pop.by_address[group][address] = one
            setattr(pop, group, checked)
        pop.outages = [_outage(o, f"outages[{i}]") for i, o in enumerate(data.get("outages", []))]
        return pop

    def _owner(self, group: str, ident: str | None, address: str) -> dict[str, Any]:
        entries = getattr(self, group)
        if ident and ident in entries:
            return dict(entries[ident])
        return dict(self.by_address[group].get(address, {}))

    def react(self, seed: int, send_id: str, target: str, channel: str, account_id: str | None,
              device_id: str | None, address: str, now: float | None = None) -> Reaction:
        """Whether and when a receipt comes back and the read link is opened for one send."""
        now = time.time() if now is None else now
        device = self._owner("devices", device_id, address)
        account = self._owner("accounts", account_id, address)
        later = account.get("later")
        reads, delays = account.get("read", {}), account.get("read_delay_ms", self.read_delay_ms)
        if later and now >= later["at"]:
            reads, delays = later["read"], later.get("read_delay_ms", delays)
        p_receipt = _lookup(device.get("receipt", {}), target, self.receipt)
        if any(t == target.upper() and start <= now < end for t, start, end in self.outages):
            p_receipt = 0.0
        p_read = _lookup(reads, channel, self.read)
        if unit(seed, "receipt", send_id) >= p_receipt:
            return Reaction(None, None)  # never delivered: no receipt, nothing to read
        receipt_after = _between(self.receipt_delay_ms, unit(seed, "receipt-delay", send_id))
        read_after = None
        if unit(seed, "read", send_id) < p_read:
            read_after = receipt_after + _draw(_for_channel(delays, channel, self.read_delay_ms),
                                               unit(seed, "read-delay", send_id))
        return Reaction(receipt_after, read_after)


def _later(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, Mapping) or not {"at", "read"} <= set(value) \
            or set(value) - {"at", "read", "read_delay_ms"} \
            or not isinstance(value["at"], int | float):
        raise ValueError(f"{where} must be {{at: epoch seconds, read: {{channel: p}}}} "
                         "and optionally read_delay_ms")
    out = {"at": float(value["at"]), "read": _probabilities(value["read"], f"{where}.read")}
    if "read_delay_ms" in value:
        out["read_delay_ms"] = _delays(value["read_delay_ms"], f"{where}.read_delay_ms")
    return out


def _outage(value: Any, where: str) -> tuple[str, float, float]:
    if not isinstance(value, Mapping) or set(value) != {"target", "from", "until"} \
            or not all(isinstance(value[k], int | float) for k in ("from", "until")) \
            or value["from"] > value["until"]:
        raise ValueError(f"{where} must be {{target: route or channel, from: s, until: s}} "
                         "with from <= until (epoch seconds)")
    return str(value["target"]).upper(), float(value["from"]), float(value["until"])


def _lookup(own: Mapping[str, float], key: str, default: Mapping[str, float]) -> float:
    for table in (own, default):
        if key in table:
            return table[key]
        if "*" in table:
            return table["*"]
    return 0.0


def _between(range_ms: tuple[float, float], u: float) -> float:
    low, high = range_ms
    return (low + (high - low) * u) / 1000.0


def _draw(delay: Delay, u: float) -> float:
    """Seconds at quantile u of a delay (a uniform range draws as it always did)."""
    return delay.at(u) / 1000.0 if isinstance(delay, LogNormal) else _between(delay, u)


def _for_channel(delays: Delays, channel: str, default: Delays) -> Delay:
    """The delay of this channel: its own, else ``*``, else the population's."""
    for table in (delays, default):
        if not isinstance(table, dict):
            return table
        for key in (channel.upper(), "*"):
            if key in table:
                return table[key]
    return (0.0, 0.0)


def _delay(value: Any, where: str) -> Delay:
    if isinstance(value, Mapping):
        if set(value) != {"median", "p90"} or not all(
                isinstance(value[k], int | float) and not isinstance(value[k], bool)
                and value[k] > 0 for k in ("median", "p90")) or value["p90"] < value["median"]:
            raise ValueError(f"{where} must be {{median: ms, p90: ms}} with "
                             "0 < median <= p90")
        return LogNormal(float(value["median"]), float(value["p90"]))
    return _range(value, where)


def _delays(value: Any, where: str) -> Delays:
    """A delay, or a map of channels (or ``*``) to delays."""
    if isinstance(value, Mapping) and set(value) != {"median", "p90"}:
        return {str(k).upper() if k != "*" else "*": _delay(v, f"{where}.{k}")
                for k, v in value.items()}
    return _delay(value, where)


def _probabilities(value: Any, where: str) -> dict[str, float]:
    if not isinstance(value, Mapping):
        raise ValueError(f"{where} must map route/channel names to probabilities")
    out = {}
    for key, p in value.items():
        if isinstance(p, bool) or not isinstance(p, int | float) or not 0 <= p <= 1:
            raise ValueError(f"{where}.{key} must be a probability within 0..1, got {p!r}")
        out[str(key).upper() if key != "*" else "*"] = float(p)
    return out


def _range(value: Any, where: str) -> tuple[float, float]:
    if (not isinstance(value, list | tuple) or len(value) != 2
            or not all(isinstance(v, int | float) and v >= 0 for v in value)
            or value[0] > value[1]):
        raise ValueError(f"{where} must be [low, high] milliseconds with 0 <= low <= high")
    return float(value[0]), float(value[1])

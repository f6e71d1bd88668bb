"""The demo's population from a YAML file: accounts, their phones, and the hidden truth.

`Crowd.load(path)` validates the file (pydantic; an error names the field) and draws the same
accounts and phones for the same seed. A crowd gives the records that register it
(profiles and devices), the provider simulator's population document (absolute times from the
start of the load), and the truth the strategies are scored against: the channel each account
reads most, the route that best reaches each phone.
"""

from __future__ import annotations

import random
import zlib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from streams.domain.routes import original_route

CHANNELS = ("APP", "WECHAT", "SMS", "EMAIL")
THIRD_PARTY = ("JPUSH", "GETUI")
DEFAULT = "population.yaml"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Later(_Strict):
    """A change of mind: from `after_s` into the run, these read probabilities."""

    after_s: float = Field(ge=0)
    read: dict[str, float]


class Segment(_Strict):
    """A share of the accounts that read alike."""

    name: str
    share: float = Field(gt=0, le=1)
    read: dict[str, float] = Field(default_factory=dict)
    later: Later | None = None
    read_delay_s: tuple[float, float] = (0.3, 2.0)

    @model_validator(mode="after")
    def _channels(self) -> Segment:
        for read in (self.read, self.later.read if self.later else {}):
            for channel, p in read.items():
                if channel not in CHANNELS or not 0 <= p <= 1:
                    raise ValueError(f"read: {channel}={p} must be a channel of "
                                     f"{', '.join(CHANNELS)} with a probability within 0..1")
        return self


class Broken(_Strict):
    """Where a phone's own vendor route rarely delivers."""

    manufacturer: str
    model: str | None = None
    receipt: float = Field(ge=0, le=1)


class Routes(_Strict):
    """Receipt probabilities: the phone's own route, where it is broken, the others."""

    original: float = Field(0.95, ge=0, le=1)
    broken: list[Broken] = Field(default_factory=list)
    others: dict[str, float] = Field(default_factory=lambda: {"JPUSH": 0.85, "GETUI": 0.75})
    channels: dict[str, float] = Field(
        default_factory=lambda: {"WECHAT": 1.0, "SMS": 1.0, "EMAIL": 1.0})
    delay_s: tuple[float, float] = (0.05, 0.4)


class Outage(_Strict):
    """A route (or channel) that delivers nothing for a while."""

    route: str
    from_s: float = Field(ge=0)
    until_s: float = Field(ge=0)


class Spec(_Strict):
    """The population file."""

    seed: int = 7
    accounts: int = Field(1000, ge=1)
    devices_per_account: tuple[int, int] = (1, 2)
    manufacturers: dict[str, float]
    models: dict[str, list[str]] = Field(default_factory=dict)
    segments: list[Segment]
    routes: Routes = Field(default_factory=lambda: Routes.model_validate({}))
    outages: list[Outage] = Field(default_factory=list)

    @model_validator(mode="after")
    def _shares(self) -> Spec:
        total = sum(s.share for s in self.segments)
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"segments: shares add up to {total:g}, not 1")
        low, high = self.devices_per_account
        if not 0 <= low <= high:
            raise ValueError("devices_per_account must be [low, high] with 0 <= low <= high")
        return self


class PopulationError(ValueError):
    """The population file is invalid; the message names the field."""


@dataclass
class Phone:
    """One device: its brand and model, its routes and the hidden chance each delivers."""

    device_id: str
    manufacturer: str
    model: str
    original: str
    receipt: dict[str, float]

    @property
    def best_alternative(self) -> str | None:
        """The route other than the original most likely to deliver: what Method B should
        learn to fall back on (None without an alternative)."""
        others = {r: p for r, p in self.receipt.items() if r != self.original}
        return max(others, key=lambda r: (others[r], r)) if others else None


@dataclass
class Member:
    """One account: its segment, addresses, phones and hidden reading habits."""

    account_id: str
    segment: Segment
    phones: list[Phone] = field(default_factory=list)

    @property
    def phone_number(self) -> str:
        """A unique phone number (the simulator finds the account by it)."""
        return f"+86139{zlib.crc32(self.account_id.encode()) % 10**8:08d}"

    @property
    def openid(self) -> str:
        """The WeChat openid."""
        return f"o-{self.account_id}"

    def reads(self, at_s: float) -> dict[str, float]:
        """Read probabilities per channel at this time into the run."""
        later = self.segment.later
        return later.read if later and at_s >= later.after_s else self.segment.read

    def true_primary(self, at_s: float) -> str | None:
        """The channel this account reads most at that time (None: never reads)."""
        reads = {c: p for c, p in self.reads(at_s).items() if p > 0 and
                 (c != "APP" or self.phones)}
        return max(reads, key=lambda c: (reads[c], -CHANNELS.index(c))) if reads else None

    @property
    def stable(self) -> bool:
        """Whether the account keeps its preference for the whole run."""
        return self.segment.later is None


class Crowd:
    """The accounts of a population file, drawn from its seed."""

    def __init__(self, spec: Spec) -> None:
        self.spec = spec
        rng = random.Random(spec.seed)
        brands, weights = zip(*spec.manufacturers.items(), strict=True)
        segments = [s for s in spec.segments]
        self.members: list[Member] = []
        for i in range(spec.accounts):
            segment = rng.choices(segments, weights=[s.share for s in segments])[0]
            member = Member(f"acct-{i:05d}", segment)
            for d in range(rng.randint(*spec.devices_per_account)):
                brand = rng.choices(brands, weights=weights)[0]
                model = rng.choice(spec.models.get(brand) or [f"{brand} phone"])
                member.phones.append(self._phone(f"{member.account_id}-d{d}", brand, model))
            self.members.append(member)

    def _phone(self, device_id: str, brand: str, model: str) -> Phone:
        routes = self.spec.routes
        original = original_route(brand, model).route
        p = routes.original
        for rule in routes.broken:
            if rule.manufacturer.lower() == brand.lower() and rule.model in (None, model):
                p = rule.receipt
        receipt = {**{r: q for r, q in routes.others.items() if r != original}, original: p}
        return Phone(device_id, brand, model, original, receipt)

    @classmethod
    def load(cls, path: str | Path | None = None) -> Crowd:
        """A crowd from a population file (the packaged default without a path)."""
        if path is None:
            text = resources.files(__package__ or "streams.harness").joinpath(DEFAULT).read_text()
            where = f"streams/harness/{DEFAULT}"
        else:
            text, where = Path(path).read_text(), str(path)
        try:
            spec = Spec.model_validate(yaml.safe_load(text) or {})
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'file'}: {e['msg']}"
                                 for e in exc.errors())
            raise PopulationError(f"{where}: {problems}") from None
        return cls(spec)

    # -- what the pipeline and the simulator get ---------------------------------------------

    def registrations(self, now_ms: int) -> list[tuple[str, dict[str, Any]]]:
        """(topic, record) of every profile and device registration."""
        out: list[tuple[str, dict[str, Any]]] = []
        for m in self.members:
            out.append(("account.profiles", {
                "account_id": m.account_id, "phone": m.phone_number, "wechat_openid": m.openid,
                "email": None, "updated_at": now_ms}))
            for phone in m.phones:
                out.append(("device.registry", {
                    "device_id": phone.device_id, "account_id": m.account_id,
                    "manufacturer": phone.manufacturer, "model": phone.model,
                    "routes": [phone.original, *[r for r in phone.receipt
                                                 if r != phone.original]],
                    "active": True, "registered_at": now_ms}))
        return out

    def document(self, start: float) -> dict[str, Any]:
        """The provider simulator's population, with times counted from `start` (epoch s)."""
        routes = self.spec.routes
        accounts: dict[str, Any] = {}
        for m in self.members:
            entry: dict[str, Any] = {
                "read": dict(m.segment.read), "addresses": [m.phone_number, m.openid],
                "read_delay_ms": [v * 1000 for v in m.segment.read_delay_s]}
            if m.segment.later:
                entry["later"] = {"at": start + m.segment.later.after_s,
                                  "read": dict(m.segment.later.read)}
            accounts[m.account_id] = entry
        devices = {p.device_id: {"receipt": dict(p.receipt)} for m in self.members
                   for p in m.phones}
        return {"seed": self.spec.seed, "receipt": {**routes.channels, "*": 0.0},
                "read": {"*": 0.0}, "receipt_delay_ms": [v * 1000 for v in routes.delay_s],
                "read_delay_ms": [300, 2000], "accounts": accounts, "devices": devices,
                "outages": [{"target": o.route, "from": start + o.from_s,
                             "until": start + o.until_s} for o in self.spec.outages]}

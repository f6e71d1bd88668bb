"""The demo's population from a YAML file: accounts, their phones, and the hidden truth.

`Crowd.load(source)` takes a file or the name of a shipped population (`populations/*.yaml`
here; `default` without one), validates it (pydantic; an error names the field) and draws the
same accounts and phones for the same seed. A crowd gives the records that register it
(profiles and devices), the push requests of a run (`Crowd.request`), the provider simulator's
population document (absolute times from the start of the load), and the truth the strategies
are scored against: the channel each account reads most, the route that best reaches each phone.

Times in a population are a share of the run (`after: 0.4`, `from: 0.45, until: 0.6`) or
seconds from its start (`after_s`, `from_s`, `until_s`); shares are resolved against the run's
duration, given to `Crowd.document(start, duration)` (until then `DEFAULT_DURATION`).
"""

from __future__ import annotations

import random
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    model_validator,
)

from connectors.simulator.behaviour import unit
from streams.domain.handlers import PROFILE_CHANNELS
from streams.domain.routes import original_route

CHANNELS = ("APP", "WECHAT", "SMS", "EMAIL")
#: Channels an account may have or lack (APP comes with its phones).
ADDRESSED = ("WECHAT", "SMS", "EMAIL")
IMPORTANCES = ("LOW", "NORMAL", "HIGH", "URGENT")
THIRD_PARTY = ("JPUSH", "GETUI")
#: The shipped populations' folder, and the one loaded without a name.
SHIPPED, DEFAULT = "populations", "default"
#: The run's length (s) that shares of the run are resolved against until a run gives its own.
DEFAULT_DURATION = 140.0
#: Without a campaign mix: every N-th account of a round after the first is in that round's
#: campaign.
CAMPAIGN_EVERY = 10


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _uniform(value: tuple[float, float]) -> tuple[float, float]:
    if not 0 <= value[0] <= value[1]:
        raise ValueError("a uniform delay is [low, high] seconds with 0 <= low <= high")
    return value


class LogNormal(_Strict):
    """A log-normal delay by its median and 90th percentile (seconds)."""

    median: float = Field(gt=0)
    p90: float = Field(gt=0)

    @model_validator(mode="after")
    def _order(self) -> LogNormal:
        if self.p90 < self.median:
            raise ValueError(f"p90 {self.p90:g} must not be below the median {self.median:g}")
        return self


def _delay_kind(value: Any) -> str:
    return "log-normal" if isinstance(value, Mapping | LogNormal) else "uniform"


def _delays_kind(value: Any) -> str:
    if isinstance(value, Mapping) and not set(value) & {"median", "p90"}:
        return "per channel"
    return "one"


#: A delay: a uniform [low, high] range or a log-normal {median, p90}, in seconds (an error
#: names the form it was taken for).
Delay = Annotated[
    Annotated[tuple[float, float], AfterValidator(_uniform), Tag("uniform")]
    | Annotated[LogNormal, Tag("log-normal")], Discriminator(_delay_kind)]
#: One delay for every channel, or one per channel (`*` for the others).
Delays = Annotated[Annotated[Delay, Tag("one")] | Annotated[dict[str, Delay], Tag("per channel")],
                   Discriminator(_delays_kind)]
#: A probability.
Share = Annotated[float, Field(ge=0, le=1)]


def _delay_ms(delay: Delay) -> Any:
    if isinstance(delay, LogNormal):
        return {"median": delay.median * 1000, "p90": delay.p90 * 1000}
    return [v * 1000 for v in delay]


def _delays_ms(delays: Delays) -> Any:
    """The simulator's form of a read delay (milliseconds)."""
    if isinstance(delays, dict):
        return {c: _delay_ms(d) for c, d in delays.items()}
    return _delay_ms(delays)


def _check_delays(delays: Delays | None) -> None:
    if isinstance(delays, dict):
        for channel in delays:
            if channel not in (*CHANNELS, "*"):
                raise ValueError(f"read_delay_s: {channel} must be a channel of "
                                 f"{', '.join(CHANNELS)} or *")


def _one_of(share: float | None, seconds: float | None, name: str) -> None:
    if (share is None) == (seconds is None):
        raise ValueError(f"give either {name} (a share of the run) or {name}_s (seconds)")


def _when(share: float | None, seconds: float | None, duration: float) -> float:
    return share * duration if share is not None else float(seconds or 0.0)


class Later(_Strict):
    """A change of mind: from `after` (a share of the run) or `after_s` (seconds) into it,
    these read probabilities (and, if given, these read delays)."""

    after: float | None = Field(None, ge=0, le=1)
    after_s: float | None = Field(None, ge=0)
    read: dict[str, float]
    read_delay_s: Delays | None = None

    @model_validator(mode="after")
    def _time(self) -> Later:
        _one_of(self.after, self.after_s, "after")
        _check_delays(self.read_delay_s)
        return self

    def at_s(self, duration: float) -> float:
        """Seconds into a run of `duration` seconds."""
        return _when(self.after, self.after_s, duration)


class Segment(_Strict):
    """A share of the accounts that read alike."""

    name: str
    share: float = Field(gt=0, le=1)
    read: dict[str, float] = Field(default_factory=dict)
    later: Later | None = None
    read_delay_s: Delays = (0.3, 2.0)

    @model_validator(mode="after")
    def _channels(self) -> Segment:
        for read in (self.read, self.later.read if self.later else {}):
            for channel, p in read.items():
                if channel not in CHANNELS or not 0 <= p <= 1:
                    raise ValueError(f"read: {channel}={p} must be a channel of "
                                     f"{', '.join(CHANNELS)} with a probability within 0..1")
        _check_delays(self.read_delay_s)
        return self


class Broken(_Strict):
    """Where a phone's own vendor route rarely delivers."""

    manufacturer: str
    model: str | None = None
    receipt: float = Field(ge=0, le=1)


class RouteRule(_Strict):
    """The receipt probability of an alternative route on a manufacturer's phones (or one
    model's); the most specific rule wins, the later of equals."""

    route: str
    manufacturer: str | None = None
    model: str | None = None
    receipt: float = Field(ge=0, le=1)

    @model_validator(mode="after")
    def _scope(self) -> RouteRule:
        if self.model is not None and self.manufacturer is None:
            raise ValueError("model: a rule for a model names its manufacturer too")
        return self

    def rank(self, manufacturer: str, model: str) -> int | None:
        """How specifically this rule matches a phone (None: it does not)."""
        if self.manufacturer is None:
            return 0
        if self.manufacturer.lower() != manufacturer.lower():
            return None
        if self.model is None:
            return 1
        return 2 if self.model == model else None


class Routes(_Strict):
    """Receipt probabilities: the phone's own route, where it is broken, the others, and the
    others per manufacturer and model."""

    original: float = Field(0.95, ge=0, le=1)
    broken: list[Broken] = Field(default_factory=list)
    others: dict[str, float] = Field(default_factory=lambda: {"JPUSH": 0.85, "GETUI": 0.75})
    rules: list[RouteRule] = Field(default_factory=list)
    channels: dict[str, float] = Field(
        default_factory=lambda: {"WECHAT": 1.0, "SMS": 1.0, "EMAIL": 1.0})
    delay_s: tuple[float, float] = (0.05, 0.4)

    @model_validator(mode="after")
    def _rules(self) -> Routes:
        for rule in self.rules:
            if rule.route not in self.others:
                raise ValueError(f"rules: route {rule.route} is not one of the others "
                                 f"({', '.join(self.others)})")
        return self


class Outage(_Strict):
    """A route (or channel) that delivers nothing for a while: `from`/`until` as shares of
    the run, or `from_s`/`until_s` in seconds."""

    route: str
    from_: float | None = Field(None, alias="from", ge=0, le=1)
    until: float | None = Field(None, ge=0, le=1)
    from_s: float | None = Field(None, ge=0)
    until_s: float | None = Field(None, ge=0)

    @model_validator(mode="after")
    def _window(self) -> Outage:
        _one_of(self.from_, self.from_s, "from")
        _one_of(self.until, self.until_s, "until")
        start = _when(self.from_, self.from_s, DEFAULT_DURATION)
        end = _when(self.until, self.until_s, DEFAULT_DURATION)
        if (self.from_ is None) == (self.until is None) and end < start:  # both of one kind
            raise ValueError("until must not come before from")
        return self

    def window(self, duration: float) -> tuple[float, float]:
        """(from, until) in seconds into a run of `duration` seconds."""
        start = _when(self.from_, self.from_s, duration)
        return start, max(start, _when(self.until, self.until_s, duration))


class Campaigns(_Strict):
    """The share of requests that belong to a campaign, and how many campaigns a run has."""

    share: float = Field(ge=0, le=1)
    count: int = Field(1, ge=1)


class Requests(_Strict):
    """The push requests of a run: their importance mix and campaigns (without either, the
    demo's: every 4th HIGH, NORMAL otherwise; every 10th account of a round after the first
    in that round's campaign)."""

    importance: dict[str, Share] | None = None
    campaigns: Campaigns | None = None

    @model_validator(mode="after")
    def _mix(self) -> Requests:
        if self.importance is not None:
            unknown = set(self.importance) - set(IMPORTANCES)
            if unknown:
                raise ValueError(f"importance: {', '.join(sorted(unknown))} must be one of "
                                 f"{', '.join(IMPORTANCES)}")
            total = sum(self.importance.values())
            if abs(total - 1.0) > 1e-6:
                raise ValueError(f"importance: shares add up to {total:g}, not 1")
        return self


class Spec(_Strict):
    """The population file."""

    seed: int = 7
    accounts: int = Field(1000, ge=1)
    devices_per_account: tuple[int, int] = (1, 2)
    phones_per_account: float | None = Field(None, ge=0)
    manufacturers: dict[str, float]
    models: dict[str, list[str] | dict[str, Annotated[float, Field(gt=0)]]] = Field(
        default_factory=dict)
    channels: dict[str, Share] = Field(
        default_factory=lambda: {"WECHAT": 1.0, "SMS": 1.0, "EMAIL": 0.0})
    segments: list[Segment]
    routes: Routes = Field(default_factory=lambda: Routes.model_validate({}))
    outages: list[Outage] = Field(default_factory=list)
    requests: Requests = Field(default_factory=lambda: Requests.model_validate({}))

    @model_validator(mode="after")
    def _shares(self) -> Spec:
        total = sum(s.share for s in self.segments)
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"segments: shares add up to {total:g}, not 1")
        low, high = self.devices_per_account
        if not 0 <= low <= high:
            raise ValueError("devices_per_account must be [low, high] with 0 <= low <= high")
        if {"devices_per_account", "phones_per_account"} <= self.model_fields_set:
            raise ValueError("phones_per_account: give it or devices_per_account, not both")
        unknown = set(self.channels) - set(ADDRESSED)
        if unknown:
            raise ValueError(f"channels: {', '.join(sorted(unknown))} must be one of "
                             f"{', '.join(ADDRESSED)} (APP comes with the phones)")
        return self

    @property
    def enabled(self) -> dict[str, float]:
        """The share of accounts with each addressed channel (WECHAT and SMS unless said)."""
        return {"WECHAT": 1.0, "SMS": 1.0, "EMAIL": 0.0, **self.channels}


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
class Run:
    """The length of the run a crowd is played for (shares of the run resolve against it)."""

    duration: float = DEFAULT_DURATION


@dataclass
class Member:
    """One account: its segment, addresses, phones and hidden reading habits."""

    account_id: str
    segment: Segment
    phones: list[Phone] = field(default_factory=list)
    channels: frozenset[str] = frozenset({"WECHAT", "SMS"})
    run: Run = field(default_factory=Run)

    @property
    def phone_number(self) -> str:
        """A unique phone number (the simulator finds the account by it)."""
        return f"+86139{zlib.crc32(self.account_id.encode()) % 10**8:08d}"

    @property
    def openid(self) -> str:
        """The WeChat openid."""
        return f"o-{self.account_id}"

    @property
    def email(self) -> str:
        """The e-mail address."""
        return f"{self.account_id}@mail.example"

    @property
    def addresses(self) -> list[str]:
        """The addresses of the channels this account has."""
        return [a for c, a in (("SMS", self.phone_number), ("WECHAT", self.openid),
                               ("EMAIL", self.email)) if c in self.channels]

    def has(self, channel: str) -> bool:
        """Whether a send on this channel can reach the account at all."""
        return bool(self.phones) if channel == "APP" else channel in self.channels

    def changed_at(self, duration: float | None = None) -> float | None:
        """Seconds into a run of `duration` (the crowd's run without) where this account
        changes its mind; None for a stable account."""
        later = self.segment.later
        return None if later is None else later.at_s(
            self.run.duration if duration is None else duration)

    def reads(self, at_s: float, duration: float | None = None) -> dict[str, float]:
        """Read probabilities per channel at this time into the run."""
        later, changed = self.segment.later, self.changed_at(duration)
        return later.read if later and changed is not None and at_s >= changed \
            else self.segment.read

    def push_reads(self, at_s: float, duration: float | None = None) -> dict[str, float]:
        """P(a push on each channel it has is read) at that time: an app push goes to every
        phone, and each receives it (on its best route) and is read on its own, as the
        simulator plays them (two phones reading 0.6 each read 0.82 of app pushes)."""
        reads = {c: p for c, p in self.reads(at_s, duration).items() if p > 0 and self.has(c)}
        if "APP" in reads:
            unread = 1.0
            for phone in self.phones:
                unread *= 1.0 - max(phone.receipt.values(), default=0.0) * reads["APP"]
            reads["APP"] = 1.0 - unread
        return reads

    def true_primary(self, at_s: float, duration: float | None = None) -> str | None:
        """The channel on which this account reads most of its pushes at that time, of those
        it has (push_reads; None: never reads)."""
        reads = self.push_reads(at_s, duration)
        return max(reads, key=lambda c: (reads[c], -CHANNELS.index(c))) if reads else None

    @property
    def stable(self) -> bool:
        """Whether the account keeps its preference for the whole run."""
        return self.segment.later is None


def shipped() -> list[str]:
    """The names of the shipped populations."""
    folder = resources.files(__package__ or "streams.harness").joinpath(SHIPPED)
    return sorted(p.name.removesuffix(".yaml") for p in folder.iterdir()
                  if p.name.endswith(".yaml"))


class Crowd:
    """The accounts of a population file, drawn from its seed."""

    def __init__(self, spec: Spec, duration: float = DEFAULT_DURATION) -> None:
        self.spec = spec
        self.run = Run(duration)
        rng = random.Random(spec.seed)
        # channels come from their own draws: a population without `channels` draws the same
        # people as before there were any
        addressed = random.Random(f"{spec.seed}/channels")
        brands, weights = zip(*spec.manufacturers.items(), strict=True)
        segments = [s for s in spec.segments]
        enabled = spec.enabled
        self.members: list[Member] = []
        for i in range(spec.accounts):
            segment = rng.choices(segments, weights=[s.share for s in segments])[0]
            channels = frozenset(c for c in ADDRESSED if addressed.random() < enabled[c])
            member = Member(f"acct-{i:05d}", segment, channels=channels, run=self.run)
            for d in range(self._phones(rng)):
                brand = rng.choices(brands, weights=weights)[0]
                member.phones.append(self._phone(f"{member.account_id}-d{d}", brand,
                                                 self._model(rng, brand)))
            self.members.append(member)

    @property
    def duration(self) -> float:
        """The run's length (s) that shares of the run resolve against."""
        return self.run.duration

    @duration.setter
    def duration(self, seconds: float) -> None:
        self.run.duration = seconds

    def _phones(self, rng: random.Random) -> int:
        mean = self.spec.phones_per_account
        if mean is None:
            return rng.randint(*self.spec.devices_per_account)
        whole = int(mean)
        return whole + (rng.random() < mean - whole)

    def _model(self, rng: random.Random, brand: str) -> str:
        models = self.spec.models.get(brand) or [f"{brand} phone"]
        if isinstance(models, list):
            return rng.choice(models)  # a draw even of one: the same people as ever
        names, shares = zip(*models.items(), strict=True)
        return rng.choices(names, weights=shares)[0]

    def _phone(self, device_id: str, brand: str, model: str) -> Phone:
        routes = self.spec.routes
        original = original_route(brand, model).route
        p = routes.original
        for rule in routes.broken:
            if rule.manufacturer.lower() == brand.lower() and rule.model in (None, model):
                p = rule.receipt
        others = {r: q for r, q in routes.others.items() if r != original}
        best: dict[str, int] = {}
        for alternative in routes.rules:
            rank = alternative.rank(brand, model)
            route = alternative.route
            if route in others and rank is not None and rank >= best.get(route, -1):
                others[route], best[route] = alternative.receipt, rank
        return Phone(device_id, brand, model, original, {**others, original: p})

    @classmethod
    def load(cls, source: str | Path | None = None) -> Crowd:
        """A crowd from a population file or a shipped population's name (the default
        without either)."""
        folder = resources.files(__package__ or "streams.harness").joinpath(SHIPPED)
        if source is not None and Path(source).is_file():
            text, where = Path(source).read_text(), str(source)
        else:
            name = DEFAULT if source is None else str(source)
            if name not in shipped():
                raise PopulationError(f"{name}: neither a population file nor a shipped "
                                      f"population (shipped: {', '.join(shipped())})")
            text = folder.joinpath(f"{name}.yaml").read_text()
            where = f"streams/harness/{SHIPPED}/{name}.yaml"
        try:
            spec = Spec.model_validate(yaml.safe_load(text) or {})
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'file'}: {e['msg']}"
                                 for e in exc.errors())
            raise PopulationError(f"{where}: {problems}") from None
        return cls(spec)

    # -- what the pipeline and the simulator get ---------------------------------------------

    def registered(self) -> dict[str, tuple[int, int]]:
        """Each account's number of phones and of addresses, once its registrations are in
        (the accounts table's devices and addresses; either may be none)."""
        return {m.account_id: (len(m.phones), sum(m.has(c) for c, _ in PROFILE_CHANNELS))
                for m in self.members}

    def registrations(self, now_ms: int) -> list[tuple[str, dict[str, Any]]]:
        """(topic, record) of every profile and device registration."""
        out: list[tuple[str, dict[str, Any]]] = []
        for m in self.members:
            out.append(("account.profiles", {
                "account_id": m.account_id,
                "phone": m.phone_number if m.has("SMS") else None,
                "wechat_openid": m.openid if m.has("WECHAT") else None,
                "email": m.email if m.has("EMAIL") else None, "updated_at": now_ms}))
            for phone in m.phones:
                out.append(("device.registry", {
                    "device_id": phone.device_id, "account_id": m.account_id,
                    "manufacturer": phone.manufacturer, "model": phone.model,
                    "routes": [phone.original, *[r for r in phone.receipt
                                                 if r != phone.original]],
                    "active": True, "registered_at": now_ms}))
        return out

    def request(self, n: int, now_ms: int, total: int | None = None) -> dict[str, Any]:
        """The n-th push request of a run of `total` (schema push.requests): round-robin over
        the accounts, its importance and campaign drawn from the seed and n. With a campaign
        mix, the run is cut into `count` stretches, one campaign each (without `total`, the
        campaigns take turns by round)."""
        round_, i = divmod(n, len(self.members))
        account_id = self.members[i].account_id
        wanted = self.spec.requests
        if wanted.importance is None:
            importance = "HIGH" if n % 4 == 0 else "NORMAL"
        else:
            importance = _pick(wanted.importance, unit(self.spec.seed, "importance", n))
        campaign = None
        if wanted.campaigns is None:
            if round_ > 0 and i % CAMPAIGN_EVERY == 0:
                campaign = f"promo-{round_}"
        elif unit(self.spec.seed, "campaign", n) < wanted.campaigns.share:
            count = wanted.campaigns.count
            which = (min(count - 1, n * count // total) if total else round_ % count)
            campaign = f"promo-{which + 1}"
        return {"message_id": f"{account_id}-m{round_}", "account_id": account_id,
                "importance": importance, "title": "Your parcel", "body": f"update {round_}",
                "read_action": "LINK", "link": "https://shop.example/parcel",
                "campaign_id": campaign, "device_ids": [], "created_at": now_ms}

    def document(self, start: float, duration: float | None = None) -> dict[str, Any]:
        """The provider simulator's population, with times counted from `start` (epoch s) and
        shares of the run resolved against `duration` (s; the crowd's run without, which it
        becomes)."""
        if duration is not None:
            self.run.duration = duration
        duration = self.run.duration
        routes = self.spec.routes
        accounts: dict[str, Any] = {}
        for m in self.members:
            entry: dict[str, Any] = {
                "read": dict(m.segment.read), "addresses": m.addresses,
                "read_delay_ms": _delays_ms(m.segment.read_delay_s)}
            later = m.segment.later
            if later:
                entry["later"] = {"at": start + later.at_s(duration), "read": dict(later.read)}
                if later.read_delay_s is not None:
                    entry["later"]["read_delay_ms"] = _delays_ms(later.read_delay_s)
            accounts[m.account_id] = entry
        devices = {p.device_id: {"receipt": dict(p.receipt)} for m in self.members
                   for p in m.phones}
        outages = []
        for o in self.spec.outages:
            begin, end = o.window(duration)
            outages.append({"target": o.route, "from": start + begin, "until": start + end})
        return {"seed": self.spec.seed, "receipt": {**routes.channels, "*": 0.0},
                "read": {"*": 0.0}, "receipt_delay_ms": [v * 1000 for v in routes.delay_s],
                "read_delay_ms": [300, 2000], "accounts": accounts, "devices": devices,
                "outages": outages}


def _pick(shares: Mapping[str, float], u: float) -> str:
    """The key whose stretch of [0, 1) holds u (shares in their order)."""
    edge = 0.0
    for key, share in shares.items():
        edge += share
        if u < edge:
            return key
    return [k for k, s in shares.items() if s > 0][-1]  # u beyond a rounded total

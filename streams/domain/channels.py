"""Method A, pure: learn an account's channels from READ acks, send once, escalate on deadline."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from streams.domain import escalation as esc
from streams.domain import schedule
from streams.domain.compact import compact

NEW, ESTABLISHED = "NEW", "ESTABLISHED"
#: How channels are chosen (PUSHCASCADE_STRATEGY): the method and the baselines it is measured
#: against. blast: every enabled channel, every time. fixed-fallback: a fixed channel order,
#: one channel at a time, the next after each read deadline (what notification platforms
#: offer). seed: Method A as specified (learn from reads, escalate once). adaptive: Method A
#: with decayed scores that follow a change of preference, an account established by its first
#: read, no escalation for an account that never read, and for one that did, a
#: ladder beyond the secondary (it finds a channel the account moved to).
STRATEGIES = ("blast", "fixed-fallback", "seed", "adaptive")
#: adaptive: first reads on one channel (and none elsewhere) that establish an account early:
#: one (its later reads and misses keep teaching it; a second fan-out costs a whole ladder).
AGREEING_READS = 1
#: adaptive: sends an account keeps waiting for their outcome (beyond, the oldest counts unread).
PENDING = 32
_SEND_NS = uuid.UUID("6f1c5a3e-8a51-4b7e-9a0e-3c2d1b0a9f87")


@dataclass(frozen=True)
class ChannelPolicy:
    """The Method A parameters (see Settings for their environment variables)."""

    new_account_pushes: int = 5
    k1: float = 1.0
    k2: float = 2.0
    order: tuple[str, ...] = ("APP", "WECHAT", "SMS", "EMAIL")
    read_deadlines: Mapping[str, float] = field(
        default_factory=lambda: {"LOW": 86400.0, "NORMAL": 3600.0, "HIGH": 600.0, "URGENT": 60.0}
    )
    strategy: str = "seed"
    decay: float = 0.6  # adaptive: the weight older reads keep at each newly read message
    #: adaptive: what one send costs per channel, and what a read is worth per importance
    costs: Mapping[str, float] = field(
        default_factory=lambda: dict(esc.DEFAULT_CHANNEL_COST))
    read_value: Mapping[str, float] = field(
        default_factory=lambda: dict(esc.DEFAULT_READ_VALUE))
    send_price: float = esc.DEFAULT_SEND_PRICE  # adaptive: reads a send must add (APP: a phone)
    #: adaptive: read deadlines after its request within which a read reaches the user in time
    read_window: float = esc.DEFAULT_READ_WINDOW

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise ValueError(f"unknown strategy {self.strategy!r}; one of {', '.join(STRATEGIES)}")


@dataclass
class Account:
    """What we know of one account: lifecycle, learned statistics, override, reachability."""

    account_id: str
    pushes: int = 0
    lifecycle: str = NEW
    feedback_count: dict[str, int] = field(default_factory=dict)
    first_feedback: dict[str, int] = field(default_factory=dict)
    primary: str | None = None
    secondary: str | None = None
    devices: list[str] = field(default_factory=list)
    addresses: list[str] = field(default_factory=list)
    waiting: list[str] = field(default_factory=list)
    recent: list[list[Any]] = field(default_factory=list)
    decayed: dict[str, float] = field(default_factory=dict)  # importance_base, older reads fade
    delays: dict[str, list[float]] = field(default_factory=dict)  # recent read delays (s)
    counts: dict[str, list[float]] = field(default_factory=dict)  # [reads, sends], fading
    missed: dict[str, int] = field(default_factory=dict)  # messages unread there in a row
    #: adaptive: sends whose outcome is not known yet: [message_id, channel, settles_at]
    pending: list[list[Any]] = field(default_factory=list)
    #: adaptive: what the account's kind reads per channel, and what that is worth in sends
    #: (streams.domain.kinds; set by the handler that loads the account, never stored)
    prior: dict[str, float] = field(default_factory=dict, compare=False, repr=False)
    prior_strength: float = field(default=0.0, compare=False, repr=False)

    def to_dict(self) -> dict[str, Any]:
        """JSON-compatible form for a table (by hand: asdict's deep copy is on the hot path)."""
        return {"account_id": self.account_id, "pushes": self.pushes,
                "lifecycle": self.lifecycle, "feedback_count": dict(self.feedback_count),
                "first_feedback": dict(self.first_feedback), "primary": self.primary,
                "secondary": self.secondary, "devices": list(self.devices),
                "addresses": list(self.addresses), "waiting": list(self.waiting),
                "recent": [list(r) for r in self.recent], "decayed": dict(self.decayed),
                "delays": {c: list(d) for c, d in self.delays.items()},
                "counts": {c: list(n) for c, n in self.counts.items()},
                "missed": dict(self.missed), "pending": [list(p) for p in self.pending]}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Account:
        """Inverse of to_dict (fields added later take their defaults)."""
        return cls(**data)

    def enabled(self) -> set[str]:
        """Channels the account can be reached on: APP with a device, others with an address."""
        return set(self.addresses) | ({"APP"} if self.devices else set())


@dataclass
class Message:
    """One push request's progress: where it went, whether and where it was read, its deadline."""

    message_id: str
    account_id: str
    importance: str
    partition: int
    sent: list[str] = field(default_factory=list)
    reads: list[str] = field(default_factory=list)
    deadline_at: float | None = None
    escalated: bool = False
    device_ids: list[str] = field(default_factory=list)
    campaign_id: str | None = None
    deliveries: dict[str, dict[str, Any]] = field(default_factory=dict)
    created_at: float = 0.0
    waiting_until: float | None = None
    fanout: bool = False
    expires_at: float | None = None
    content: dict[str, Any] = field(default_factory=dict)
    sent_at: dict[str, float] = field(default_factory=dict)  # channel -> when it was sent
    kind: str | None = None  # adaptive: its account's kind when it was planned (kinds.py)

    def to_dict(self) -> dict[str, Any]:
        """JSON-compatible form for a table (by hand: asdict's deep copy is on the hot path)."""
        return {"message_id": self.message_id, "account_id": self.account_id,
                "importance": self.importance, "partition": self.partition,
                "sent": list(self.sent), "reads": list(self.reads),
                "deadline_at": self.deadline_at, "escalated": self.escalated,
                "device_ids": list(self.device_ids), "campaign_id": self.campaign_id,
                "deliveries": {d: dict(v) for d, v in self.deliveries.items()},
                "created_at": self.created_at, "waiting_until": self.waiting_until,
                "fanout": self.fanout, "expires_at": self.expires_at, "content": self.content,
                "sent_at": dict(self.sent_at), "kind": self.kind}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Message:
        """Inverse of to_dict."""
        return cls(**data)


@dataclass(frozen=True)
class Send:
    """A decision to send a message on a channel."""

    channel: str
    reason: str
    attempt: int


@dataclass(frozen=True)
class PushPlan:
    """What to do with a push request: the sends, the read deadline, a lifecycle change."""

    sends: tuple[Send, ...]
    deadline_at: float | None
    established: bool
    unreachable: bool


def send_id(account_id: str, message_id: str, channel: str, device_id: str | None,
            attempt: int) -> str:
    """The deterministic id of a send, so a repeat is recognisable downstream.

    The parts are encoded as a JSON array: no separator can be forged inside a part, and a
    missing device (null) differs from an empty one."""
    return uuid5(_SEND_NS, compact([account_id, message_id, channel, device_id, attempt]))


def uuid5(namespace: uuid.UUID, name: str) -> str:
    """`str(uuid.uuid5(namespace, name))` without building UUID objects (it is per send)."""
    digest = bytearray(hashlib.sha1(namespace.bytes + name.encode()).digest()[:16])  # noqa: S324
    digest[6] = (digest[6] & 0x0F) | 0x50  # version 5
    digest[8] = (digest[8] & 0x3F) | 0x80  # RFC 4122 variant
    h = digest.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def importance_base(account: Account, k1: float, k2: float) -> dict[str, float]:
    """importance_base[c] = K1 * feedback_count[c] + K2 * first_feedback[c], per channel seen."""
    channels = set(account.feedback_count) | set(account.first_feedback)
    return {
        c: k1 * account.feedback_count.get(c, 0) + k2 * account.first_feedback.get(c, 0)
        for c in channels
    }


def rank(scores: Mapping[str, float], enabled: Iterable[str], order: Sequence[str]) -> list[str]:
    """Enabled channels by score, highest first; ties (and unscored channels) by the fixed order."""
    position = {c: i for i, c in enumerate(order)}
    return sorted(enabled, key=lambda c: (-scores.get(c, 0.0), position.get(c, len(order)), c))


def scores(account: Account, policy: ChannelPolicy) -> dict[str, float]:
    """What the strategy ranks channels by: nothing for a fixed order, decayed importance for
    adaptive, importance_base for the others."""
    if policy.strategy == "fixed-fallback":
        return {}
    if policy.strategy == "adaptive":
        if late_reader(account, policy):
            return {c: read_rate(account, c) for c in account.enabled()}
        return dict(account.decayed)
    return importance_base(account, policy.k1, policy.k2)


def late_reader(account: Account, policy: ChannelPolicy) -> bool:
    """Whether the account reads late everywhere (its reads pooled, against the NORMAL read
    deadline): its channels go out together, so which is read first says little; its read
    rates tell which it reads."""
    return esc.late(pooled(account), policy.read_deadlines["NORMAL"])


def ranking(account: Account, policy: ChannelPolicy) -> list[str]:
    """The account's enabled channels, best first: the user override, then the learned ranking."""
    enabled = account.enabled()
    learned = rank(scores(account, policy), enabled, policy.order)
    primary = account.primary if account.primary in enabled else None
    if primary is None:  # no (usable) primary override: the learned primary stays first
        primary = next((c for c in learned if c != account.secondary), None)
    chosen = [c for c in (primary, account.secondary) if c and c in enabled]
    return list(dict.fromkeys(chosen + learned))


def plan_push(account: Account, importance: str, now: float, policy: ChannelPolicy) -> PushPlan:
    """Decide the sends of a new push and count it (mutates account.pushes and lifecycle)."""
    channels = ranking(account, policy)
    if not channels:
        return PushPlan((), None, established=False, unreachable=True)
    learning = 0 if policy.strategy == "fixed-fallback" else policy.new_account_pushes
    new = account.lifecycle == NEW
    ready = new and (account.pushes >= learning or agreeing(account, policy))
    account.pushes += 1
    if new and (ready or account.pushes >= learning):  # learnt before, or this push ends it
        account.lifecycle = ESTABLISHED
    became = new and account.lifecycle == ESTABLISHED
    if policy.strategy == "blast" or (new and not ready):
        sends = tuple(Send(c, "FANOUT", 0) for c in rank({}, channels, policy.order))
        return PushPlan(sends, None, established=became, unreachable=False)
    deadline = round(now + policy.read_deadlines[importance], 3)  # epoch ms; adaptive plans
    return PushPlan((Send(channels[0], "PRIMARY", 0),), deadline, established=became,
                    unreachable=False)


def read_rate(account: Account, channel: str) -> float:
    """P(read | sent) for the account on a channel: its own reads and sends there, from its
    kind's rate as a prior where one is known (else a coin toss)."""
    return esc.read_rate(account.counts.get(channel), account.prior.get(channel),
                         account.prior_strength)



def timing(account: Account, channel: str) -> list[float]:
    """The account's read delays on a channel, or on all its channels while that one has
    fewer than esc.MIN_READS (a late reader is late everywhere)."""
    own = account.delays.get(channel, [])
    if len(own) >= esc.MIN_READS:
        return own
    return pooled(account)


def pooled(account: Account) -> list[float]:
    """The account's read delays on all its channels."""
    return [d for delays in account.delays.values() for d in delays]


def note_send(account: Account, message: Message, channel: str, now: float,
              settles_at: float | None = None) -> None:
    """Note a message's send on a channel: when (its reads' delays count from it, a READ
    stamped before it came late), and, when learning (`settles_at`), a send whose outcome
    counts in the account's read rate once it is known: at its read, or unread at
    `settles_at` (a send counted at once, before its read could come, would make a slow
    reader's rates look low)."""
    message.sent_at.setdefault(channel, round(now, 3))
    if settles_at is not None:
        if len(account.pending) >= PENDING:  # the oldest counts unread now: state stays bounded
            oldest = min(account.pending, key=lambda p: p[2])
            account.pending.remove(oldest)
            esc.count(account.counts, oldest[1], 0.0, 1.0)
        account.pending.append([message.message_id, channel, round(settles_at, 3)])


def settle(account: Account, now: float) -> None:
    """Count the account's sends whose read window passed unread as sends without a read."""
    if not account.pending or min(p[2] for p in account.pending) > now:
        return
    for _, channel, _ in [p for p in account.pending if p[2] <= now]:
        esc.count(account.counts, channel, 0.0, 1.0)
    account.pending = [p for p in account.pending if p[2] > now]


def next_send(account: Account, message: Message, now: float, policy: ChannelPolicy,
              must: bool = False) -> schedule.Step:
    """adaptive: the next send of an unread message (a channel and when, in seconds after its
    request), planned from the account's read rates, read timing and each send's price; with
    `must`, a channel is planned whatever it costs."""
    deadline = policy.read_deadlines[message.importance]
    value = policy.read_value.get(message.importance, 0.0)
    channels = {}
    for channel in ranking(account, policy):
        money = channel_cost(account, channel, policy)
        price = policy.send_price * sends(account, channel) + (money / value if money else 0.0)
        channels[channel] = schedule.Channel(
            read_rate(account, channel), schedule.timing(timing(account, channel), deadline),
            price)
    start = message.created_at
    sent = [(c, message.sent_at.get(c, start) - start) for c in message.sent]
    step = schedule.next_step(channels, sent, now - start, deadline,
                              deadline * policy.read_window, must)
    return replace(step, at=round(start + step.at, 3))


def channel_cost(account: Account, channel: str, policy: ChannelPolicy) -> float:
    """What sending a channel costs: one send's cost, times the phones for APP (each shows it)."""
    return policy.costs.get(channel, 0.0) * sends(account, channel)


def sends(account: Account, channel: str) -> int:
    """The sends a channel takes for the account: one per phone for APP, else one."""
    return max(1, len(account.devices)) if channel == "APP" else 1


def agreeing(account: Account, policy: ChannelPolicy) -> bool:
    """adaptive: the account's first reads all fell on one channel, often enough to trust."""
    if policy.strategy != "adaptive":
        return False
    read = [c for c, n in account.first_feedback.items() if n]
    return len(read) == 1 and account.first_feedback[read[0]] >= AGREEING_READS


def record_read(account: Account, message: Message, channel: str,
                policy: ChannelPolicy | None = None, now: float | None = None) -> bool:
    """Count a READ ack; the first of a message also counts as first feedback and cancels its
    deadline. Returns False for a repeat (same message and channel), which changes nothing.

    The decayed scores fade by `policy.decay` at each message's first read, then gain what
    importance_base would (K2 for a first read, K1 for every read). With `now`, adaptive's
    read delay since the message's send on that channel joins the account's timing sketch."""
    if channel in message.reads:
        return False
    policy = policy or ChannelPolicy()
    decayed = account.decayed
    if not message.reads:
        account.first_feedback[channel] = account.first_feedback.get(channel, 0) + 1
        message.deadline_at = None
        for c in decayed:
            decayed[c] = round(decayed[c] * policy.decay, 6)
        decayed[channel] = decayed.get(channel, 0.0) + policy.k2
    message.reads.append(channel)
    entry = next((p for p in account.pending if p[0] == message.message_id and p[1] == channel),
                 None)
    if entry is not None:  # its send counts now, with its read
        account.pending.remove(entry)
    esc.count(account.counts, channel, 1.0, 1.0 if entry is not None else 0.0)
    account.missed.pop(channel, None)
    if now is not None and policy.strategy == "adaptive" and channel in message.sent_at:
        esc.remember_delay(account.delays.setdefault(channel, []),
                           now - message.sent_at[channel])
    account.feedback_count[channel] = account.feedback_count.get(channel, 0) + 1
    decayed[channel] = round(decayed.get(channel, 0.0) + policy.k1, 6)
    return True


def escalation_target(account: Account, message: Message, policy: ChannelPolicy) -> str | None:
    """The channel an unread message escalates to: the best-ranked one it was not sent on yet.

    adaptive escalates only for an account that has read before (a reader whose habits
    changed is worth the next channel, an account that never reads is not)."""
    if policy.strategy == "adaptive" and not any(v > 0 for v in account.decayed.values()):
        return None
    return next((c for c in ranking(account, policy) if c not in message.sent), None)


def climbs(policy: ChannelPolicy) -> bool:
    """Whether an escalation gets a read deadline of its own (a ladder of escalations)."""
    return policy.strategy in ("fixed-fallback", "adaptive")


def is_due(message: Message, due_at: float, now: float) -> bool:
    """True when this deadline is still the message's pending one and its time has come."""
    return (not message.escalated and not message.reads and message.deadline_at is not None
            and message.deadline_at == due_at and now >= due_at)

"""The best a strategy could do on a population, pure: an oracle that knows every account's
hidden habits (not each message's outcome) and spends the fewest sends for a reach within the
window of at least a share of blast's.

For each account (and each part of the run, for one who changes their mind) the oracle picks a
schedule: channels sent at chosen times (APP to every phone), each only if no read came before
it. Its reach and expected sends follow from the simulator's model, in closed form: a send
arrives with its route's (APP: the phone's best route) or channel's receipt probability, and is
read with the account's probability after the receipt delay (uniform) and the account's read
delay. Over accounts it takes, for a price per read, each account's schedule that minimises
sends - price x reach, raising the price until the reach holds: a point on the frontier of
reach against sends (the best mix of the schedules it tries; outages and learning left out).
`adaptive`'s sends against this show how much of what it spends is the cost of not knowing.

A learner cannot know an account before it has pushed to it: the learner's bound (`pushes`,
the messages each account gets in the run) chooses every account's first push knowing only
what the account shows (its channels and phones: one schedule for all that look alike) and
the later ones knowing its habits. Anything that learns from an account's own pushes spends
at least that; what a strategy spends beyond it is what its learning and its rules cost.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import cache, cached_property
from statistics import NormalDist
from typing import Any

from connectors.simulator.behaviour import Z90
from streams.harness.crowd import CHANNELS, Crowd, Delay, Delays, LogNormal, Member, Segment

#: Send times (s after the request) a schedule chooses from, after its first send at 0 (0 too:
#: several channels at once, as blast sends them).
TIMES = (0.0, 0.25, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0)
#: The share of blast's reach the checks ask of adaptive, and the oracle's default.
SHARE = 0.98
#: The price of a read (sends per unit of reach) the search starts from, doubling it until the
#: reach holds, and the highest it tries.
FIRST_PRICE, MAX_PRICE = 8.0, 1e15
#: Reaches this close count as equal: two schedules of the same reach in exact arithmetic can
#: differ in the last bits, and at a price near MAX_PRICE the cheaper one wins (the search for
#: 100% of blast's reach never ended).
REACH_TOLERANCE = 1e-12
_NORMAL = NormalDist()
_RECEIPT_STEPS = 8  # points the uniform receipt delay is averaged over


@dataclass(frozen=True)
class Option:
    """A schedule's reach within the window and its expected sends per message."""

    reach: float
    sends: float


@dataclass(frozen=True)
class Row:
    """One segment: its share of the messages, blast's figures and the oracle's."""

    segment: str
    weight: float
    blast: Option
    oracle: Option


@dataclass(frozen=True)
class Bound:
    """blast's reach and sends per message in the model, and the oracle's at `share` of that
    reach, with the per-segment rows."""

    share: float
    blast: Option
    oracle: Option
    rows: tuple[Row, ...]

    @property
    def ratio(self) -> float:
        """The oracle's sends as a share of blast's."""
        return self.oracle.sends / self.blast.sends if self.blast.sends else 0.0


def cdf(delay: Delay) -> Callable[[float], float]:
    """P(a read delay <= t) for a uniform [low, high] or a log-normal {median, p90} delay."""
    if isinstance(delay, LogNormal):
        sigma = math.log(delay.p90 / delay.median) / Z90  # as the simulator draws it
        if sigma == 0:
            return lambda t: float(t >= delay.median)
        return lambda t: 0.0 if t <= 0 else _NORMAL.cdf(math.log(t / delay.median) / sigma)
    low, high = delay
    if high == low:
        return lambda t: float(t >= low)
    return lambda t: min(1.0, max(0.0, (t - low) / (high - low)))


def after_receipt(read: Callable[[float], float],
                  receipt: tuple[float, float]) -> Callable[[float], float]:
    """P(read within t of the send): the receipt delay (uniform) and then the read delay."""
    low, high = receipt
    points = [low + (high - low) * (i + 0.5) / _RECEIPT_STEPS for i in range(_RECEIPT_STEPS)]
    return cache(lambda t: sum(read(t - r) for r in points) / _RECEIPT_STEPS)


def channel_delay(delays: Delays, channel: str) -> Delay:
    """The read delay of one channel (a per-channel map falls back on `*`, then the default)."""
    if isinstance(delays, dict):
        return delays.get(channel, delays.get("*", (0.3, 2.0)))
    return delays


def schedules(channels: Sequence[str]) -> Iterable[tuple[tuple[str, float], ...]]:
    """Every order of every non-empty set of channels, the first sent at once, the others at
    non-decreasing times from TIMES (blast's schedule, everything at 0, among them)."""
    for k in range(1, len(channels) + 1):
        for order in itertools.permutations(channels, k):
            for times in itertools.combinations_with_replacement(TIMES, k - 1):
                yield tuple(zip(order, (0.0, *times), strict=True))


def evaluate(schedule: Sequence[tuple[str, float]], read: dict[str, float],
             count: dict[str, int], within: dict[str, Callable[[float], float]],
             window: float) -> Option:
    """A schedule's reach within `window` and expected sends: `read[c]` is P(one send on c is
    read), `count[c]` the sends it takes (APP: the phones), `within[c](t)` P(its read comes
    within t of the send). A send goes out only if no read came before it."""
    sends, missed = 0.0, 1.0
    for i, (channel, at) in enumerate(schedule):
        unread = 1.0
        for earlier, sent in schedule[:i]:
            unread *= (1 - read[earlier] * within[earlier](at - sent)) ** count[earlier]
        sends += unread * count[channel]
    for channel, at in schedule:
        missed *= (1 - read[channel] * within[channel](window - at)) ** count[channel]
    return Option(1 - missed, sends)


@dataclass(frozen=True)
class _Habit:
    """What the oracle knows of an account in one part of the run."""

    read: tuple[tuple[str, float], ...]  # P(one send is read) per channel it has
    count: tuple[tuple[str, int], ...]
    delays: tuple[tuple[str, Delay], ...]


def habits(member: Member, crowd: Crowd) -> list[tuple[float, _Habit]]:
    """(share of the account's messages, habit) for each part of the run."""
    routes = crowd.spec.routes
    segment: Segment = member.segment
    channels = [c for c in CHANNELS if member.has(c)]
    parts = [(1.0, segment.read, segment.read_delay_s)]
    if segment.later is not None:
        at = min(1.0, max(0.0, segment.later.at_s(crowd.duration) / crowd.duration))
        later_delays = segment.later.read_delay_s or segment.read_delay_s
        parts = [(at, segment.read, segment.read_delay_s),
                 (1.0 - at, segment.later.read, later_delays)]
    out = []
    for share, read, delays in parts:
        if share <= 0:
            continue
        p: dict[str, float] = {}
        for c in channels:
            if c == "APP":  # per phone; the phones' best routes, averaged
                arrive = sum(max(ph.receipt.values(), default=0.0) for ph in member.phones)
                arrive /= len(member.phones)
            else:
                arrive = routes.channels.get(c, 1.0)
            p[c] = read.get(c, 0.0) * arrive
        count = {c: len(member.phones) if c == "APP" else 1 for c in channels}
        out.append((share, _Habit(tuple(p.items()), tuple(count.items()),
                                  tuple((c, channel_delay(delays, c)) for c in channels))))
    return out


@cache
def _options(habit: _Habit, receipt: tuple[float, float], window: float
             ) -> tuple[Option, tuple[Option, ...]]:
    """blast's option and every schedule's, for one habit."""
    read, count = dict(habit.read), dict(habit.count)
    within = {c: after_receipt(cdf(d), receipt) for c, d in habit.delays}
    channels = list(read)
    blast = evaluate([(c, 0.0) for c in channels], read, count, within, window)
    blast = Option(blast.reach, float(sum(count.values())))  # blast sends all, read or not
    return blast, tuple(evaluate(s, read, count, within, window) for s in schedules(channels))


@dataclass(frozen=True)
class _Part:
    """Messages that take one schedule: (segment, weight, blast's option, every schedule's
    option) per habit in it. A part of one habit is what the oracle knows of one account; a
    part of many is the first push of every account that shows the same channels and phones,
    chosen knowing only that."""

    members: tuple[tuple[str, float, Option, tuple[Option, ...]], ...]
    fanout: bool = False  # a first push held to blast's schedule, whatever the price

    @cached_property
    def mean(self) -> tuple[Option, ...]:
        """Every schedule's option over the part's messages (their weighted mean)."""
        total = sum(w for _, w, _, _ in self.members)
        return tuple(_mean([(w, options[j]) for _, w, _, options in self.members], total)
                     for j in range(len(self.members[0][3])))

    def choose(self, price: float) -> int:
        """The schedule that minimises sends - price x reach over the part's messages (a
        fan-out part: everything at once, the schedule of the most reach and sends)."""
        mean = self.mean
        if self.fanout:
            return max(range(len(mean)), key=lambda j: (mean[j].reach, mean[j].sends))
        return min(range(len(mean)),
                   key=lambda j: (mean[j].sends - price * mean[j].reach, mean[j].sends))


def bound(crowd: Crowd, window: float, share: float = 0.98,
          pushes: float | None = None, fanout: bool = False) -> Bound:
    """The oracle's fewest sends per message for a reach of `share` x blast's (both in the
    model), over the crowd's accounts weighted by their share of the requests (equal).

    With `pushes` (the messages each account gets in the run), a learner's bound: every
    account's first push is chosen knowing only its channels and phones (one schedule for all
    that look alike), its later ones knowing its habits: the least any strategy that learns
    an account from its own pushes could spend (it knows nothing of it before its first).
    With `fanout`, that first push goes to every channel and phone at once, as `seed` and
    `adaptive` send it: the learner's bound of a strategy that fans out to a new account.

    Between the two prices that straddle the reach, the oracle mixes their schedules (per
    message, at random) to meet it exactly: the least a strategy that pushes to every phone
    of an account could spend there, on these send times."""
    receipt = tuple(crowd.spec.routes.delay_s)
    first = min(1.0, 1.0 / pushes) if pushes else 0.0  # a message's chance to be a first
    known: dict[tuple[str, _Habit], float] = {}
    unknown: dict[tuple[tuple[str, int], ...], dict[tuple[str, _Habit], float]] = {}
    for member in crowd.members:
        for i, (weight, habit) in enumerate(habits(member, crowd)):
            if not habit.read:  # no channel at all: unreachable for every strategy
                continue
            key = (member.segment.name, habit)
            blind = min(first, weight) if i == 0 else 0.0  # its first push, unknown
            if blind:
                alike = unknown.setdefault(habit.count, {})
                alike[key] = alike.get(key, 0.0) + blind
            if weight > blind:
                known[key] = known.get(key, 0.0) + weight - blind

    def entry(key: tuple[str, _Habit], w: float) -> tuple[str, float, Option,
                                                          tuple[Option, ...]]:
        return (key[0], w, *_options(key[1], receipt, window))

    parts = [_Part((entry(key, w),)) for key, w in known.items()]
    parts += [_Part(tuple(entry(key, w) for key, w in alike.items()), fanout)
              for alike in unknown.values()]
    everyone = [m for part in parts for m in part.members]
    total = sum(w for _, w, _, _ in everyone)
    blast = _mean([(w, b) for _, w, b, _ in everyone], total)
    target = share * blast.reach - REACH_TOLERANCE

    def at(price: float) -> list[Option]:
        """Every message's option (part by part, member by member) at a price."""
        return [options[j] for part in parts for j in (part.choose(price),)
                for _, _, _, options in part.members]

    def reach(chosen: list[Option]) -> float:
        return sum(w * o.reach for (_, w, _, _), o in zip(everyone, chosen, strict=True)) / total

    low, high = 0.0, FIRST_PRICE
    while reach(at(high)) < target:  # blast's own schedule is among the options: it ends
        low, high = high, high * 2
        if high > MAX_PRICE:
            raise ValueError(f"no schedule reaches {share:.0%} of blast's reach")
    for _ in range(60):
        mid = (low + high) / 2
        low, high = (low, mid) if reach(at(mid)) >= target else (mid, high)
    below, above = at(low), at(high)
    r_low, r_high = reach(below), reach(above)
    mix = 1.0 if r_high <= r_low or r_low >= target else (target - r_low) / (r_high - r_low)
    chosen = [Option(a.reach * mix + b.reach * (1 - mix), a.sends * mix + b.sends * (1 - mix))
              for a, b in zip(above, below, strict=True)]
    rows = []
    for name in dict.fromkeys(n for n, _, _, _ in everyone):
        mine = [(w, b, o) for (n, w, b, _), o in zip(everyone, chosen, strict=True) if n == name]
        weight = sum(w for w, _, _ in mine)
        rows.append(Row(name, weight / total, _mean([(w, b) for w, b, _ in mine], weight),
                        _mean([(w, o) for w, _, o in mine], weight)))
    oracle = _mean([(w, o) for (_, w, _, _), o in zip(everyone, chosen, strict=True)], total)
    return Bound(share, blast, oracle, tuple(rows))


def _mean(weighted: list[tuple[float, Option]], total: float) -> Option:
    """The weighted mean of options."""
    return Option(sum(w * o.reach for w, o in weighted) / total,
                  sum(w * o.sends for w, o in weighted) / total)


def bounds(crowds: list[Crowd], window: float, duration: float, share: float = SHARE,
           pushes: float | None = None, fanout: bool = False) -> dict[str, Any]:
    """The oracle's figures averaged over the crowds (one per seed, each played for
    `duration` s), as plain numbers with one entry per segment; with `pushes` (messages per
    account) the learner's bound beside them (`learner_*`: each account's first push chosen
    knowing only its channels and phones, or with `fanout` sent to everything at once)."""
    found: list[Bound] = []
    learner: list[Bound] = []
    for crowd in crowds:
        crowd.duration = duration
        found.append(bound(crowd, window, share))
        if pushes is not None:
            learner.append(bound(crowd, window, share, pushes, fanout))
    k = len(found)
    segments: dict[str, dict[str, float]] = {}
    for b in found:
        for row in b.rows:
            mine = segments.setdefault(row.segment, {})
            for key, value in (("blast_reach", row.blast.reach), ("blast_sends", row.blast.sends),
                               ("reach", row.oracle.reach), ("sends", row.oracle.sends)):
                mine[key] = mine.get(key, 0.0) + value / k
    for b in learner:
        for row in b.rows:
            mine = segments[row.segment]
            for key, value in (("learner_reach", row.oracle.reach),
                               ("learner_sends", row.oracle.sends)):
                mine[key] = mine.get(key, 0.0) + value / k
    out = {"share": share, "window_s": window,
           "blast_reach": sum(b.blast.reach for b in found) / k,
           "blast_sends": sum(b.blast.sends for b in found) / k,
           "reach": sum(b.oracle.reach for b in found) / k,
           "sends": sum(b.oracle.sends for b in found) / k,
           "ratio": sum(b.ratio for b in found) / k, "segments": segments}
    if learner:
        out.update({"pushes": pushes,
                    "learner_reach": sum(b.oracle.reach for b in learner) / k,
                    "learner_sends": sum(b.oracle.sends for b in learner) / k,
                    "learner_ratio": sum(b.ratio for b in learner) / k})
    return out

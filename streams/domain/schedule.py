"""adaptive's schedule, pure: when to send each of an unread message's next channels, chosen
as the oracle of `pushcascade bound` chooses them, from what the account has shown.

Each channel is seen as its read rate (P(a send there is read)), the timing of its reads (the
share of them that come within s of the send) and its price (the reads a send there must add:
the send price per send, and its money cost at the message's importance in reads). A schedule
(channels at times after the request, each sent only if no read came before it) is worth its
reach within the read window less the price of the sends it is expected to make. From the
sends already made, the next channels are added one at a time, each at the time of the best
worth (at once or a share of the read deadline after the previous send, never later), while
one adds worth; the first of them is the message's next send. The plan is made again at that
time (what the account read meanwhile counts), so only its next step is kept.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

#: When a next channel may go out: these shares of the read deadline after the previous send.
GAPS = (0.0, 0.25, 0.5, 0.75, 1.0)
#: Read delays are log-normal: a few fast reads and a long tail (a reader who reads at 0.6 s
#: as a rule reads one in ten after 1.8 s). A sketch of a few delays gives the median; their
#: spread (the sd of their logarithms) is shrunk towards SPREAD, worth PRIOR_DELAYS delays, so
#: that eight delays that happen to lie close do not promise that no read comes later.
SPREAD = 0.5
PRIOR_DELAYS = 2.0
#: Delays (s) are taken as at least this: a read stamped at its send has no logarithm.
SHORTEST = 0.01


@dataclass(frozen=True)
class Channel:
    """A channel as a plan sees it for one account."""

    rate: float  # P(a send there is read, whenever)
    within: Callable[[float], float]  # P(a read there comes within s of the send | it comes)
    price: float  # the reads a send there must add


@dataclass(frozen=True)
class Step:
    """A plan's next send and the worth it adds; with no channel worth a send, the best one
    passed over (`best`) and its worth (below nothing)."""

    channel: str | None
    at: float
    gain: float = 0.0
    best: str | None = None


def timing(delays: Sequence[float], deadline: float) -> Callable[[float], float]:
    """P(a read comes within s of its send) from an account's read delays there: log-normal,
    of their median and their spread shrunk towards SPREAD; with none known, spread evenly
    over the read deadline (a read comes within it, as Method A assumes)."""
    if not delays:
        return lambda s: min(1.0, max(0.0, s / deadline))
    logs = [math.log(max(SHORTEST, d)) for d in delays]
    mu = math.fsum(logs) / len(logs)
    spread = math.sqrt((PRIOR_DELAYS * SPREAD ** 2 + math.fsum((x - mu) ** 2 for x in logs))
                       / (PRIOR_DELAYS + len(logs) - 1))
    scale = spread * math.sqrt(2.0)

    def within(s: float) -> float:
        if s <= 0.0:
            return 0.0
        return 0.5 * (1.0 + math.erf((math.log(s) - mu) / scale))
    return within


def worth(schedule: Sequence[tuple[str, float]], channels: Mapping[str, Channel],
          window: float) -> float:
    """A schedule's reach within `window` less the price of its expected sends (a send goes out
    only if no read came before it)."""
    price, missed = 0.0, 1.0
    for i, (name, at) in enumerate(schedule):
        price += _unread(schedule[:i], channels, at) * channels[name].price
        missed *= 1.0 - channels[name].rate * channels[name].within(window - at)
    return 1.0 - missed - price


def next_step(channels: Mapping[str, Channel], sent: Sequence[tuple[str, float]], now: float,
              deadline: float, window: float, must: bool = False) -> Step:
    """The next send of a message sent on `sent` (channel, time) and unread at `now` (times in
    seconds after its request): the first channel the greedy plan adds (`channels` in the
    order ties go), or None when none adds worth; with `must`, one is added whatever it costs
    (an URGENT push, an account that may have moved)."""
    schedule = list(sent)
    price, missed = 0.0, 1.0  # of the schedule so far: worth = 1 - missed - price
    for i, (name, at) in enumerate(schedule):
        price += _unread(schedule[:i], channels, at) * channels[name].price
        missed *= 1.0 - channels[name].rate * channels[name].within(window - at)
    first: Step | None = None
    left = [c for c in channels if all(c != s for s, _ in schedule)]
    while left:
        last = schedule[-1][1] if schedule else now
        unread = {at: _unread(schedule, channels, at)
                  for at in sorted({max(now, last + g * deadline) for g in GAPS})}
        best: tuple[float, str, float] | None = None
        for name in left:
            c = channels[name]
            for at, still in unread.items():  # what adding `name` at `at` adds to the worth
                gain = missed * c.rate * c.within(window - at) - still * c.price
                if best is None or gain > best[0]:
                    best = (gain, name, at)
        assert best is not None
        gain, name, at = best
        if gain <= 0 and not (must and first is None):
            if first is None:
                return Step(None, now, gain, name)
            break
        if first is None:
            first = Step(name, at, gain)
        price += unread[at] * channels[name].price
        missed *= 1.0 - channels[name].rate * channels[name].within(window - at)
        schedule.append((name, at))
        left.remove(name)
    return first or Step(None, now)  # nothing left to send


def _unread(schedule: Sequence[tuple[str, float]], channels: Mapping[str, Channel],
            at: float) -> float:
    """P(no read of the schedule's sends has come by `at`)."""
    unread = 1.0
    for name, sent in schedule:
        c = channels[name]
        unread *= 1.0 - c.rate * c.within(at - sent)
    return unread

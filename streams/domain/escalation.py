"""adaptive's escalation, pure: each account's read timing and read rate per channel, how long
to wait for a read, and whether the next channel is worth its cost.

An account keeps, per channel, its last few read delays (a small sketch: the time from the
send on that channel to the READ) and its reads and sends there (halved now and then, so old
habits fade). A message waits for its read until the account's silence there has become
unlikely to end in a read: until a read still to come is less likely than STILL, given its
read rate there (the quantile of its delays past which so little is left; with a margin),
never longer than the importance's read deadline. A fast reader's silence escalates sooner;
one who reads nearly everything waits for nearly all its reads (a read that comes at its own
p80 is not worth an escalation sent a moment before it), one who rarely reads there hardly
waits. An account whose reads there mostly come after the deadline (known from its first
read on) does not wait at all: silence until the deadline would tell nothing, so the next
channel is decided with the send (what a late reader reads soon, it reads from channels sent
together). When the wait is over, the next channel is sent only if the reads it is expected
to add are worth its cost:
P(read there) x P(the silent channel stays unread) x the value of a read of that importance
>= the channel's cost (else the next one down the ranking that is: a costly channel passed
over does not hold back a cheap one), so a slow reader whose read is still likely to come is
not paid for. Whatever its money cost, a send must also be expected to add SEND_PRICE reads
(an app push: per phone): each push the user did not need costs their attention, and an
established user is promised a message once. An URGENT push always escalates, and so does a
message whose account's primary has now gone unread EXPLORE_AFTER times in a row (the account
may have moved). A channel with too few
reads of its own takes its timing from all the account's reads (a late reader is late
everywhere).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

#: Read delays kept per account and channel (the newest).
RECENT_DELAYS = 8
#: Reads on a channel before its timing is trusted (until then the importance's deadline).
MIN_READS = 3
#: Silence is unlikely to end in a read once a read still to come is less likely than this.
STILL = 0.2
#: The wait is the quantile of the delays that leaves that much, times this margin...
MARGIN = 1.25
#: ...and never below this share of the importance's read deadline.
FLOOR = 0.1
#: A channel on which fewer of the account's reads than this share came within the read
#: deadline (from its first read on) is read late: silence until the deadline tells little, the
#: next channel is decided with the send.
LATE = 0.25
#: Until MIN_READS reads, a read tells a late reader only after this many deadlines: one read
#: just past the deadline is weak evidence (under load the path's own delay can put a fast
#: reader's read there); a slow reader's, at three deadlines, still tells at once. Measured
#: neutral on the stack: slow-readers, mixed and large within their intervals of a bar of one.
EARLY_LATE = 2.0
#: A channel's read and send counts are halved once its sends reach this (habits fade).
HALVE_AT = 20.0
#: Messages in a row left unread on the account's primary after which the next channel is tried
#: whatever it costs: the account's habits may have changed (how adaptive finds a channel it
#: moved to). A channel escalated to and left unread is no sign of that: it is not counted.
EXPLORE_AFTER = 2
#: Reads a send must be expected to add (an app push: per phone), whatever its money cost: a
#: push the user did not need costs their attention. The oracle's schedules (bound.py) pay
#: about 0.07 at 98% of blast's reach on slow-readers; 0.05 keeps `large` at 98% of blast's.
DEFAULT_SEND_PRICE = 0.05
#: Importances that escalate whatever the cost.
ALWAYS = frozenset({"URGENT"})
#: What one send costs per channel (CNY): an SMS costs money, an app push almost nothing.
DEFAULT_CHANNEL_COST = {"APP": 0.0, "WECHAT": 0.005, "EMAIL": 0.001, "SMS": 0.05}
#: What a read is worth per importance (in the unit of PUSHCASCADE_CHANNEL_COST).
DEFAULT_READ_VALUE = {"LOW": 1.0, "NORMAL": 3.0, "HIGH": 10.0, "URGENT": math.inf}


def remember_delay(delays: list[float], delay: float) -> None:
    """Add one read delay (seconds, never negative) to a channel's sketch, keeping the newest."""
    delays.append(round(max(0.0, delay), 3))
    del delays[:-RECENT_DELAYS]


def quantile(values: Sequence[float], q: float) -> float:
    """The q-quantile of values by linear interpolation between order statistics."""
    if not values:
        raise ValueError("quantile of no values")
    ordered = sorted(values)
    at = q * (len(ordered) - 1)
    low = math.floor(at)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (at - low)


def read_wait(delays: Sequence[float], deadline: float, rate: float = 0.5) -> float:
    """Seconds to wait for a read on a channel read with probability `rate`: the quantile of
    the account's delays there past which a read still to come is less likely than STILL, with
    a margin, within [FLOOR x deadline, deadline]; the deadline itself until MIN_READS reads
    are known; nothing on a channel read late (silence tells nothing there: the next channel is
    decided at once), from its first read on."""
    if late(delays, deadline):
        return 0.0
    if len(delays) < MIN_READS:
        return deadline
    return min(deadline, max(deadline * FLOOR, quantile(delays, telling(rate)) * MARGIN))


def late(delays: Sequence[float], deadline: float) -> bool:
    """Whether a channel is read late: fewer than LATE of the account's reads there came within
    the deadline, judged from its first read on (a reader who reads after the deadline is known
    by one read, and each push it waits a deadline for loses what it would have read in time);
    until MIN_READS reads, within EARLY_LATE deadlines (a read just past the deadline may be the
    path's own delay under load)."""
    bar = deadline if len(delays) >= MIN_READS else deadline * EARLY_LATE
    return bool(delays) and sum(d <= bar for d in delays) < LATE * len(delays)


def telling(rate: float) -> float:
    """The share of a channel's reads after which its silence is telling: a read still to come
    (still_read) is then at most STILL (0 for a channel read no more often than that)."""
    if rate <= STILL:
        return 0.0
    return min(1.0, (rate - STILL) / (rate * (1.0 - STILL)))


def read_share(delays: Sequence[float], after: float) -> float:
    """The share of an account's reads on a channel that came within `after` seconds (with no
    timing known, 1: silence at the deadline means no read, as Method A assumes)."""
    if len(delays) < MIN_READS:
        return 1.0
    return sum(d <= after for d in delays) / len(delays)


def read_rate(counts: Sequence[float] | None, prior: float | None = None,
              strength: float = 0.0) -> float:
    """P(read | sent) on a channel from its [reads, sends], with one read in two sends
    assumed before any (a channel never tried is a coin toss), or with a `prior` rate worth
    `strength` sends (what the account's kind reads there: streams.domain.kinds)."""
    reads, sends = counts if counts else (0.0, 0.0)
    if prior is None or strength <= 0:
        return min(1.0, (reads + 1.0) / (sends + 2.0))
    return min(1.0, (reads + strength * prior) / (sends + strength))


def still_read(rate: float, share: float) -> float:
    """P(a read still comes | none came yet), for a channel read with probability `rate` whose
    reads come within the silence so far with probability `share`."""
    unread = 1.0 - rate * share
    return 0.0 if unread <= 0 else rate * (1.0 - share) / unread


def count(counts: dict[str, list[float]], channel: str, reads: float, sends: float) -> None:
    """Add reads and sends to a channel's counts, halving both once the sends reach HALVE_AT."""
    pair = counts.setdefault(channel, [0.0, 0.0])
    pair[0] += reads
    pair[1] += sends
    if pair[1] >= HALVE_AT:
        pair[0], pair[1] = pair[0] / 2, pair[1] / 2


@dataclass(frozen=True)
class Worth:
    """Whether the next channel is worth it: the expected value of sending it against its cost,
    the reads it is expected to add against the least its sends must add."""

    worth: bool
    expected: float
    cost: float
    gain: float = math.inf
    least: float = 0.0

    def why(self, channel: str, importance: str) -> str:
        """A result's detail when the escalation is not worth it."""
        if self.gain < self.least:
            return (f"read deadline passed; {channel} not worth a send for a {importance} push "
                    f"(expected reads {self.gain:.3g} < {self.least:.3g})")
        return (f"read deadline passed; {channel} not worth its cost for a {importance} push "
                f"(expected {self.expected:.4g} < cost {self.cost:.4g})")


def worth_escalating(importance: str, value: Mapping[str, float], cost: float, next_rate: float,
                     current_still: float, missed: int = 0, least: float = 0.0) -> Worth:
    """Whether to send the next channel: the reads it is expected to add must reach `least`
    (the send price times its sends), and their value at this importance its cost; an URGENT
    push always escalates, and so does one after `missed` >= EXPLORE_AFTER unread messages in
    a row."""
    gain = next_rate * (1.0 - current_still)
    expected = gain * value.get(importance, 0.0) if gain > 0 else 0.0
    if importance in ALWAYS or missed >= EXPLORE_AFTER:
        return Worth(True, math.inf, cost, gain, least)
    return Worth(gain >= least and (cost <= 0 or expected >= cost), expected, cost, gain, least)

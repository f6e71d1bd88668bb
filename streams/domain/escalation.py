"""adaptive's read habits, pure: each account's read rate and read timing per channel, and
the policy's defaults (what a send costs, what a read is worth, the read window).

An account keeps, per channel, its last few read delays (a small sketch: the time from the
send on that channel to the READ) and its reads and sends there (halved now and then, so old
habits fade). A send counts once its outcome is known: with its read, or unread when the
message's read window has passed (streams.domain.channels.settle). What to send next and when
is planned from these (streams.domain.schedule); a channel whose reads mostly come after the
read deadline is read late, and an account late everywhere ranks its channels by read rate.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

#: Read delays kept per account and channel (the newest).
RECENT_DELAYS = 8
#: Reads on a channel before its own timing is used (until then all the account's reads').
MIN_READS = 3
#: A channel on which fewer of the account's reads than this share came within the read
#: deadline (from its first read on) is read late.
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
#: about 0.1 at 98% of blast's reach on slow-readers; what adaptive learns keeps 98% of
#: blast's reach on every shipped population at 0.065 (large, at 98.0%, binds).
DEFAULT_SEND_PRICE = 0.065
#: Read deadlines after its request within which a read reaches the user in time: what
#: adaptive's plan counts as reach (the demo's 10 s window at its 3 s deadlines is 3.33).
DEFAULT_READ_WINDOW = 3.0
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


def late(delays: Sequence[float], deadline: float) -> bool:
    """Whether a channel is read late: fewer than LATE of the account's reads there came within
    the deadline, judged from its first read on (a reader who reads after the deadline is known
    by one read, and each push it waits a deadline for loses what it would have read in time);
    until MIN_READS reads, within EARLY_LATE deadlines (a read just past the deadline may be the
    path's own delay under load)."""
    bar = deadline if len(delays) >= MIN_READS else deadline * EARLY_LATE
    return bool(delays) and sum(d <= bar for d in delays) < LATE * len(delays)


def read_rate(counts: Sequence[float] | None, prior: float | None = None,
              strength: float = 0.0) -> float:
    """P(read | sent) on a channel from its [reads, sends], with one read in two sends
    assumed before any (a channel never tried is a coin toss), or with a `prior` rate worth
    `strength` sends (what the account's kind reads there: streams.domain.kinds)."""
    reads, sends = counts if counts else (0.0, 0.0)
    if prior is None or strength <= 0:
        return min(1.0, (reads + 1.0) / (sends + 2.0))
    return min(1.0, (reads + strength * prior) / (sends + strength))


def count(counts: dict[str, list[float]], channel: str, reads: float, sends: float) -> None:
    """Add reads and sends to a channel's counts, halving both once the sends reach HALVE_AT."""
    pair = counts.setdefault(channel, [0.0, 0.0])
    pair[0] += reads
    pair[1] += sends
    if pair[1] >= HALVE_AT:
        pair[0], pair[1] = pair[0] / 2, pair[1] / 2

"""adaptive's kinds of reader, pure: what accounts that read alike read on each channel, learnt
from the accounts of a partition (a sample of the fleet: accounts hash to partitions), as the
prior of each account's own read rate there.

An account's kind: none until it has read; `late` while its reads, pooled, come late
(channels.late_reader); else `prompt:<channel>`, the channel it has read most. Each message
counts, under the kind its account had when the message was planned, its sends and reads on
each channel (an app push per number of phones: two phones read it more often than one),
halved once a channel's sends reach HALVE_AT so that the kinds follow the fleet. A kind's read
rate on a channel, once it has MIN_SENDS sends there, is the prior of its accounts' own read
rate there, worth STRENGTH sends of their own: twelve pushes cannot tell a WeChat read at 0.85
from an app push on two phones read at 0.84, a kind's hundreds can come closer, and a reader's
first pushes are judged by what its kind reads instead of a coin toss.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from streams.domain.channels import Account, ChannelPolicy, late_reader

#: Sends of its own an account's kind prior is worth.
STRENGTH = 12.0
#: Sends of a kind on a channel before its read rate there is a prior.
MIN_SENDS = 20.0
#: A kind's read and send counts on a channel are halved once its sends reach this.
HALVE_AT = 400.0
LATE = "late"


def kind_of(account: Account, policy: ChannelPolicy) -> str | None:
    """The account's kind: None before its first read, `late` for a late reader, else
    `prompt:` and its most-read channel (ties by the fixed channel order)."""
    read = {c: n for c, n in account.feedback_count.items() if n > 0}
    if not read:
        return None
    if late_reader(account, policy):
        return LATE
    position = {c: i for i, c in enumerate(policy.order)}
    return "prompt:" + min(read, key=lambda c: (-read[c], position.get(c, len(position)), c))


def key(kind: str, channel: str, phones: int) -> str:
    """Where a kind's counts on a channel are kept: the app push's per number of phones."""
    return f"{kind}|{channel}|{phones}" if channel == "APP" else f"{kind}|{channel}"


def count(stats: dict[str, list[float]], kind: str, channel: str, phones: int, reads: float,
          sends: float) -> None:
    """Add a message's reads or sends on a channel to its kind's counts (halving both once
    the sends reach HALVE_AT)."""
    pair = stats.setdefault(key(kind, channel, phones), [0.0, 0.0])
    pair[0] += reads
    pair[1] += sends
    if pair[1] >= HALVE_AT:
        pair[0], pair[1] = pair[0] / 2, pair[1] / 2


def priors(stats: Mapping[str, list[float]], kind: str | None, channels: Iterable[str],
           phones: int) -> dict[str, float]:
    """The kind's read rate on each of the channels where it has MIN_SENDS sends (with one read
    in two sends assumed before any, as an account's own)."""
    if kind is None:
        return {}
    found = {}
    for channel in channels:
        pair = stats.get(key(kind, channel, phones))
        if pair and pair[1] >= MIN_SENDS:
            found[channel] = (pair[0] + 1.0) / (pair[1] + 2.0)
    return found

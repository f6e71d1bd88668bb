"""The demo's arithmetic over seeds: means and 95% Student-t intervals, paired comparisons,
the per-segment breakdown, the phones whose best route is clear, and the movers' accuracy.

Pure functions on plain numbers and dicts (no I/O); `streams.cli.demo` feeds them the figures
that `connectors.clickhouse.quality` reads from ClickHouse.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

#: Two-sided 95% quantiles of Student's t (t_{0.975, df}) for df = 1..30, then a few more; a
#: df between two entries takes the smaller df's quantile (the wider interval).
T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306,
        9: 2.262, 10: 2.228, 11: 2.201, 12: 2.179, 13: 2.160, 14: 2.145, 15: 2.131,
        16: 2.120, 17: 2.110, 18: 2.101, 19: 2.093, 20: 2.086, 21: 2.080, 22: 2.074,
        23: 2.069, 24: 2.064, 25: 2.060, 26: 2.056, 27: 2.052, 28: 2.048, 29: 2.045,
        30: 2.042, 40: 2.021, 60: 2.000, 120: 1.980}
Z975 = 1.960


def t975(df: int) -> float:
    """t_{0.975} with df degrees of freedom (df >= 1)."""
    if df < 1:
        raise ValueError(f"df must be >= 1, not {df}")
    if df in T975:
        return T975[df]
    below = [d for d in T975 if d < df]
    return T975[max(below)] if df <= max(T975) else Z975


@dataclass(frozen=True)
class Interval:
    """A mean over n values and, with n >= 2, its 95% confidence half-width."""

    mean: float
    half: float | None
    n: int

    @property
    def lo(self) -> float | None:
        """The lower end (None with one value)."""
        return None if self.half is None else self.mean - self.half

    @property
    def hi(self) -> float | None:
        """The upper end (None with one value)."""
        return None if self.half is None else self.mean + self.half

    def as_dict(self) -> dict[str, Any]:
        """For the JSON."""
        return {"mean": self.mean, "half": self.half, "lo": self.lo, "hi": self.hi,
                "n": self.n}

    def show(self, fmt: str) -> str:
        """`mean ± half` in the figure's format (the mean alone with one value)."""
        if self.half is None:
            return fmt.format(self.mean)
        return f"{fmt.format(self.mean)} ± {fmt.format(self.half)}"


def interval(values: Iterable[float | None]) -> Interval | None:
    """The mean of the values that are not None and its 95% Student-t interval (None when
    there is no value)."""
    xs = [float(v) for v in values if v is not None]
    if not xs:
        return None
    n = len(xs)
    mean = math.fsum(xs) / n
    if n < 2:
        return Interval(mean, None, 1)
    var = math.fsum((x - mean) ** 2 for x in xs) / (n - 1)
    return Interval(mean, t975(n - 1) * math.sqrt(var / n), n)


Side = Literal["better", "worse", "undecided"]


def paired(ours: Sequence[float], theirs: Sequence[float], higher_is_better: bool) -> Side:
    """Whether `ours` beats `theirs` beyond the 95% interval of the paired difference
    (ours_i - theirs_i, same seed): "better" when the interval lies wholly on the good side,
    "worse" when wholly on the bad side, else "undecided". Needs two pairs or more."""
    if len(ours) != len(theirs) or len(ours) < 2:
        raise ValueError("a paired comparison needs two or more pairs of the same seeds")
    diff = interval(a - b for a, b in zip(ours, theirs, strict=True))
    assert diff is not None and diff.lo is not None and diff.hi is not None
    if diff.lo > 0:
        return "better" if higher_is_better else "worse"
    if diff.hi < 0:
        return "worse" if higher_is_better else "better"
    return "undecided"


def leads(values: Iterable[float], margin: float = 0.1) -> bool:
    """Whether the highest of `values` leads the next by at least `margin`, or stands alone
    (False without any)."""
    ranked = sorted(values, reverse=True)
    if not ranked:
        return False
    return len(ranked) == 1 or ranked[0] - ranked[1] >= margin - 1e-9


def clear_best(receipt: Mapping[str, float], original: str, margin: float = 0.1) -> bool:
    """Whether a phone's best alternative route (any route but the original) leads the
    next-best alternative by at least `margin`, or is the only one (False without any)."""
    return leads((p for r, p in receipt.items() if r != original), margin)


#: Per account: its messages, those reached in the window, its deliveries, SMS sends, cost.
ACCOUNT_FIELDS = ("messages", "reached", "deliveries", "sms", "cost")


def by_segment(accounts: Mapping[str, Mapping[str, float]],
               segment_of: Mapping[str, str]) -> dict[str, dict[str, float]]:
    """Per segment: accounts (with messages), messages, reach, sends, SMS and cost per
    message, from per-account sums (accounts outside `segment_of` are left out)."""
    sums: dict[str, dict[str, float]] = {}
    for account, row in accounts.items():
        segment = segment_of.get(account)
        if segment is None:
            continue
        total = sums.setdefault(segment, dict.fromkeys(("accounts", *ACCOUNT_FIELDS), 0.0))
        total["accounts"] += 1
        for name in ACCOUNT_FIELDS:
            total[name] += float(row.get(name, 0) or 0)
    out = {}
    for segment, t in sorted(sums.items()):
        n = t["messages"] or 1.0
        out[segment] = {"accounts": int(t["accounts"]), "messages": int(t["messages"]),
                        "reach": t["reached"] / n, "sends_per_message": t["deliveries"] / n,
                        "sms_per_message": t["sms"] / n, "cost_per_message": t["cost"] / n}
    return out


def followed(pushes: Mapping[str, Sequence[tuple[float, str]]],
             primaries: Mapping[str, Mapping[str, str]], changed_ms: Mapping[str, float],
             truth: Mapping[str, str | None], grace: int = 5) -> tuple[int, int]:
    """Movers: (PRIMARY sends to the true primary after the change, PRIMARY sends counted),
    counting each mover's PRIMARY sends from its (grace + 1)-th push requested at or after
    its change on. `pushes`: account -> [(requested at ms, message id)]; `primaries`:
    account -> {message id: channel of its PRIMARY send}; `changed_ms`: account -> the
    change's time (ms, same clock); `truth`: account -> the true primary after the change."""
    hits = counted = 0
    for account, at in changed_ms.items():
        want = truth.get(account)
        if want is None:
            continue
        after = sorted((t, m) for t, m in pushes.get(account, ()) if t >= at)
        sent = primaries.get(account, {})
        for _, message in after[grace:]:
            if message in sent:
                counted += 1
                hits += sent[message] == want
    return hits, counted

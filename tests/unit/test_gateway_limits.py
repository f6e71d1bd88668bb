"""The gateway's per-key rate limits: the same answers as aiolimiter's leaky bucket, with one
float per key and nothing for the garbage collector to walk."""

from __future__ import annotations

import gc
from types import SimpleNamespace

from aiolimiter import AsyncLimiter
from hypothesis import given
from hypothesis import strategies as st

from connectors.gateway import LIMITERS, Limits


def _reference(rate: float, period: float, clock: list[float]) -> AsyncLimiter:
    """aiolimiter's AsyncLimiter on a clock the test moves."""
    limiter = AsyncLimiter(rate, period)
    limiter._event_loop = SimpleNamespace(  # type: ignore[attr-defined]
        time=lambda: clock[0], is_closed=lambda: False)
    return limiter


def _take(limiter: AsyncLimiter) -> bool:
    """has_capacity, then acquire (which never waits when there is capacity)."""
    if not limiter.has_capacity():
        return False
    coro = limiter.acquire()
    try:
        coro.send(None)
    except StopIteration:
        return True
    raise AssertionError("acquire waited although there was capacity")


@given(rate=st.sampled_from([1.0, 3.0, 10.0, 100.0]), period=st.sampled_from([1.0, 60.0]),
       calls=st.lists(st.tuples(st.sampled_from("abc"), st.integers(0, 2000)), max_size=80))
def test_each_key_leaks_as_aiolimiters_bucket(rate, period, calls) -> None:
    limits, clock, references = Limits(rate, period), [1000.0], {}
    for key, step_ms in calls:
        clock[0] += step_ms / 1000 * period / 10
        reference = references.setdefault(key, _reference(rate, period, clock))
        assert limits.allows(key, clock[0]) == _take(reference), (key, clock[0])


def test_a_burst_of_rate_then_one_per_interval() -> None:
    limits = Limits(10, 60)  # ten per minute: a token opened too often
    assert [limits.allows("t", 0.0) for _ in range(12)] == [True] * 10 + [False] * 2
    assert not limits.allows("t", 5.9) and limits.allows("t", 6.0) and not limits.allows("t", 6.1)
    assert limits.allows("other", 6.1)  # keys are apart


def test_the_least_recently_used_key_goes_beyond_the_cap_and_nothing_is_tracked() -> None:
    limits = Limits(1, 1)
    for i in range(LIMITERS + 1):
        limits.allows(f"k{i}", 0.0)
    assert limits.allows("k0", 0.0)  # forgotten: a fresh bucket
    assert not limits.allows(f"k{LIMITERS}", 0.0)  # remembered
    assert not any(gc.is_tracked(v) for v in limits._empty_at.values())

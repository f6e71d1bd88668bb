"""The commit point never passes a record whose work is not done."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from connectors.offsets import OffsetTracker


def test_the_commit_point_waits_for_the_lowest_open_offset() -> None:
    t = OffsetTracker()
    for offset in (10, 11, 12):
        t.take(0, offset)
    t.done(0, 11)
    t.done(0, 12)
    assert t.committable() == {0: 10}
    t.done(0, 10)
    assert t.committable() == {0: 13}
    assert t.pending() == 0


def test_partitions_are_independent_and_forgotten_on_revoke() -> None:
    t = OffsetTracker()
    t.take(0, 5)
    t.take(1, 7)
    t.done(1, 7)
    assert t.committable() == {0: 5, 1: 8}
    t.forget({0})
    assert t.committable() == {1: 8}
    assert t.pending(0) == 0


@given(st.lists(st.booleans(), min_size=1, max_size=60), st.randoms())
def test_nothing_open_is_ever_behind_the_commit_point(finished: list[bool], rnd) -> None:
    t = OffsetTracker()
    offsets = list(range(100, 100 + len(finished)))
    for o in offsets:
        t.take(3, o)
    done = [o for o, f in zip(offsets, finished, strict=True) if f]
    rnd.shuffle(done)
    for o in done:
        t.done(3, o)
    point = t.committable()[3]
    still_open = [o for o, f in zip(offsets, finished, strict=True) if not f]
    assert all(o >= point for o in still_open)
    assert point == (min(still_open) if still_open else offsets[-1] + 1)

"""Unit tests of streams.domain.deadlines: timer keys and writes, and the per-partition index
of the deadlines due within its loaded window."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streams.domain.deadlines import (
    DeadlineIndex,
    Due,
    InputProgress,
    due_of,
    due_record,
    horizon,
    ms,
    time_bound,
    timer_key,
    timer_writes,
)

#: A window end past every due time of these tests (ms).
FOREVER = 2**62


def due(at: float, partition: int = 0, key: str | None = None) -> Due:
    """A deadline for message `key` (default derived from time and partition)."""
    return Due(at, partition, key or f"m-{partition}-{at}", f"acc-{partition}")


def rows(dues: list[Due]) -> list[tuple[float, int, str, str]]:
    """Every field of each Due (their equality ignores partition and account)."""
    return [(d.due_at, d.partition, d.key, d.account_id) for d in dues]


def index_of(*dues: Due) -> DeadlineIndex:
    """An index holding these deadlines, every partition 0-7 loaded forever."""
    index = DeadlineIndex()
    for p in range(8):
        index.loaded(p, [], FOREVER)
    for d in dues:
        assert index.add(d)
    return index


# --- Due -----------------------------------------------------------------------------------------


def test_due_orders_by_time_then_key() -> None:
    assert Due(1.0, 5, "z", "a") < Due(2.0, 0, "a", "a")
    assert Due(1.0, 5, "a", "a") < Due(1.0, 0, "b", "a")
    assert sorted([Due(3.0, 0, "x", "a"), Due(1.0, 1, "y", "b"), Due(1.0, 2, "a", "c")]) == [
        Due(1.0, 2, "a", "c"), Due(1.0, 1, "y", "b"), Due(3.0, 0, "x", "a")]


def test_due_is_frozen() -> None:
    d = due(1.0)
    with pytest.raises(AttributeError):
        d.due_at = 2.0  # type: ignore[misc]


# --- empty index, add, len, next_due -------------------------------------------------------------


def test_empty_index() -> None:
    index = DeadlineIndex()
    assert len(index) == 0
    assert index.next_due() is None
    assert index.pop_due(1e18) == []


def test_add_counts_across_partitions() -> None:
    index = index_of(due(5.0, 0), due(3.0, 1), due(4.0, 1), due(9.0, 7))
    assert len(index) == 4
    assert index.next_due() == 3.0


def test_add_keeps_duplicates() -> None:
    index = index_of(due(5.0, 0, "m"), due(5.0, 0, "m"))
    assert len(index) == 2
    assert len(index.pop_due(5.0)) == 2


def test_next_due_is_the_minimum_across_partitions_and_follows_pops() -> None:
    index = index_of(due(30.0, 2), due(10.0, 1), due(20.0, 0), due(40.0, 1))
    assert index.next_due() == 10.0
    index.pop_due(10.0)
    assert index.next_due() == 20.0
    index.pop_due(35.0)
    assert index.next_due() == 40.0
    index.pop_due(40.0)
    assert index.next_due() is None
    assert len(index) == 0


def test_next_due_ignores_emptied_partitions() -> None:
    index = index_of(due(1.0, 0), due(8.0, 3))
    index.pop_due(1.0)
    assert index.next_due() == 8.0


# --- pop_due -------------------------------------------------------------------------------------


def test_pop_due_returns_only_due_entries_earliest_first_across_partitions() -> None:
    entries = [due(50.0, 0), due(10.0, 1), due(30.0, 2), due(20.0, 0), due(60.0, 1),
               due(40.0, 2), due(45.0, 1)]
    index = index_of(*entries)
    got = index.pop_due(40.0)
    assert rows(got) == rows([due(10.0, 1), due(20.0, 0), due(30.0, 2), due(40.0, 2)])
    assert len(index) == 3
    assert index.next_due() == 45.0
    assert rows(index.pop_due(1000.0)) == rows([due(45.0, 1), due(50.0, 0), due(60.0, 1)])
    assert len(index) == 0


def test_pop_due_includes_entries_due_exactly_now() -> None:
    index = index_of(due(100.0), due(100.000001))
    assert rows(index.pop_due(100.0)) == rows([due(100.0)])
    assert len(index) == 1


def test_pop_due_nothing_due_leaves_the_index_unchanged() -> None:
    index = index_of(due(10.0, 0), due(20.0, 1))
    assert index.pop_due(9.999) == []
    assert len(index) == 2
    assert index.next_due() == 10.0


def test_pop_due_ties_are_ordered_by_key() -> None:
    index = index_of(due(5.0, 3, "c"), due(5.0, 1, "a"), due(5.0, 2, "b"))
    assert [d.key for d in index.pop_due(5.0)] == ["a", "b", "c"]


def test_pop_due_does_not_return_an_entry_twice() -> None:
    index = index_of(due(1.0, 0), due(2.0, 1))
    assert len(index.pop_due(5.0)) == 2
    assert index.pop_due(5.0) == []


def test_pop_due_respects_limit_and_leaves_the_rest() -> None:
    index = index_of(*(due(float(t), 0) for t in range(10)))
    first = index.pop_due(100.0, limit=3)
    assert [d.due_at for d in first] == [0.0, 1.0, 2.0]
    assert len(index) == 7
    second = index.pop_due(100.0, limit=5)
    assert [d.due_at for d in second] == [3.0, 4.0, 5.0, 6.0, 7.0]
    assert [d.due_at for d in index.pop_due(100.0)] == [8.0, 9.0]
    assert len(index) == 0


def test_pop_due_limit_across_partitions_counts_the_total() -> None:
    index = index_of(*(due(float(t), t % 4) for t in range(12)))
    got = index.pop_due(100.0, limit=5)
    assert len(got) == 5
    assert got == sorted(got)
    assert len(index) == 7


def test_pop_due_limit_zero_pops_nothing() -> None:
    index = index_of(due(1.0, 0), due(2.0, 1))
    assert index.pop_due(10.0, limit=0) == []
    assert len(index) == 2


def test_pop_due_limit_returns_the_earliest_due_entries_across_partitions() -> None:
    index = index_of(due(50.0, 0), due(60.0, 0), due(10.0, 1), due(20.0, 1))
    assert rows(index.pop_due(100.0, limit=2)) == rows([due(10.0, 1), due(20.0, 1)])


# --- forget --------------------------------------------------------------------------------------


def test_forget_drops_the_partitions() -> None:
    index = index_of(due(1.0, 0), due(2.0, 1), due(3.0, 1), due(4.0, 2))
    index.forget([1])
    assert len(index) == 2
    assert rows(index.pop_due(100.0)) == rows([due(1.0, 0), due(4.0, 2)])


def test_forget_unknown_partitions_and_generators() -> None:
    index = index_of(due(1.0, 0), due(2.0, 1))
    index.forget(p for p in (5, 6))
    assert len(index) == 2
    index.forget(iter([0, 1, 0]))
    assert len(index) == 0
    assert index.next_due() is None


def test_forget_then_add_to_the_same_partition_waits_for_its_window() -> None:
    index = index_of(due(1.0, 3))
    index.forget([3])
    assert not index.add(due(7.0, 3))  # not loaded: the table holds it for the next window
    assert index.pop_due(10.0) == []
    assert index.window(3, 10.0) == (0, 10_000 + index.lookahead_ms)
    index.loaded(3, [due(7.0, 3)], 70_000)
    assert rows(index.pop_due(10.0)) == rows([due(7.0, 3)])


# --- windows -------------------------------------------------------------------------------------


def test_a_window_loads_from_the_end_of_the_last_one_once_it_is_half_used() -> None:
    index = DeadlineIndex(lookahead=60)
    assert index.window(0, 100.0) == (0, 160_000)
    index.loaded(0, [], 160_000)
    assert index.window(0, 100.0) is None
    assert index.window(0, 129.999) is None
    assert index.window(0, 130.0) == (160_000, 190_000)


def test_without_a_lookahead_one_window_holds_everything() -> None:
    index = DeadlineIndex(lookahead=None)
    assert index.window(0, 100.0) == (0, 2**63 - 1)
    index.loaded(0, [], 2**63 - 1)
    assert index.window(0, 1e12) is None
    assert index.add(due(1e12, 0))


def test_a_deadline_inside_the_window_is_added_one_after_it_is_not() -> None:
    index = DeadlineIndex(lookahead=60)
    index.loaded(0, [], 160_000)
    assert index.add(due(159.999, 0))
    assert not index.add(due(160.0, 0))
    assert not index.add(due(1.0, 1))  # partition 1 not loaded
    assert len(index) == 1


# --- timer keys and writes -----------------------------------------------------------------------


def test_timer_keys_sort_by_due_time_then_what_they_are_for() -> None:
    a = Due(1.5, 0, "m1", "acc", "READ")
    b = Due(1.5, 0, "m1", "acc", "RECEIPT", "d1")
    c = Due(2.0, 0, "m0", "acc", "READ")
    assert timer_key(a) < timer_key(c) and timer_key(b) < timer_key(c)
    assert len({timer_key(a), timer_key(b), timer_key(c)}) == 3
    assert time_bound(ms(1.5)) <= timer_key(a) < time_bound(ms(1.5) + 1)


def test_a_timer_key_and_value_hold_its_deadline() -> None:
    for d in (Due(12.25, 3, "m", "acc", "RECEIPT", "dev", "m"),
              Due(7.0, 1, "c1", "", "CAMPAIGN", None, "c1"),
              Due(1e9 + 0.3333, 0, "m\"é", "a,b", "READ", None, "m\"é")):
        got = due_of(timer_key(d), due_record(d))
        assert (got.due_at, got.partition, got.key, got.account_id, got.kind, got.device_id,
                got.message_id) == (d.due_at, d.partition, d.key, d.account_id, d.kind,
                                    d.device_id, d.message_id)


def test_timer_writes_add_the_new_delete_the_gone_and_keep_the_rest() -> None:
    kept, gone, new = (Due(1.0, 0, "k", "a"), Due(2.0, 0, "g", "a"), Due(3.0, 0, "n", "a"))
    writes = timer_writes([kept, gone], [kept, new])
    assert writes == {timer_key(gone): None, timer_key(new): due_record(new)}
    assert timer_writes([], []) == {}
    assert timer_writes([kept], []) == {timer_key(kept): None}


@given(before=st.lists(st.builds(Due, st.integers(0, 9).map(float), st.just(0),
                                 st.sampled_from("xyz"), st.just("a"))),
       after=st.lists(st.builds(Due, st.integers(0, 9).map(float), st.just(0),
                                st.sampled_from("xyz"), st.just("a"))))
def test_timer_writes_turn_the_table_of_before_into_the_table_of_after(before, after) -> None:
    table = {timer_key(d): due_record(d) for d in before}
    for key, value in timer_writes(before, after).items():
        if value is None:
            del table[key]
        else:
            table[key] = value
    assert table == {timer_key(d): due_record(d) for d in after}


# --- properties ----------------------------------------------------------------------------------

dues = st.lists(
    st.builds(Due, st.integers(0, 50).map(float), st.integers(0, 4),
              st.text("abc", min_size=1, max_size=2), st.just("acc")),
    max_size=40,
)


def canonical(entries: list[Due]) -> list[tuple[float, str, int, str]]:
    """A multiset of entries in a fixed order, every field compared."""
    return sorted((d.due_at, d.key, d.partition, d.account_id) for d in entries)


@given(entries=dues, now=st.integers(-1, 51).map(float))
def test_pop_due_property(entries, now) -> None:
    index = index_of(*entries)
    got = index.pop_due(now)
    assert got == sorted(got)
    assert canonical(got) == canonical([d for d in entries if d.due_at <= now])
    assert len(index) == len([d for d in entries if d.due_at > now])
    assert index.pop_due(now) == []
    later = [d.due_at for d in entries if d.due_at > now]
    assert index.next_due() == (min(later) if later else None)
    assert canonical(index.pop_due(1e9)) == canonical([d for d in entries if d.due_at > now])


@given(entries=dues, now=st.integers(0, 50).map(float), limit=st.integers(0, 45))
def test_pop_due_with_limit_property(entries, now, limit) -> None:
    index = index_of(*entries)
    due_now = [d for d in entries if d.due_at <= now]
    got = index.pop_due(now, limit=limit)
    assert got == sorted(got)
    assert len(got) == min(limit, len(due_now))
    assert all(d.due_at <= now for d in got)
    rest = index.pop_due(1e9)
    assert canonical(got + rest) == canonical(entries)


@given(entries=dues, drop=st.sets(st.integers(0, 4)))
def test_forget_property(entries, drop) -> None:
    index = index_of(*entries)
    index.forget(drop)
    assert canonical(index.pop_due(1e9)) == canonical(
        [d for d in entries if d.partition not in drop])


# -- the horizon: how far a partition's deadlines may fire -------------------------------------


def test_a_deadline_waits_for_a_fetch_sent_after_it_came_due() -> None:
    # a READ acknowledged just before its deadline may still be on its way: the deadline
    # fires only once every input was fetched `delay` after it came due
    due, delay = 100.0, 0.35
    caught_up = [InputProgress(False, 99.0, due + 0.1), InputProgress(False, 0.0, due + 5)]
    assert horizon(due + 5, caught_up, delay) < due
    fetched_later = [InputProgress(False, 99.0, due + delay), InputProgress(False, 0.0, due + 5)]
    assert horizon(due + 5, fetched_later, delay) == due


def test_an_input_behind_holds_deadlines_at_its_stream_time() -> None:
    progress = [InputProgress(True, 42.0, 200.0), InputProgress(False, 10.0, 200.0)]
    assert horizon(200.0, progress, 0.35) == 42.0


def test_an_input_never_fetched_holds_every_deadline() -> None:
    assert horizon(200.0, [InputProgress(False, 0.0, None)], 0.35) < 0


@given(now=st.floats(0, 1e9), delay=st.floats(0, 10), inputs=st.lists(st.builds(
    InputProgress, st.booleans(), st.floats(0, 1e9), st.none() | st.floats(0, 1e9))))
def test_the_horizon_is_never_past_now_nor_past_any_inputs_bound(
        now: float, delay: float, inputs: list[InputProgress]) -> None:
    cut = horizon(now, inputs, delay)
    assert cut <= now
    for p in inputs:
        assert cut <= (p.stream_time if p.behind else (p.fetched or 0.0) - delay)
    assert cut == now or any(
        cut == (p.stream_time if p.behind else (p.fetched or 0.0) - delay) for p in inputs)

"""Which failed inserts are the rows' fault, and how a refused batch is split (pure)."""

from __future__ import annotations

from datetime import UTC, datetime

from connectors.clickhouse.refusals import (
    Refusal,
    by_partition,
    day,
    halves,
    reason,
    refusal,
)

# Messages as chDB 26.9 raised them here (clickhouse-connect sets the code from them).
OUT_OF_RANGE = ("Code: 321. DB::Exception: Value -1 is out of bounds of type DateTime: while "
                "executing 'FUNCTION toDateTime(sent_at :: 0) -> toDateTime(sent_at) "
                "DateTime('UTC') : 2'. (VALUE_IS_OUT_OF_RANGE_OF_DATA_TYPE)")
PARTITIONS = ("Code: 252. DB::Exception: Too many partitions for single INSERT block (more "
              "than 100). The limit is controlled by 'max_partitions_per_insert_block' "
              "setting. (TOO_MANY_PARTS)")
MERGES_BEHIND = ("Code: 252. DB::Exception: Too many parts (300 with average size of 1.00 "
                 "MiB) in table 'pushcascade.sends'. Merges are processing significantly "
                 "slower than inserts. (TOO_MANY_PARTS)")
DETACHED = "Code: 60. DB::Exception: Table pushcascade.sends does not exist. (UNKNOWN_TABLE)"


AVRO_VARINT = ("Code: 1001. DB::Exception: std::exception. Code: 1001, type: avro::Exception, "
               "e.what() = Invalid Avro varint (version 26.9.2.1). (STD_EXCEPTION)")


def test_data_errors_are_refusals_of_rows_and_everything_else_is_retried():
    assert refusal(321, OUT_OF_RANGE) is Refusal.ROWS
    assert refusal(469, "Code: 469. Constraint violated") is Refusal.ROWS
    assert refusal(252, PARTITIONS) is Refusal.PARTITIONS
    assert refusal(252, MERGES_BEHIND) is None  # ClickHouse is behind: retry the same batch
    assert refusal(60, DETACHED) is None
    assert refusal(241, "Code: 241. Memory limit exceeded") is None
    assert refusal(None, "Network Error: Connection refused") is None
    # a datum ClickHouse's Avro parser cannot read (found by the sink fuzzer at scale: it
    # made the sink retry one batch forever); other C++ exceptions are ClickHouse's own
    assert refusal(1001, AVRO_VARINT) is Refusal.ROWS
    assert refusal(1001, "Code: 1001. DB::Exception: std::exception. Code: 1001, type: "
                         "std::bad_alloc, e.what() = std::bad_alloc") is None


def test_the_reason_is_clickhouses_own_words_on_one_line():
    over_http = (f"Received ClickHouse exception, code: 321, server response: {OUT_OF_RANGE} "
                 "(version 25.8.1.1 (official build)) (for url http://ch:8123)")
    assert reason(over_http) == OUT_OF_RANGE
    assert reason("Code: 1001. DB::Exception: e.what() = EOF reached (version 26.9.2.1).\n"
                  "(STD_EXCEPTION)") == "Code: 1001. DB::Exception: e.what() = EOF reached. " \
                                       "(STD_EXCEPTION)"
    assert reason("no code at all") == "no code at all"
    assert len(reason("Code: 6. " + "x" * 1000)) == 500


def test_days_are_utc_days_since_1970_like_todate():
    assert day(0) == 0 and day(86_399_999) == 0 and day(86_400_000) == 1
    assert day(-1) == -1  # before 1970: a day of its own, not day 0
    assert day(datetime(2026, 12, 5, 23, 59, tzinfo=UTC)) == day(1_796_515_140_000)


def test_a_batch_is_grouped_by_partition_with_at_most_the_limit_in_a_group():
    rows = [(d % 7, f"r{i}-d{d % 7}") for i, d in enumerate(range(20))]
    groups = by_partition(rows, limit=3)
    assert [sorted({r.split("-d")[1] for r in g}) for g in groups] == [
        ["0", "1", "2"], ["3", "4", "5"], ["6"]]
    assert sorted(r for g in groups for r in g) == sorted(r for _, r in rows)
    assert by_partition([(5, "a"), (5, "b")], limit=3) == [["a", "b"]]


def test_halves_keep_every_row_once():
    assert halves([1, 2, 3]) == [[1], [2, 3]]
    assert halves([1, 2]) == [[1], [2]]

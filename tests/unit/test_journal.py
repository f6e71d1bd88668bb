"""The state journal, pure: batches survive encoding whole, chunks complete only together, and
a writer whose partition was claimed by a newer owner is fenced."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams import journal
from streams.journal import Batch, Fold, JournalError

keys = st.binary(min_size=1, max_size=40)
values = st.one_of(st.none(), st.dictionaries(
    # integers within 64 bits: what state holds (Avro longs); orjson reads a larger one back
    # as a float
    st.text(max_size=8), st.one_of(st.integers(-2**63, 2**64 - 1), st.text(max_size=60), st.floats(
        allow_nan=False, allow_infinity=False)), max_size=4))
writes = st.lists(st.tuples(st.sampled_from(["accounts", "messages", "devices"]), keys, values),
                  max_size=30)
outputs = st.lists(st.tuples(st.sampled_from(["push.sends", "push.dlq"]), keys,
                             st.one_of(st.none(), st.binary(max_size=300)),
                             st.one_of(st.none(), st.integers(0, 7)),
                             st.one_of(st.none(), st.lists(st.tuples(
                                 st.text(max_size=8), st.binary(max_size=8)), min_size=1,
                                 max_size=2))), max_size=20)
batches = st.builds(Batch, epoch=st.integers(0, 10**6), seq=st.integers(0, 10**6),
                    writes=writes, positions=st.dictionaries(st.text(min_size=1, max_size=20),
                                                             st.integers(0, 2**40), max_size=6),
                    outputs=outputs, clock=st.floats(0, 4e9))


def test_records_written_by_the_standard_library_are_read_the_same() -> None:
    # journals written before records went through orjson (json.dumps, \\u escapes) recover
    import json

    batch = Batch(4, 2, [("messages", b"k\x00\xff", {"t": "\u4e2d\x00", "n": 2**70})],
                  {"push.requests": 7}, [("push.sends", b"k", b"\x00v", 3, None)], 1.5)
    record = json.loads(journal.encode(batch)[0])
    for ensure_ascii in (True, False):
        old = json.dumps(record, separators=(",", ":"), ensure_ascii=ensure_ascii).encode()
        assert Fold().feed(old, 9) == batch


@settings(max_examples=300)
@given(batches, st.integers(200, 5000))
def test_a_batch_comes_back_whole_from_its_records_in_any_chunking(batch, limit) -> None:
    records = journal.encode(batch, limit)
    fold = Fold()
    found = [fold.feed(r, i) for i, r in enumerate(records)]
    assert found[:-1] == [None] * (len(records) - 1)
    assert found[-1] == batch


@settings(max_examples=200)
@given(batches, st.integers(200, 2000), st.data())
def test_a_batch_missing_any_chunk_is_never_applied(batch, limit, data) -> None:
    records = journal.encode(batch, limit)
    if len(records) < 2:
        return
    lost = data.draw(st.integers(0, len(records) - 1))
    fold = Fold()
    assert [fold.feed(r, i) for i, r in enumerate(records) if i != lost] == \
        [None] * (len(records) - 1)


def test_a_claim_fences_every_later_batch_of_an_older_epoch() -> None:
    # epochs are claim offsets: the owner that claimed at offset 4 writes epoch 4
    fold = Fold()
    assert fold.feed(journal.claim(9), 4) is None
    old = Batch(4, 7, [("accounts", b"a", {"v": 1})])
    assert fold.feed(journal.encode(old)[0], 5) == old
    assert fold.feed(journal.claim(1), 6) is None  # generations may restart: offsets do not
    assert fold.feed(journal.encode(Batch(4, 8, [("accounts", b"a", {"v": 2})]))[0], 7) is None
    assert fold.fenced == 1
    mine = Batch(6, 0, [("accounts", b"a", {"v": 3})])
    assert fold.feed(journal.encode(mine)[0], 8) == mine


def test_a_claim_between_chunks_drops_the_unfinished_batch() -> None:
    records = journal.encode(Batch(1, 0, [("t", b"k", {"x": "y" * 300})] * 3), limit=400)
    assert len(records) == 3
    fold = Fold()
    fold.feed(records[0], 0)
    fold.feed(journal.claim(2), 1)
    assert fold.feed(records[1], 2) is None and fold.feed(records[2], 3) is None
    assert fold.incomplete >= 1


def test_a_writer_reading_back_a_newer_claim_knows_it_is_fenced() -> None:
    mine = journal.encode(Batch(3, 1, [("t", b"k", {})]))[0]
    assert journal.fenced_by([(4, mine), (5, journal.mark())], 3) is None
    assert journal.fenced_by([(4, journal.claim(0)), (5, mine)], 3) == 4
    assert journal.fenced_by([(4, journal.encode(Batch(4, 0))[0]), (5, mine)], 3) == 4


def test_marks_change_nothing_and_foreign_bytes_are_refused() -> None:
    fold = Fold()
    assert fold.feed(journal.mark(), 0) is None and fold.feed(None, 1) is None
    with pytest.raises(JournalError):
        fold.feed(b"\x00\x01 not json", 2)
    with pytest.raises(JournalError):
        fold.feed(b'{"f": 99}', 3)


def test_a_sent_record_says_the_last_batch_needs_no_second_sending() -> None:
    fold = Fold()
    fold.feed(journal.claim(0), 0)
    assert fold.feed(journal.encode(Batch(0, 0, outputs=[("t", b"k", b"v", None, None)]))[0], 1)
    assert fold.sent == -1
    assert fold.feed(journal.sent(0, 0), 2) is None
    assert fold.sent == 0
    fold.feed(journal.claim(0), 3)
    assert fold.feed(journal.sent(0, 5), 4) is None and fold.sent == 0  # a fenced writer's

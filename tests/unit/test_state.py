"""StateTables without a broker: events all or nothing, batches visible before they are
flushed, and recovery that applies whole, unfenced batches only."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import faust
from faust.types import TP

from streams import journal
from streams.journal import Batch
from streams.state import Pending, StateTables

IN = TP("push.requests", 1)


def _state() -> StateTables:
    app = faust.App("state-test", broker="kafka://127.0.0.1:1", store="memory://")
    return StateTables(app, ("accounts", "messages"), 4, outbox=None,  # type: ignore[arg-type]
                       embedded=False)


def _events(state: StateTables, partition: int, records: list[bytes]) -> list[Any]:
    tp = TP(state.topic, partition)
    return [SimpleNamespace(message=SimpleNamespace(tp=tp, partition=partition, offset=i,
                                                    value=value))
            for i, value in enumerate(records)]


def test_values_include_writes_not_yet_flushed() -> None:
    # the deadline timer re-indexes a partition from values(): a message written after the
    # partition came back, and before the next flush, must be among them (or its due is lost)
    state = _state()
    state.recover(_events(state, 2, journal.encode(Batch(1, 0, [
        ("messages", b"stored", {"id": "stored"})]))))
    state.at(1).put("messages", b"new", {"id": "new"})
    state.flushing[3] = Pending(writes={("messages", b"leaving"): {"id": "leaving"}})
    state.at(3).delete("messages", b"gone")
    assert sorted(v["id"] for v in state.values("messages")) == ["leaving", "new", "stored"]


def test_an_event_that_fails_leaves_no_write_and_no_output() -> None:
    state = _state()
    state.begin(1)
    state.at(1).put("accounts", b"a", {"account_id": "a"})
    state.at(1).emit(("push.sends", b"a", b"x", None, None))
    assert state.at(1).get("accounts", b"a") == {"account_id": "a"}  # visible to itself
    state.discard()
    assert state.at(1).get("accounts", b"a") is None
    assert not state.dirty.get(1)


def test_a_completed_event_joins_its_partitions_batch_with_its_position() -> None:
    state = _state()
    state.begin(1)
    state.at(1).put("accounts", b"a", {"account_id": "a"})
    state.at(1).emit(("push.sends", b"a", b"x", None, None))
    state.done(IN, 41, 1000.0)
    batch = state.dirty[1]
    assert batch.writes == {("accounts", b"a"): {"account_id": "a"}}
    assert batch.outputs == [("push.sends", b"a", b"x", None, None)]
    assert batch.positions == {"push.requests": 42}
    assert state.seen(IN, 41) and not state.seen(IN, 42)
    assert state.position(IN) is None  # handled, not durable yet: nothing to commit


def test_recovery_applies_whole_batches_and_ignores_a_fenced_writer() -> None:
    state = _state()
    # offsets: 0 claim (epoch 0), 1 first, 2 claim (epoch 2), 3 stale, 4 newer, 5.. half
    first = Batch(0, 0, [("accounts", b"a", {"v": 1})], {"push.requests": 10}, [], 1.0)
    stale = Batch(0, 1, [("accounts", b"a", {"v": 99})], {"push.requests": 99}, [], 2.0)
    newer = Batch(2, 0, [("accounts", b"b", {"v": 2})], {"push.requests": 12}, [], 3.0)
    half = journal.encode(Batch(2, 1, [("accounts", b"c", {"x": "y" * 300})] * 4), limit=400)
    records = [journal.claim(7), *journal.encode(first), journal.claim(8),
               *journal.encode(stale), *journal.encode(newer), *half[:-1]]
    state.recover(_events(state, 1, records))
    assert state.get("accounts", b"a", 1) == {"v": 1}  # the write after the claim is fenced
    assert state.get("accounts", b"b", 1) == {"v": 2}
    assert state.get("accounts", b"c", 1) is None  # its last chunk never landed
    assert state.durable[1] == {"push.requests": 12}
    assert state.position(IN) == 12

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


def test_scan_reads_a_partitions_range_stored_and_not_yet_flushed_in_key_order() -> None:
    # the deadline timer loads a window from scan(): a timer written after the partition came
    # back, and before the next flush, must be in it (or its deadline is lost)
    state = _state()
    state.recover(_events(state, 2, journal.encode(Batch(1, 0, [
        ("messages", b"b-stored", {"id": "stored", "partition": 2}),
        ("messages", b"x-other", {"id": "other partition", "partition": 3}),
        ("messages", b"z-out", {"id": "out of range", "partition": 2})]))))
    state.at(2).put("messages", b"c-new", {"id": "new", "partition": 2})
    state.flushing[2] = Pending(writes={("messages", b"a-leaving"): {"id": "leaving"}})
    state.at(2).delete("messages", b"d-gone")
    got = [(k, v["id"]) for k, v in state.scan("messages", 2, b"a", b"y")]
    assert got == [(b"a-leaving", "leaving"), (b"b-stored", "stored"), (b"c-new", "new")]
    assert [k for k, _ in state.scan("messages", 2)] == [b"a-leaving", b"b-stored", b"c-new",
                                                         b"z-out"]


def _index(old: dict[str, Any] | None, new: dict[str, Any] | None) -> list[Any]:
    """A derived index of messages: accounts/<id> holds the ids of each account."""
    writes: list[Any] = []
    if old is not None and (new is None or new["account"] != old["account"]):
        writes.append(("accounts", old["account"].encode(), None))
    if new is not None:
        writes.append(("accounts", new["account"].encode(), {"id": new["id"], "partition": 1}))
    return writes


def test_a_derived_index_is_written_in_the_same_event_and_discarded_with_it() -> None:
    state = _state()
    state.derive("messages", _index)
    state.begin(1)
    state.at(1).put("messages", b"m", {"id": "m", "account": "a1"})
    state.discard()
    assert state.at(1).get("accounts", b"a1") is None
    state.begin(1)
    state.at(1).put("messages", b"m", {"id": "m", "account": "a1"})
    state.done(IN, 1, 1.0)
    state.begin(1)
    state.at(1).put("messages", b"m", {"id": "m", "account": "a2"})  # moved: old entry deleted
    state.done(IN, 2, 2.0)
    assert state.dirty[1].writes == {("messages", b"m"): {"id": "m", "account": "a2"},
                                     ("accounts", b"a1"): None,
                                     ("accounts", b"a2"): {"id": "m", "partition": 1}}
    state.begin(1)
    state.at(1).delete("messages", b"m")
    state.done(IN, 3, 3.0)
    assert state.at(1).get("accounts", b"a2") is None


def test_state_journaled_before_an_index_existed_is_indexed_once_on_recovery() -> None:
    import asyncio

    state = _state()
    state.recover(_events(state, 1, journal.encode(Batch(1, 0, [
        ("messages", b"m1", {"id": "m1", "account": "a1", "partition": 1}),
        ("messages", b"m2", {"id": "m2", "account": "a2", "partition": 1})]))))
    state.derive("messages", _index)
    asyncio.run(state.recovered({1}))
    writes = state.dirty[1].writes
    assert writes[("accounts", b"a1")] == {"id": "m1", "partition": 1}
    assert writes[("accounts", b"a2")] == {"id": "m2", "partition": 1}
    assert writes[("indexes", b"1")] == {"version": 1, "partition": 1}
    state.dirty.clear()
    state.recover(_events(state, 1, journal.encode(Batch(1, 1, [
        (t, k, v) for (t, k), v in writes.items()]))))
    asyncio.run(state.recovered({1}))
    assert not state.dirty.get(1)  # indexed already: nothing written again


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


def test_scan_reads_a_key_range_of_a_rocksdb_partition_in_order(tmp_path) -> None:
    app = faust.App("state-test-rocks", broker="kafka://127.0.0.1:1", store="rocksdb://",
                    datadir=str(tmp_path))
    state = StateTables(app, ("accounts", "messages"), 4, outbox=None,  # type: ignore[arg-type]
                        embedded=False)
    assert state.ordered
    state.recover(_events(state, 2, journal.encode(Batch(1, 0, [
        ("messages", b"b", {"id": "b"}), ("messages", b"a", {"id": "a"}),
        ("messages", b"z", {"id": "z"}), ("accounts", b"c", {"id": "account"})]))))
    state.recover(_events(state, 3, journal.encode(Batch(1, 0, [
        ("messages", b"c", {"id": "partition 3"})]))))
    state.at(2).put("messages", b"c", {"id": "c"})
    assert [k for k, _ in state.scan("messages", 2, b"a", b"y")] == [b"a", b"b", b"c"]
    assert [v["id"] for _, v in state.scan("messages", 3)] == ["partition 3"]
    assert [v["id"] for _, v in state.scan("accounts", 2)] == ["account"]


def test_a_handler_changing_what_it_read_in_place_then_failing_changes_nothing() -> None:
    state = _state()
    state.recover(_events(state, 1, journal.encode(Batch(1, 0, [
        ("accounts", b"a", {"account_id": "a", "waiting": ["m1"], "counts": {"APP": 1}})]))))
    state.begin(1)
    value = state.at(1).get("accounts", b"a")
    assert value is not None
    value["waiting"].append("m2")
    value["counts"]["APP"] += 1
    state.discard()  # the handler raised before writing
    assert state.at(1).get("accounts", b"a") == {"account_id": "a", "waiting": ["m1"],
                                                 "counts": {"APP": 1}}


def test_a_derived_index_sees_each_write_as_it_was_even_if_changed_in_place_after() -> None:
    # a handler writes a message, changes the same object in place, and writes it again: the
    # index must derive from the first write as written, not from the changed object
    state = _state()
    state.derive("messages", _index)
    state.begin(1)
    message = {"id": "m", "account": "a1"}
    state.at(1).put("messages", b"m", message)
    message["account"] = "a2"  # in place, after the write
    state.at(1).put("messages", b"m", message)
    state.done(IN, 1, 1.0)
    assert state.dirty[1].writes[("accounts", b"a1")] is None
    assert state.dirty[1].writes[("accounts", b"a2")] == {"id": "m", "partition": 1}


def test_a_batch_written_while_its_partition_was_claimed_again_is_discarded() -> None:
    # a flush takes the batch with epoch 5; while its journal records are written the
    # partition is revoked and claimed again (epoch 9): the batch lands after the new claim,
    # where recovery ignores it, so it must neither be applied here nor advance the positions
    import asyncio

    state = _state()
    state.epoch[1] = 5
    state.begin(1)
    state.at(1).put("accounts", b"a", {"account_id": "a"})
    state.at(1).emit(("push.sends", b"a", b"x", None, None))
    state.done(IN, 41, 1000.0)
    sent: list[Any] = []

    def write(batches: dict[int, Batch]) -> dict[int, tuple[int, int]]:
        assert batches[1].epoch == 5
        state.epoch[1] = 9  # the rebalance's claim, while the batch is on its way
        return {1: (20, 20)}

    state._write = write  # type: ignore[method-assign]
    state._read_back = lambda offsets: {}  # type: ignore[method-assign]
    state._send = sent.extend  # type: ignore[method-assign]
    state.outbox = SimpleNamespace(produce=lambda *a, **k: None, transactional=False)  # type: ignore[assignment]
    asyncio.run(state.flush())
    assert state.get("accounts", b"a", 1) is None
    assert sent == [] and state.position(IN) is None
    assert state.epoch[1] == 9  # still this worker's partition


def test_a_record_counts_only_from_its_inputs_seek_on() -> None:
    # a takeover: records are fetched before the input is sought to the journal's position
    # (the state not yet recovered), some still come after the seek, ahead of what it reads
    # again, and one is being handled when a seek comes. None of them may leave a write or a
    # position, or the records read again from the seek look handled (and are lost)
    import asyncio

    from streams.metrics import Counts
    from streams.state import handle_events

    state = _state()
    state.epoch[1] = 5

    def event(offset: int) -> Any:
        return SimpleNamespace(message=SimpleNamespace(
            tp=IN, partition=1, offset=offset, topic=IN.topic, timestamp=1000.0 + offset))

    sought_again: list[int] = []

    async def handle(ev: Any) -> None:
        offset = ev.message.offset
        state.at(1).put("accounts", b"%d" % offset, {"offset": offset})
        if offset == 4 and not sought_again:
            sought_again.append(offset)
            state.resume(IN, 2)  # sought again, while this record was being handled
            await asyncio.sleep(0)

    class Stream:
        async def events(self) -> Any:
            yield event(7)  # fetched before the seek: its input is not sought yet
            state.resume(IN, 0)
            for offset in (8, 9, 0, 1):  # 8, 9 fetched before the seek, ahead of it
                yield event(offset)
            for offset in (4, 6, 2, 3, 4, 5, 6):  # 4 in flight at the seek to 2; 6 was
                yield event(offset)  # fetched before that seek, and comes ahead of it

    asyncio.run(handle_events(Stream(), state, None, handle,  # type: ignore[arg-type]
                              lambda ev, reason: None, Counts("test")))
    handled = sorted(int(k) for (table, k) in state.dirty[1].writes)
    assert handled == [0, 1, 2, 3, 4, 5, 6]
    assert state.dirty[1].positions == {IN.topic: 7}


def test_where_offsets_skip_after_a_seek_its_first_fetched_record_is_taken() -> None:
    # the record at the sought offset may be gone (compaction) or a transaction marker: the
    # seek's records then begin at the first offset the consumer fetched after it
    import asyncio

    from streams.metrics import Counts
    from streams.state import handle_events

    state = _state()
    state.epoch[1] = 5

    async def handle(ev: Any) -> None:
        state.at(1).put("accounts", b"%d" % ev.message.offset, {})

    class Stream:
        async def events(self) -> Any:
            state.resume(IN, 3)
            state.fetched(IN, 8)  # returned before the seek landed: not the seek's
            state.sought_landed(IN)
            state.fetched(IN, 5)  # the first fetch after it: offsets 3 and 4 are gone
            state.fetched(IN, 7)
            for offset in (8, 5, 6):  # 8 was fetched before the seek, and comes first
                yield SimpleNamespace(message=SimpleNamespace(
                    tp=IN, partition=1, offset=offset, topic=IN.topic, timestamp=1.0))

    asyncio.run(handle_events(Stream(), state, None, handle,  # type: ignore[arg-type]
                              lambda ev, reason: None, Counts("test")))
    assert sorted(int(k) for (_, k) in state.dirty[1].writes) == [5, 6]
    assert state.dirty[1].positions == {IN.topic: 7}

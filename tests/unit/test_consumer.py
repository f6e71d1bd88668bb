"""The worker's Faust consumer: it reads and commits where the journal says, and the Faust
behaviour it relies on is still there (these fail if an upgraded Faust changes it)."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Iterator
from types import SimpleNamespace

import faust
import pytest
from faust.tables.recovery import Recovery
from faust.transport.consumer import Consumer as FaustConsumer
from faust.types import TP

from streams.app import ReadOffsets, create_app
from streams.settings import Settings

TOPIC = "t-push.requests"
TP0 = TP(TOPIC, 0)


@pytest.fixture
def app(tmp_path) -> Iterator[faust.App]:
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    app = create_app(Settings(topic_prefix="t-", data_dir=str(tmp_path)), "127.0.0.1:1")
    yield app
    asyncio.set_event_loop(None)
    loop.close()


def _journal(app: faust.App, positions: dict[TP, int]) -> None:
    app.journal_state = SimpleNamespace(  # type: ignore[attr-defined]
        topic="t-journal", position=positions.get)


def test_the_commit_is_the_journals_position_not_fausts_acknowledgements(app) -> None:
    consumer = app.consumer
    _journal(app, {TP0: 10})
    consumer._acked[TP0].extend([5, 8, 12, 13])  # 9 was never acknowledged: irrelevant now
    assert consumer._new_offset(TP0) == 10
    assert list(consumer._acked[TP0]) == [12, 13]  # what is behind the position is dropped
    consumer._committed_offset[TP0] = 10
    assert consumer._new_offset(TP0) is None  # nothing new to commit


def test_nothing_is_committed_for_a_partition_the_journal_has_no_position_for(app) -> None:
    consumer = app.consumer
    _journal(app, {})
    consumer._acked[TP0].extend([0, 1, 2])
    assert consumer._new_offset(TP0) is None


def test_an_app_without_the_journal_commits_as_faust_does(app) -> None:
    consumer = app.consumer
    consumer._acked[TP0].extend([0, 1, 2, 4])
    assert consumer._new_offset(TP0) == 3


def test_a_read_offset_never_makes_faust_drop_a_record_read_again() -> None:
    offsets = ReadOffsets(lambda: None)
    offsets[TP0] = 120
    # Faust's fetch loop drops a record below offsets[tp]: after a seek back to 100 the rest of
    # an older batch raised it to 120, and records 100..119 would be dropped unhandled
    assert offsets[TP0] is None
    assert offsets.get(TP0) == 120


def test_faust_still_reads_the_read_offset_by_indexing() -> None:
    source = inspect.getsource(FaustConsumer._drain_messages)
    assert "self._read_offset.__getitem__" in source
    assert "r_offset is None or offset >= r_offset" in source


def test_faust_still_flushes_the_producer_before_it_commits() -> None:
    source = inspect.getsource(FaustConsumer._commit_offsets)
    assert source.index("self.app.producer.flush()") < source.index("self._commit(")
    assert "self._new_offset(tp)" in inspect.getsource(
        FaustConsumer._filter_committable_offsets)


def test_faust_still_seeks_after_the_tables_recovered() -> None:
    # the journal's positions are known once the table's on_recovery_completed ran; Faust
    # seeks the streams (seek_to_committed, ours) only after that
    source = inspect.getsource(Recovery.on_recovery_completed)
    assert source.index("table.on_recovery_completed") < source.index("perform_seek")
    seek = inspect.getsource(FaustConsumer.perform_seek)
    assert "self.seek_to_committed()" in seek


def test_faust_still_takes_each_fetch_from_wait_next_records() -> None:
    # the journal learns where an input's first fetch after its seek begins from the records
    # _wait_next_records returns (ours wraps it); getmany must still fetch through it
    source = inspect.getsource(FaustConsumer.getmany)
    assert "await self._wait_next_records(timeout)" in source


def test_the_latest_fetch_of_a_partition_is_still_known() -> None:
    # the deadline horizon reads when each input's latest answered fetch was sent: ours wraps
    # the fetcher's _proc_fetch_request (sends one fetch, takes its answer, stamps each
    # partition it took), the fetcher the consumer's start() made, started by Faust's thread
    from aiokafka.consumer.consumer import AIOKafkaConsumer
    from aiokafka.consumer.fetcher import Fetcher
    from faust.transport.drivers import aiokafka as driver

    params = list(inspect.signature(Fetcher._proc_fetch_request).parameters)
    assert params == ["self", "assignment", "node_id", "request"]
    proc = inspect.getsource(Fetcher._proc_fetch_request)
    assert "await self._client.send(node_id, request)" in proc
    assert "tp_state.timestamp = now_ms" in proc
    assert "self._proc_fetch_request(" in inspect.getsource(Fetcher._fetch_requests_routine)
    assert "self._fetcher = Fetcher(" in inspect.getsource(AIOKafkaConsumer.start)
    assert "await self._consumer.start()" in inspect.getsource(
        driver.AIOKafkaConsumerThread.on_start)


def test_faust_still_asks_for_the_changelogs_ends_before_recovering_them() -> None:
    source = inspect.getsource(Recovery._build_highwaters)
    assert "consumer.highwaters(*tps)" in source
    assert faust.__version__ == "0.15.3"  # the version all of the above was read from


def test_a_batch_lands_in_fausts_memory_store_as_its_own_changelog_apply_would(app) -> None:
    # memory_store_apply writes the store's dict and each key's partition directly; Faust's
    # memory store must still keep both there, and drop other partitions' keys by the latter
    from faust.stores.memory import Store

    from streams.app import memory_store_apply

    store = Store("memory://", app, table=SimpleNamespace(name="t"))  # type: ignore[arg-type]
    assert memory_store_apply(store, 1, [(b"a", {"v": 1}), (b"b", {"v": 2})])
    assert memory_store_apply(store, 2, [(b"c", {"v": 3}), (b"a", None)])
    assert store.data == {b"b": {"v": 2}, b"c": {"v": 3}}
    asyncio.get_event_loop().run_until_complete(
        store.on_recovery_completed({TP("t", 2)}, set()))
    assert store.data == {b"c": {"v": 3}}  # partition 1 is not assigned: its key dropped
    assert not memory_store_apply(SimpleNamespace(), 0, [(b"a", {})])  # not a memory store


def test_aiokafka_still_takes_the_isolation_level_set_before_start() -> None:
    # transactional workers set read_committed on the consumer Faust built, before it starts
    import aiokafka

    assert "isolation_level=self._isolation_level" in inspect.getsource(
        aiokafka.AIOKafkaConsumer.start)
    from faust.transport.drivers import aiokafka as driver

    assert 'isolation_level: str = "read_uncommitted"' in inspect.getsource(
        driver.AIOKafkaConsumerThread._create_worker_consumer)


def test_the_readiness_probe_never_builds_the_consumer_in_its_own_thread(app) -> None:
    # the probe runs in the metrics server's thread; a consumer built there binds to that
    # thread's loop and the worker's start fails ("attached to a different loop") - CI saw it
    import threading

    from streams.cli.worker import ready
    from streams.metrics import _safely

    answers: list[bool] = []
    probe = threading.Thread(target=lambda: answers.append(_safely(lambda: ready(app))))
    probe.start()
    probe.join()
    assert answers == [False] and app._consumer is None
    assert app.consumer._thread.parent_loop is asyncio.get_event_loop()  # the worker's loop


def test_a_worker_flushes_its_batch_at_the_configured_interval(tmp_path) -> None:
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        for interval in (0.25, 1.0):
            app = create_app(Settings(topic_prefix="t-", data_dir=str(tmp_path),
                                      flush_interval=interval), "127.0.0.1:1")
            assert app.conf.broker_commit_interval == interval  # the timer flushing batches
    finally:
        asyncio.set_event_loop(None)
        loop.close()


def test_on_the_embedded_broker_a_stopping_worker_is_evicted_not_left() -> None:
    # aiokafka leaves its group through _maybe_leave_group, on stop and after an idle poll
    # interval; on the embedded broker it only forgets its generation (the broker evicts it)
    from aiokafka.consumer.group_coordinator import GroupCoordinator

    from streams.app import evicted_not_left

    assert inspect.iscoroutinefunction(GroupCoordinator._maybe_leave_group)
    assert "_maybe_leave_group" in inspect.getsource(GroupCoordinator.close)
    assert "LeaveGroupRequest" in inspect.getsource(GroupCoordinator._maybe_leave_group)
    done: list[str] = []
    coordinator = SimpleNamespace(reset_generation=lambda: done.append("reset"),
                                  _send_req=lambda request: done.append("sent"))
    evicted_not_left(coordinator)
    asyncio.run(coordinator._maybe_leave_group())
    assert done == ["reset"]  # no LeaveGroup request

"""Transactional workers (PUSHCASCADE_TRANSACTIONS, on by default with broker_profile=kafka):
each flush's journal records, outputs and `sent` records are one Kafka transaction, and a
second process with the same transactional.id fences the first, which stops.

The embedded broker commits and fences transactions but shows aborted records to
read_committed readers (INFRA.md), so what is checked here is that the loop runs whole under
transactions, that they are really there (each commit's marker takes an offset), and the
fencing; that an aborted batch stays hidden needs a Kafka cluster."""

from __future__ import annotations

import time
from collections import defaultdict

from streams.harness import Tap, producer_for, start_worker, wait_idle, worker_env
from streams.harness.taps import journal_topic
from streams.kafka import consumer
from tests.helpers import register
from tests.integration.test_worker_faults import ACCOUNTS, assert_sent_once, push_round


def offsets_of(settings, topic: str, timeout: float = 30.0) -> dict[int, list[int]]:
    """The offsets of the data records of every partition of a topic (read_uncommitted: on
    this broker the isolation level changes nothing; control records are never returned)."""
    reader = consumer(settings.connections.kafka_bootstrap_servers, f"offsets-{time.time_ns()}",
                      **{"isolation.level": "read_uncommitted", "enable.partition.eof": True})
    from confluent_kafka import OFFSET_BEGINNING, TopicPartition

    meta = reader.list_topics(topic, timeout=timeout).topics[topic]
    reader.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in meta.partitions])
    found: dict[int, list[int]] = defaultdict(list)
    ended: set[int] = set()
    deadline = time.monotonic() + timeout
    try:
        while len(ended) < len(meta.partitions) and time.monotonic() < deadline:
            for msg in reader.consume(500, 0.2):
                if msg.error() is None:
                    found[msg.partition()].append(msg.offset())
                elif msg.error().code() == msg.error()._PARTITION_EOF:
                    ended.add(msg.partition())
    finally:
        reader.close()
    return found


def gaps(offsets: dict[int, list[int]]) -> int:
    """Offsets inside each partition's span that hold no data record (transaction markers)."""
    return sum(o[-1] - o[0] + 1 - len(o) for o in offsets.values() if o)


def transactional(settings, transactional_id: str):
    """A transactional worker's environment, and a producer that registered the accounts."""
    env = worker_env(settings, new_account_pushes=2, read_deadline_high=3600,
                     transactions="true",
                     transactional_id=f"{settings.tuning.topic_prefix}{transactional_id}")
    producer = producer_for(settings)
    for a in ACCOUNTS:
        register(producer, a, devices=0)
    return env, producer


def test_a_transactional_worker_commits_each_flush_whole_and_sends_once(settings, tmp_path):
    env, producer = transactional(settings, "w")
    rounds: list[list[str]] = []
    worker = start_worker(env, tmp_path, "first", loglevel="info")
    try:
        for j in range(2):
            rounds.append(push_round(producer, j))
            wait_idle(settings, workers=[worker])
    finally:
        worker.stop()
    # a restart recovers the journal through read_committed and sends nothing again
    worker = start_worker(env, tmp_path, "again", loglevel="info")
    try:
        rounds.append(push_round(producer, 2))
        wait_idle(settings, workers=[worker])
    finally:
        worker.stop()
    sends = Tap(settings, "push.sends")
    sends.drain()
    assert_sent_once(sends, rounds, fanout_rounds=2)
    send_offsets = offsets_of(settings, settings.topic("push.sends"))
    journal_offsets = offsets_of(settings, journal_topic(settings))
    # every flush and claim ended in a commit whose marker took an offset after its records
    print(f"push.sends: {sum(map(len, send_offsets.values()))} records, "
          f"{gaps(send_offsets)} markers; journal: {sum(map(len, journal_offsets.values()))} "
          f"records, {gaps(journal_offsets)} markers")
    assert gaps(send_offsets) > 0
    assert gaps(journal_offsets) > 0


def test_a_second_process_with_the_same_transactional_id_fences_the_first(settings, tmp_path):
    env, producer = transactional(settings, "same")
    rounds: list[list[str]] = []
    first = start_worker(env, tmp_path, "first", loglevel="info")
    second = None
    try:
        rounds.append(push_round(producer, 0))
        wait_idle(settings, workers=[first])
        # the same worker started again elsewhere while the first still runs
        second = start_worker(env, tmp_path, "second", loglevel="info")
        deadline = time.monotonic() + 60
        while first.popen.poll() is None and time.monotonic() < deadline:
            time.sleep(0.5)
        assert first.popen.returncode == 70, first.tail(30)
        assert "another process runs as this worker" in first.tail(30)
        rounds.append(push_round(producer, 1))
        rounds.append(push_round(producer, 2))
        wait_idle(settings, timeout=90, workers=[second])
    finally:
        first.kill()
        if second is not None:
            second.stop()
    sends = Tap(settings, "push.sends")
    sends.drain()
    assert_sent_once(sends, rounds, fanout_rounds=2)

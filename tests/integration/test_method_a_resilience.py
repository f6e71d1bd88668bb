"""Method A under failure: SIGKILL with deadlines pending, rebalances, foreign partitioners."""

from __future__ import annotations

import time
import zlib
from collections import Counter

from connectors.producer import RecordProducer
from schemas import key_partition
from streams.harness import Tap, changelog_tap, start_worker, worker_env
from tests.helpers import register, request

ACCOUNTS = [f"acct-{i}" for i in range(12)]


def prepare(settings, accounts=ACCOUNTS):
    """Register the accounts; return a producer."""
    producer = RecordProducer(settings.connections.kafka_bootstrap_servers,
                              topic_prefix=settings.tuning.topic_prefix)
    for account in accounts:
        register(producer, account)
    return producer


def wait_registered(settings, accounts):
    state = changelog_tap(settings, "accounts")
    state.wait_for(lambda rs: {r["account_id"] for r in rs if r and r["devices"]
                               and r["addresses"]} >= set(accounts), timeout=60)
    state.close()


def assert_each_escalated_once(escalations: Tap, messages: list[str], timeout: float) -> None:
    escalations.wait_for(lambda rs: {r["message_id"] for r in rs} >= set(messages),
                         timeout=timeout)
    escalations.poll(3.0)  # anything extra would show up now
    counts = Counter(r["message_id"] for r in escalations.records)
    assert {m: counts[m] for m in messages} == dict.fromkeys(messages, 1)
    assert all(r["to_channel"] == "WECHAT" for r in escalations.records)


def test_sigkill_with_pending_deadlines_then_restart_fires_each_once(settings, tmp_path):
    deadline = 8.0
    env = worker_env(settings, new_account_pushes=0, read_deadline_high=deadline)
    producer = prepare(settings)
    first = start_worker(env, tmp_path, "first", loglevel="info")
    try:
        wait_registered(settings, ACCOUNTS)
        messages = [f"{a}-m{j}" for a in ACCOUNTS for j in range(2)]
        for m in messages:
            producer.send("push.requests", request(m, m.rsplit("-", 1)[0]))
        producer.flush()
        sends = Tap(settings, "push.sends")
        sends.wait_for(lambda rs: {r["message_id"] for r in rs} >= set(messages))
        time.sleep(1.5)  # let the worker commit; the kill must find deadlines pending
        first.kill()
        escalations = Tap(settings, "push.escalations")
        escalations.poll(1.0)
        assert escalations.records == []
        second = start_worker(env, tmp_path, "second", loglevel="info")
        try:
            assert_each_escalated_once(escalations, messages, timeout=deadline + 45)
            for r in escalations.records:
                assert r["fired_at"] >= r["deadline_at"]
            esc_sends = Counter(r["send_id"] for r in sends.wait_for(
                lambda rs: sum(r["reason"] == "ESCALATION" for r in rs) >= len(messages))
                if r["reason"] == "ESCALATION")
            assert len(esc_sends) == len(messages)
        finally:
            second.stop()
            print("SECOND WORKER LOG\n", second.logs()[-6000:])
    finally:
        first.kill()


def test_two_workers_share_partitions_across_a_rebalance(settings, tmp_path):
    deadline = 10.0
    env = worker_env(settings, new_account_pushes=0, read_deadline_high=deadline)
    producer = prepare(settings)
    one = start_worker(env, tmp_path, "one", loglevel="info")
    two = None
    try:
        wait_registered(settings, ACCOUNTS)
        before = [f"{a}-b" for a in ACCOUNTS]
        for m in before:
            producer.send("push.requests", request(m, m.rsplit("-", 1)[0]))
        producer.flush()
        sends = Tap(settings, "push.sends")
        sends.wait_for(lambda rs: {r["message_id"] for r in rs} >= set(before))
        # joins: the partitions are split between the two
        two = start_worker(env, tmp_path, "two", loglevel="info")
        time.sleep(8)
        after = [f"{a}-a" for a in ACCOUNTS]
        for m in after:
            producer.send("push.requests", request(m, m.rsplit("-", 1)[0]))
        producer.flush()
        sends.wait_for(lambda rs: {r["message_id"] for r in rs} >= set(after), timeout=60)
        escalations = Tap(settings, "push.escalations")
        assert_each_escalated_once(escalations, before + after, timeout=deadline + 60)
        assert "partitions [" in one.logs() and "partitions [" in two.logs()
        owned_by_two = two.logs().rsplit("deadline index rebuilt", 1)[-1]
        assert "partitions []" not in owned_by_two  # the second worker really took partitions
        assert Counter(r["message_id"] for r in sends.records if r["reason"] == "PRIMARY") == \
            dict.fromkeys(before + after, 1)
    finally:
        one.stop()
        if two:
            two.stop()


def test_state_does_not_depend_on_the_producers_partitioner(settings, tmp_path):
    from confluent_kafka import Producer

    from schemas import Codec

    n = 4
    partitions = settings.tuning.partitions
    accounts = [a for a in (f"pt-{i}" for i in range(200))
                if zlib.crc32(a.encode()) % partitions != key_partition(a, partitions)][:6]
    assert len(accounts) == 6
    env = worker_env(settings, new_account_pushes=n, read_deadline_high=3600)
    producer = prepare(settings, accounts)  # registrations with murmur2
    crc = Producer({"bootstrap.servers": settings.connections.kafka_bootstrap_servers,
                    "partitioner": "consistent_random"})
    codec = Codec()
    worker = start_worker(env, tmp_path, loglevel="info")
    try:
        wait_registered(settings, accounts)
        messages = []
        for account in accounts:
            for j in range(n + 1):
                m = f"{account}-m{j}"
                messages.append(m)
                value = codec.encode("PushRequest", request(m, account))
                target = producer if j % 2 else None  # alternate the two partitioners
                if target:
                    target.send("push.requests", request(m, account))
                else:
                    crc.produce(settings.topic("push.requests"), key=account.encode(), value=value)
        crc.flush()
        producer.flush()
        sends = Tap(settings, "push.sends")
        sends.wait_for(lambda rs: {r["message_id"] for r in rs} >= set(messages), timeout=60)
        sends.poll(1.0)
        for account in accounts:
            reasons = Counter(r["reason"] for r in sends.records
                              if r["account_id"] == account and r["device_id"] is None)
            assert reasons == {"FANOUT": 3 * n, "PRIMARY": 1}, (account, reasons)
        lifecycle = Tap(settings, "account.lifecycle")
        lifecycle.wait_for(lambda rs: {r["account_id"] for r in rs} >= set(accounts))
        assert all(r["pushes"] == n for r in lifecycle.records)
    finally:
        worker.stop()

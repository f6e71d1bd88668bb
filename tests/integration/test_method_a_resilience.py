"""Method A under failure: SIGKILL with deadlines pending, rebalances, foreign partitioners."""

from __future__ import annotations

import itertools
import time
import zlib
from collections import Counter

from connectors.producer import RecordProducer
from streams.harness import (
    Process,
    Tap,
    free_port,
    wait_accounts,
    wait_idle,
    worker_env,
    worker_events,
)
from streams.kafka import key_partition
from tests.helpers import register, request

ACCOUNTS = [f"acct-{i}" for i in range(12)]


def prepare(settings, accounts=ACCOUNTS) -> RecordProducer:
    """Register the accounts; return a producer."""
    producer = RecordProducer(settings.connections.kafka_bootstrap_servers, settings=settings)
    for account in accounts:
        register(producer, account)
    return producer


def push(producer: RecordProducer, messages: list[str]) -> None:
    """One HIGH request per message id `<account>-<suffix>`."""
    for m in messages:
        producer.send("push.requests", request(m, m.rsplit("-", 1)[0]))
    producer.flush()


def primary_sends(sends: Tap) -> Counter[str]:
    """How often each message was sent on its primary channel."""
    return Counter(r["message_id"] for r in sends.records if r["reason"] == "PRIMARY")


def assert_each_escalated_once(settings, escalations: Tap, messages: list[str],
                               workers: list[Process], timeout: float) -> None:
    escalations.wait_for(lambda rs: {r["message_id"] for r in rs} >= set(messages),
                         timeout=timeout, workers=workers)
    wait_idle(settings, workers=workers)
    escalations.drain()
    assert Counter(r["message_id"] for r in escalations.records) == dict.fromkeys(messages, 1)
    assert {r["to_channel"] for r in escalations.records} == {"WECHAT"}
    assert all(r["fired_at"] >= r["deadline_at"] for r in escalations.records)


def test_sigkill_with_pending_deadlines_then_restart_fires_each_once(settings, workers, taps):
    deadline = 20.0
    env = worker_env(settings, new_account_pushes=0, read_deadline_high=deadline)
    producer = prepare(settings)
    first = workers(env, "first")
    wait_accounts(settings, ACCOUNTS, workers=[first])
    messages = [f"{a}-m{j}" for a in ACCOUNTS for j in range(2)]
    push(producer, messages)
    wait_idle(settings, workers=[first])  # committed: the restart does not read them again
    sends, escalations = taps("push.sends"), taps("push.escalations")
    sends.drain()
    assert primary_sends(sends) == dict.fromkeys(messages, 1)
    first_due = min(r["sent_at"] for r in sends.records) + deadline * 1000
    assert time.time() * 1000 < first_due, "too slow: a deadline came due before the kill"
    first.kill()
    assert escalations.drain() == []
    second = workers(env, "second")
    assert_each_escalated_once(settings, escalations, messages, [second], deadline + 60)
    sends.drain()
    assert primary_sends(sends) == dict.fromkeys(messages, 1)
    assert Counter(r["message_id"] for r in sends.records if r["reason"] == "ESCALATION"
                   and r["device_id"] is None) == dict.fromkeys(messages, 1)


def one_account_per_partition(partitions: int) -> list[str]:
    """Account ids probe-N, the first one that each partition owns."""
    owners: dict[int, str] = {}
    for account in (f"probe-{i}" for i in itertools.count()):
        owners.setdefault(key_partition(account, partitions), account)
        if len(owners) == partitions:
            return [owners[p] for p in range(partitions)]
    raise AssertionError("unreachable")


def partition_owners(settings, producer: RecordProducer, results: Tap,
                     ports: dict[str, int], round_: int) -> dict[str, float] | None:
    """Send one request per partition for an account nobody registered; how many of them each
    worker answered (UNREACHABLE, by its own counter), or None while a worker is not serving."""
    accounts = one_account_per_partition(settings.tuning.partitions)

    def unreachable() -> dict[str, float] | None:
        try:
            return {w: worker_events(port).get(("router", "unreachable"), 0.0)
                    for w, port in ports.items()}
        except OSError:
            return None

    before = unreachable()
    ids = [f"{a}-r{round_}" for a in accounts]
    push(producer, ids)
    results.wait_for(lambda rs: {r["message_id"] for r in rs} >= set(ids), timeout=60)
    after = unreachable()
    if before is None or after is None:
        return None
    return {w: after[w] - before[w] for w in ports}


def test_two_workers_share_partitions_across_a_rebalance(settings, workers, taps):
    deadline = 10.0
    ports = {"one": free_port(), "two": free_port()}
    envs = {w: worker_env(settings, new_account_pushes=0, read_deadline_high=deadline,
                          metrics_port=port) for w, port in ports.items()}
    producer = prepare(settings)
    one = workers(envs["one"], "one")
    wait_accounts(settings, ACCOUNTS, workers=[one])
    before = [f"{a}-b" for a in ACCOUNTS]
    push(producer, before)
    sends, results = taps("push.sends"), taps("push.results")
    sends.wait_for(lambda rs: {r["message_id"] for r in rs} >= set(before), workers=[one])
    two = workers(envs["two"], "two")  # joins: the partitions are split between the two
    # until the rebalance has settled: every partition answered once, by one worker or the other
    end = time.monotonic() + 120
    for round_ in itertools.count():
        handled = partition_owners(settings, producer, results, ports, round_)
        if handled and sum(handled.values()) == settings.tuning.partitions and all(
                handled.values()):
            break
        assert time.monotonic() < end, f"the partitions were not shared: {handled}"
        one.check()
        two.check()
    after = [f"{a}-a" for a in ACCOUNTS]
    push(producer, after)
    sends.wait_for(lambda rs: {r["message_id"] for r in rs} >= set(after), timeout=60,
                   workers=[one, two])
    escalations = taps("push.escalations")
    assert_each_escalated_once(settings, escalations, before + after, [one, two], deadline + 60)
    sends.drain()
    assert primary_sends(sends) == dict.fromkeys(before + after, 1)


def test_state_does_not_depend_on_the_producers_partitioner(settings, workers, taps):
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
    worker = workers(env)
    wait_accounts(settings, accounts, workers=[worker])
    for account in accounts:
        for j in range(n + 1):
            req = request(f"{account}-m{j}", account)
            if j % 2:  # alternate the two partitioners
                producer.send("push.requests", req)
            else:
                crc.produce(settings.topic("push.requests"), key=account.encode(),
                            value=codec.encode("PushRequest", req))
    crc.flush()
    producer.flush()
    wait_idle(settings, workers=[worker])
    sends, lifecycle = taps("push.sends"), taps("account.lifecycle")
    sends.drain()
    lifecycle.drain()
    for account in accounts:
        reasons = Counter(r["reason"] for r in sends.records
                          if r["account_id"] == account and r["device_id"] is None)
        assert reasons == {"FANOUT": 3 * n, "PRIMARY": 1}, (account, reasons)
    assert sorted((r["account_id"], r["lifecycle"], r["pushes"]) for r in lifecycle.records) == [
        (a, "ESTABLISHED", n) for a in sorted(accounts)]

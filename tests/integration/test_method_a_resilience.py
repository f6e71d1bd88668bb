"""Method A under failure: SIGKILL with deadlines pending, and a rebalance.

A producer's partitioner: tests/integration/test_router_core.py."""

from __future__ import annotations

import itertools
import time
from collections import Counter

import pytest

from connectors.producer import RecordProducer
from schemas import key_partition
from streams.harness import (
    Process,
    Tap,
    free_port,
    producer_for,
    wait_accounts,
    wait_idle,
    worker_env,
    worker_events,
)
from tests.helpers import register, request

ACCOUNTS = [f"acct-{i}" for i in range(12)]


def prepare(settings, accounts=ACCOUNTS) -> RecordProducer:
    """Register the accounts; return a producer."""
    producer = producer_for(settings)
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


@pytest.mark.parametrize("store", ["memory://", "rocksdb://"])  # deployments use RocksDB
def test_sigkill_with_pending_deadlines_then_restart_fires_each_once(settings, workers, taps,
                                                                    store):
    deadline = 20.0
    env = worker_env(settings, new_account_pushes=0, read_deadline_high=deadline, store=store)
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
    worker answered (UNREACHABLE, by its own counter), or None while a worker is not serving
    or the round was caught mid-rebalance (its results must still come: see the test)."""
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
    try:
        results.wait_for(lambda rs: {r["message_id"] for r in rs} >= set(ids), timeout=30)
    except AssertionError:  # a round caught mid-rebalance: measure again with the next one
        return None
    after = unreachable()
    if before is None or after is None:
        return None
    return {w: after[w] - before[w] for w in ports}


def test_two_workers_share_partitions_across_a_rebalance(settings, workers, taps):
    deadline = 60.0  # the `before` deadlines are still pending when the partitions move
    ports = {"one": free_port(), "two": free_port()}
    envs = {w: worker_env(settings, new_account_pushes=0, read_deadline_high=deadline,
                          metrics_port=port, reach_grace=0.5) for w, port in ports.items()}
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
    probes = {f"{a}-r{r}" for a in one_account_per_partition(settings.tuning.partitions)
              for r in range(round_ + 1)}  # a round caught mid-rebalance is answered later
    results.wait_for(lambda rs: {r["message_id"] for r in rs} >= probes, timeout=60,
                     workers=[one, two])
    shared_at = time.time() * 1000
    first_due = min(r["sent_at"] for r in sends.records if r["message_id"] in before) + \
        deadline * 1000
    assert shared_at < first_due, "too slow: a deadline came due before the partitions moved"
    after = [f"{a}-a" for a in ACCOUNTS]
    push(producer, after)
    sends.wait_for(lambda rs: {r["message_id"] for r in rs} >= set(after), timeout=60,
                   workers=[one, two])
    escalations = taps("push.escalations")
    assert_each_escalated_once(settings, escalations, before + after, [one, two], deadline + 60)
    assert all(r["fired_at"] > shared_at for r in escalations.records)  # pending when they moved
    sends.drain()
    assert primary_sends(sends) == dict.fromkeys(before + after, 1)

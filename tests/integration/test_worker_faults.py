"""The worker's promises when it is broken on purpose: a crash inside a batch's flush, a worker
frozen past its session, a restart after deadlines passed with the reads still queued."""

from __future__ import annotations

import signal
import time
from collections import Counter, defaultdict
from typing import Any

import pytest

from streams.harness import (
    Tap,
    producer_for,
    start_worker,
    wait_idle,
    worker_env,
)
from tests.helpers import read_ack, register, request

ACCOUNTS = [f"f{i}" for i in range(24)]


def expected_reasons(sends: Tap, messages: list[str]) -> dict[str, Counter[str]]:
    """The reasons of each message's account-level sends, one per distinct send_id."""
    by_id: dict[str, dict[str, str]] = defaultdict(dict)
    for r in sends.records:
        if r["message_id"] in messages and r["device_id"] is None:
            by_id[r["message_id"]][r["send_id"]] = r["reason"]
    return {m: Counter(ids.values()) for m, ids in by_id.items()}


def assert_sent_once(sends: Tap, rounds: list[list[str]], fanout_rounds: int) -> None:
    """Every message of every round has its sends, each send_id one send of the right reason:
    WECHAT and SMS while the account is new, then one PRIMARY (no state lost or reverted)."""
    messages = [m for r in rounds for m in r]
    got = expected_reasons(sends, messages)
    lost = [m for m in messages if m not in got]
    assert lost == [], f"{len(lost)} requests without a send: {lost[:10]}"
    for i, round_ in enumerate(rounds):
        want = Counter({"FANOUT": 2}) if i < fanout_rounds else Counter({"PRIMARY": 1})
        wrong = {m: got[m] for m in round_ if got[m] != want}
        assert wrong == {}, f"round {i + 1}: sends other than {dict(want)}: {wrong}"


def push_round(producer, j: int, accounts=ACCOUNTS) -> list[str]:
    """One request per account; its message ids."""
    ids = [f"{a}-r{j}" for a in accounts]
    for m, a in zip(ids, accounts, strict=True):
        producer.send("push.requests", request(m, a, "HIGH"))
    producer.flush()
    return ids


def established(settings, deadline: float) -> tuple[dict[str, str], Any, Tap, Tap]:
    """A worker's environment (HIGH read deadline `deadline`, accounts established from their
    first push), a producer, the ACCOUNTS registered (WeChat and SMS, no device), and taps on
    push.sends and push.escalations."""
    env = worker_env(settings, new_account_pushes=0, read_deadline_high=deadline)
    producer = producer_for(settings)
    for a in ACCOUNTS:
        register(producer, a, devices=0)
    return env, producer, Tap(settings, "push.sends"), Tap(settings, "push.escalations")


@pytest.mark.parametrize("transactions", ["false", "true"])
def test_a_crash_between_a_batch_journal_and_its_outputs_loses_and_repeats_nothing(
        settings, tmp_path, transactions):
    # with transactions the crash comes inside the flush's open transaction; the restarted
    # worker (same transactional.id) aborts it when it starts
    env = worker_env(settings, new_account_pushes=2, read_deadline_high=3600,
                     transactions=transactions,
                     transactional_id=f"{settings.tuning.topic_prefix}crash")
    producer = producer_for(settings)
    for a in ACCOUNTS:
        register(producer, a, devices=0)
    sends = Tap(settings, "push.sends")
    rounds: list[list[str]] = []
    crashing = start_worker({**env, "PUSHCASCADE_CRASH_AT": "journal:3"}, tmp_path, "crash",
                            loglevel="info")
    try:
        for j in range(3):  # the third flush with a batch dies after its journal landed
            rounds.append(push_round(producer, j))
            deadline = time.monotonic() + 60
            while crashing.popen.poll() is None and time.monotonic() < deadline:
                sends.poll(0.3)
                if {r["message_id"] for r in sends.records} >= set(rounds[-1]):
                    break
        crashing.popen.wait(60)
        assert crashing.popen.returncode == 86, crashing.tail(30)
    finally:
        crashing.kill()
    worker = start_worker(env, tmp_path, "after", loglevel="info")
    try:
        rounds.append(push_round(producer, 3))
        wait_idle(settings, workers=[worker])
        sends.drain()
    finally:
        worker.stop()
    assert_sent_once(sends, rounds, fanout_rounds=2)


def test_a_batch_cut_between_its_chunks_is_never_half_applied(settings, tmp_path):
    # batches of a few kB, written in 1 kB chunks; the worker dies after a first chunk landed
    env = worker_env(settings, new_account_pushes=2, read_deadline_high=3600,
                     journal_chunk_bytes=1024)
    producer = producer_for(settings)
    for a in ACCOUNTS:
        register(producer, a, devices=0)
    sends = Tap(settings, "push.sends")
    crashing = start_worker({**env, "PUSHCASCADE_CRASH_AT": "chunk:2"}, tmp_path, "crash")
    rounds: list[list[str]] = []
    try:
        for j in range(3):
            if crashing.popen.poll() is not None:
                break
            rounds.append(push_round(producer, j))
            sends.wait_for(lambda rs, w=set(rounds[-1]): crashing.popen.poll() is not None
                           or {r["message_id"] for r in rs} >= w, timeout=90)
        crashing.popen.wait(60)
        assert crashing.popen.returncode == 86, crashing.tail(30)
    finally:
        crashing.kill()
    worker = start_worker(env, tmp_path, "after", loglevel="info")
    try:
        while len(rounds) < 4:
            rounds.append(push_round(producer, len(rounds)))
        wait_idle(settings, workers=[worker])
        sends.drain()
    finally:
        worker.stop()
    assert_sent_once(sends, rounds, fanout_rounds=2)


def test_a_worker_frozen_past_its_session_is_fenced_and_reverts_nothing(settings, tmp_path):
    deadline = 12.0
    env = worker_env(settings, new_account_pushes=2, read_deadline_high=deadline)
    producer = producer_for(settings)
    for a in ACCOUNTS:
        register(producer, a, devices=0)
    sends, escalations = Tap(settings, "push.sends"), Tap(settings, "push.escalations")
    a_worker = start_worker(env, tmp_path, "a", loglevel="info")
    b_worker = start_worker(env, tmp_path, "b", loglevel="info")
    c_worker = None
    rounds: list[list[str]] = []
    try:
        for j in range(2):  # new accounts: every channel
            rounds.append(push_round(producer, j))
            sends.wait_for(lambda rs, w=set(rounds[-1]): {r["message_id"] for r in rs} >= w,
                           timeout=90, workers=[a_worker, b_worker])
        rounds.append(push_round(producer, 2))  # established: primary, a read deadline each
        sends.wait_for(lambda rs: {r["message_id"] for r in rs} >= set(rounds[-1]),
                       timeout=90, workers=[a_worker, b_worker])
        a_worker.popen.send_signal(signal.SIGSTOP)  # frozen with its deadlines pending
        frozen_at = time.monotonic()
        for m in rounds[-1]:  # every message is read: no escalation may ever fire
            producer.send("push.acks", read_ack(m, m.rsplit("-", 1)[0], "WECHAT"))
        producer.flush()
        rounds.append(push_round(producer, 3))  # handled by b once it holds every partition
        sends.wait_for(lambda rs: {r["message_id"] for r in rs} >= set(rounds[-1]),
                       timeout=120, workers=[b_worker])
        for m in rounds[-1]:  # read too: any escalation would be a stale worker's
            producer.send("push.acks", read_ack(m, m.rsplit("-", 1)[0], "WECHAT"))
        producer.flush()
        time.sleep(max(0.0, deadline + 3 - (time.monotonic() - frozen_at)))
        a_worker.popen.send_signal(signal.SIGCONT)  # wakes with deadlines due in its memory
        time.sleep(8)  # its timer fires; its batch lands after b's claim and is discarded
        a_log = a_worker.tail(400)
        wait_idle(settings, workers=[a_worker, b_worker])
        a_worker.stop()
        b_worker.stop()
        # recovers every partition's journal; its own round is not read, and on a busy machine
        # its drain can outlast a 12 s deadline: a long one, so it stays one PRIMARY each
        c_worker = start_worker({**env, "PUSHCASCADE_READ_DEADLINE_HIGH": "600"}, tmp_path, "c")
        rounds.append(push_round(producer, 4))
        wait_idle(settings, workers=[c_worker])
        sends.drain()
        escalations.drain()
    finally:
        for w in (a_worker, b_worker, c_worker):
            if w is not None and w.popen.poll() is None:
                w.popen.send_signal(signal.SIGCONT)
                w.stop()
    print(f"\nfrozen worker after it woke: {a_log.count('claimed by a newer owner')} "
          f"batches fenced")
    assert_sent_once(sends, rounds, fanout_rounds=2)
    assert escalations.records == [], escalations.records[:5]


def test_a_restart_after_the_deadlines_with_the_reads_behind_a_backlog_escalates_none(
        settings, tmp_path):
    deadline = 30.0
    env, producer, sends, escalations = established(settings, deadline)
    worker = start_worker(env, tmp_path, "first")
    try:
        messages = push_round(producer, 0)
        sends.wait_for(lambda rs: {r["message_id"] for r in rs} >= set(messages),
                       timeout=90, workers=[worker])
    finally:
        worker.kill()  # its sends are out, so their batches are in the journal
    due = min(r["sent_at"] for r in sends.records) / 1000 + deadline
    for i in range(20_000):  # a backlog of other acks ahead of the reads
        a = ACCOUNTS[i % len(ACCOUNTS)]
        producer.send("push.acks", {**read_ack(f"{a}-r0", a, "WECHAT"), "kind": "RECEIPT"})
    for m in messages:
        producer.send("push.acks", read_ack(m, m.rsplit("-", 1)[0], "WECHAT"))
    producer.flush()
    assert time.time() < due - 1, "too slow: the reads were written after their deadlines"
    time.sleep(due + 2 - time.time())  # every deadline passed while no worker ran
    worker = start_worker(env, tmp_path, "second")
    try:
        wait_idle(settings, timeout=180, workers=[worker])
        time.sleep(2)
        escalations.drain()
    finally:
        worker.stop()
    assert escalations.records == [], (len(escalations.records), escalations.records[:3])


def test_a_worker_frozen_for_a_moment_while_the_reads_arrive_escalates_none(settings, tmp_path):
    # every READ reaches the broker a second before its deadline while the worker is frozen;
    # the worker wakes after the deadlines with a fetch answered before the freeze still to
    # read: that answer must not count as seeing the broker after the READs (the deadlines
    # may fire only up to when the fetch was sent)
    deadline, cycles = 3.0, 10
    env, producer, sends, escalations = established(settings, deadline)
    worker = start_worker(env, tmp_path, "w")
    late: list[float] = []
    tested: list[str] = []
    try:
        warm = push_round(producer, cycles)  # the worker's first batches are slow to come
        sends.wait_for(lambda rs: {r["message_id"] for r in rs} >= set(warm), timeout=90,
                       workers=[worker])
        for j in range(cycles):
            messages = push_round(producer, j)
            sends.wait_for(lambda rs, w=set(messages): {r["message_id"] for r in rs} >= w,
                           timeout=90, workers=[worker])
            due = min(r["sent_at"] for r in sends.records
                      if r["message_id"] in messages) / 1000 + deadline
            time.sleep(max(0.0, due - 1.5 - time.time()))
            worker.popen.send_signal(signal.SIGSTOP)
            try:
                time.sleep(0.4)  # its fetch in flight is answered (empty) meanwhile
                for m in messages:
                    producer.send("push.acks", read_ack(m, m.rsplit("-", 1)[0], "WECHAT"))
                producer.flush()
                late.append(time.time() - (due - 0.5))
                tested += messages
                time.sleep(max(0.0, due + 1.0 - time.time()))
            finally:
                worker.popen.send_signal(signal.SIGCONT)
            time.sleep(1.5)
        wait_idle(settings, workers=[worker])
        escalations.drain()
    finally:
        worker.stop()
    assert max(late) < 0, f"too slow: reads written after due - 0.5 s ({late})"
    escalated = [r for r in escalations.records if r["message_id"] in tested]
    assert escalated == [], (len(escalated), escalated[:3])


def test_a_worker_frozen_past_its_deadlines_escalates_each_read_that_came_after_one(
        settings, tmp_path):
    # the twin of the test above: the worker is frozen past every deadline of a round, and
    # the round's READs, stamped after those deadlines, reach the broker before it wakes.
    # Whichever it meets first on waking (the READs in its next fetch, or its timers), each
    # deadline came before its READ: the message escalates once, at the deadline's time,
    # and its READ is reported after (a READ stamped late does not cancel a deadline)
    deadline = 3.0
    env, producer, sends, escalations = established(settings, deadline)
    results = Tap(settings, "push.results")
    worker = start_worker(env, tmp_path, "w")
    try:
        warm = push_round(producer, 99)  # the worker's first batches are slow to come
        sends.wait_for(lambda rs: {r["message_id"] for r in rs} >= set(warm), timeout=90,
                       workers=[worker])
        messages = push_round(producer, 0)
        sends.wait_for(lambda rs, w=set(messages): {r["message_id"] for r in rs} >= w,
                       timeout=90, workers=[worker])
        primary = {r["message_id"]: r for r in sends.records
                   if r["message_id"] in messages and r["reason"] == "PRIMARY"}
        first = min(r["sent_at"] for r in primary.values()) / 1000 + deadline
        last = max(r["sent_at"] for r in primary.values()) / 1000 + deadline
        time.sleep(max(0.0, first - 1.0 - time.time()))
        worker.popen.send_signal(signal.SIGSTOP)
        try:
            time.sleep(max(0.0, last + 0.3 - time.time()))
            for m in messages:
                producer.send("push.acks", read_ack(m, m.rsplit("-", 1)[0],
                                                    primary[m]["channel"]))
            producer.flush()
            time.sleep(0.5)
        finally:
            worker.popen.send_signal(signal.SIGCONT)
        wait_idle(settings, workers=[worker])
        escalations.drain()
        results.drain()
    finally:
        worker.stop()
    escalated = Counter(r["message_id"] for r in escalations.records if r["message_id"] in messages)
    assert escalated == dict.fromkeys(messages, 1), escalated
    read = {r["message_id"]: r["at"] for r in results.records
            if r["message_id"] in messages and r["status"] == "READ"}
    assert set(read) == set(messages)
    for e in escalations.records:
        if e["message_id"] in messages:
            assert e["fired_at"] == e["deadline_at"] < read[e["message_id"]], e
            assert e["deadline_at"] == primary[e["message_id"]]["sent_at"] + deadline * 1000

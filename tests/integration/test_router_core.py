"""The router core under crashes, catch-up and shared message ids, through the real broker."""

from __future__ import annotations

import random
import threading
import time
from collections import Counter

from connectors.producer import DeliveryError
from schemas import key_partition
from streams.harness import Tap, changelog_tap, producer_for, start_worker, worker_env
from tests.helpers import device, now_ms, register, request


def profile(account: str) -> dict:
    """A profile enabling WECHAT and SMS."""
    return {"account_id": account, "phone": "+8613800000000", "wechat_openid": f"o-{account}",
            "email": None, "updated_at": now_ms()}


def primary_sends(sends: Tap) -> Counter[str]:
    """How many PRIMARY send records each message got (records, not distinct ids)."""
    return Counter(r["message_id"] for r in sends.records if r["reason"] == "PRIMARY")


def test_sigkill_at_random_moments_loses_no_send(settings, tmp_path):
    accounts = [f"k{i}" for i in range(40)]
    env = worker_env(settings, new_account_pushes=0, read_deadline_normal=3600)
    producer = producer_for(settings)
    for account in accounts:
        producer.send("account.profiles", profile(account))
    producer.flush()
    sends = Tap(settings, "push.sends")
    written: list[str] = []
    stop = threading.Event()

    unconfirmed: list[str] = []

    def flow() -> None:
        """Requests keep coming, ~150/s, while workers start and die; a request counts as
        written once the broker acknowledged it."""
        out = producer_for(settings)
        i = 0
        while not stop.is_set():
            batch = []
            for _ in range(15):
                account = accounts[i % len(accounts)]
                out.send("push.requests", request(f"{account}-r{i}", account, "NORMAL"))
                batch.append(f"{account}-r{i}")
                i += 1
            try:
                out.flush()
                written.extend(batch)
            except DeliveryError as exc:  # the broker's, not the pipeline's: say so, go on
                unconfirmed.append(str(exc))
                out = producer_for(settings)
            time.sleep(0.1)

    thread = threading.Thread(target=flow, daemon=True)
    thread.start()
    rng = random.Random(7)
    kills = 0
    try:
        for cycle in range(6):
            worker = start_worker(env, tmp_path, f"w{cycle}")
            try:
                seen = len(sends.records)
                sends.wait_for(lambda rs, seen=seen: len(rs) > seen + 20, timeout=90)
                time.sleep(rng.uniform(0.1, 2.5))  # somewhere inside a batch, or between two
            finally:
                worker.kill()
            kills += 1
        stop.set()
        thread.join(10)
        last = start_worker(env, tmp_path, "last", loglevel="info")
        started = time.monotonic()
        try:
            try:
                # the six killed workers stay in the group until their sessions time out: under
                # a loaded suite the last worker's join alone once took ~180 s of the wait
                sends.wait_for(lambda rs: set(written) <= {r["message_id"] for r in rs},
                               timeout=300, workers=[last])
            except AssertionError:
                have = {r["message_id"] for r in sends.records}
                missing = [m for m in written if m not in have]
                raise AssertionError(f"{len(missing)} of {len(written)} requests have no send: "
                                     f"{missing[:20]}; worker log tail:\n"
                                     f"{last.tail(60)}") from None
            print(f"\nthe last worker caught up in {time.monotonic() - started:.1f}s")
            sends.poll(2.0)
        finally:
            last.stop()
    finally:
        stop.set()
    counts = primary_sends(sends)
    lost = [m for m in written if counts[m] == 0]
    repeated = sum(n - 1 for n in counts.values() if n > 1)
    print(f"\n{kills} SIGKILLs, {len(written)} requests: {repeated} sends repeated, "
          f"{len(lost)} lost; {len(unconfirmed)} batches the broker did not confirm")
    assert kills >= 5
    assert lost == []
    by_message: dict[str, set[tuple[str, str]]] = {}
    for r in sends.records:
        if r["reason"] == "PRIMARY":
            by_message.setdefault(r["message_id"], set()).add((r["send_id"], r["channel"]))
    assert all(len(v) == 1 for v in by_message.values())  # a repeat is the same send, same id
    assert not [r for r in sends.records if r["reason"] == "FANOUT"]


def test_one_message_id_for_two_accounts_reaches_both_and_a_repeat_is_one_message(
        settings, tmp_path):
    env = worker_env(settings, new_account_pushes=0, read_deadline_high=3600)
    producer = producer_for(settings)
    pair = ["shared-a", "shared-b"]
    for account in pair:
        register(producer, account, devices=0)
    worker = start_worker(env, tmp_path)
    try:
        for account in pair:
            producer.send("push.requests", request("campaign-msg-1", account))
        producer.send("push.requests", request("campaign-msg-1", "shared-a"))  # a repeat
        producer.flush()
        sends = Tap(settings, "push.sends")
        sends.wait_for(lambda rs: {r["account_id"] for r in rs} >= set(pair), timeout=60)
        producer.send("push.requests", request("after", "shared-a"))
        producer.flush()
        sends.wait_for(lambda rs: any(r["message_id"] == "after" for r in rs), timeout=30)
        sends.poll(1.0)
    finally:
        worker.stop()
    got = [(r["account_id"], r["message_id"], r["send_id"]) for r in sends.records
           if r["message_id"] == "campaign-msg-1"]
    assert sorted(a for a, _, _ in got) == pair  # both accounts, the repeat sent nothing
    assert len({s for _, _, s in got}) == 2  # two sends, two ids


def test_profile_and_device_written_before_the_request_are_applied_in_catch_up(
        settings, tmp_path):
    env = worker_env(settings, new_account_pushes=5, reach_grace=60)
    producer = producer_for(settings)
    backlog = [f"other-{i}" for i in range(3000)]  # the worker starts behind on profiles
    for account in backlog:
        producer.send("account.profiles", profile(account))
    producer.send("account.profiles", profile("late-1"))
    producer.send("device.registry", device("late-1", "late-1-phone", ["HUAWEI", "JPUSH"],
                                            manufacturer="Huawei"))
    producer.flush()
    producer.send("push.requests", request("late-1-m", "late-1"))
    producer.flush()
    sends, results = Tap(settings, "push.sends"), Tap(settings, "push.results")
    worker = start_worker(env, tmp_path)  # no worker ran until now
    try:
        sends.wait_for(lambda rs: len([r for r in rs if r["message_id"] == "late-1-m"]) >= 4,
                       timeout=90)
        sends.poll(1.0)
        results.poll(0.5)
    finally:
        worker.stop()
    got = sorted((r["channel"], r["device_id"] or "", r["reason"]) for r in sends.records
                 if r["message_id"] == "late-1-m")
    assert got == [("APP", "", "FANOUT"), ("APP", "late-1-phone", "ORIGINAL_ROUTE"),
                   ("SMS", "", "FANOUT"), ("WECHAT", "", "FANOUT")]
    assert results.where(message_id="late-1-m") == []  # never UNREACHABLE


def test_state_lands_on_the_account_partition_whatever_the_producer_partitioner(
        settings, tmp_path):
    import zlib

    from confluent_kafka import Producer

    from schemas import Codec

    partitions = settings.tuning.partitions
    accounts = [a for a in (f"pt-{i}" for i in range(300))
                if zlib.crc32(a.encode()) % partitions != key_partition(a, partitions)][:8]
    env = worker_env(settings, new_account_pushes=3, read_deadline_high=3600)
    crc = Producer({"bootstrap.servers": settings.connections.kafka_bootstrap_servers,
                    "partitioner": "consistent_random"})  # librdkafka's default, not murmur2
    codec = Codec()
    for account in accounts:
        crc.produce(settings.topic("account.profiles"), key=account.encode(),
                    value=codec.encode("AccountProfile", profile(account)))
    crc.flush()
    first = start_worker(env, tmp_path, "first")
    second = None
    try:
        sends = Tap(settings, "push.sends")
        for j in range(4):
            if j == 2:  # a restart: the state is recovered from where it was written
                first.stop()
                second = start_worker(env, tmp_path, "second")
            for account in accounts:
                crc.produce(settings.topic("push.requests"), key=account.encode(),
                            value=codec.encode("PushRequest", request(f"{account}-m{j}", account)))
            crc.flush()
            wanted = {f"{a}-m{j}" for a in accounts}
            try:
                sends.wait_for(lambda rs, w=wanted: {r["message_id"] for r in rs} >= w,
                               timeout=90)
            except AssertionError:
                missing = wanted - {r["message_id"] for r in sends.records}
                results = Tap(settings, "push.results")
                results.poll(3.0)
                state = changelog_tap(settings, "accounts")
                state.poll(3.0)
                raise AssertionError(
                    f"round {j}: no send for {sorted(missing)}; their results: "
                    f"{[r for r in results.records if r['message_id'] in missing]}; accounts: "
                    f"{[r for r in state.records if r and r['account_id'] + f'-m{j}' in missing]}"
                ) from None
    finally:
        first.stop()
        if second:
            second.stop()
    for account in accounts:
        reasons = Counter(r["reason"] for r in sends.records if r["account_id"] == account)
        assert reasons == {"FANOUT": 2 * 3, "PRIMARY": 1}, (account, reasons)
    state = changelog_tap(settings, "accounts")
    state.poll(2.0)
    landed = {(r["account_id"], p)
              for r, p in zip(state.records, state.record_partitions, strict=True) if r}
    assert landed == {(a, key_partition(a, partitions)) for a in accounts}


def test_addresses_are_masked_in_forwarded_records_and_dead_letters(settings, tmp_path):
    import zlib

    from confluent_kafka import Producer

    from schemas import Codec

    partitions = settings.tuning.partitions
    account = next(a for a in (f"pii-{i}" for i in range(100))
                   if zlib.crc32(a.encode()) % partitions != key_partition(a, partitions))
    crc = Producer({"bootstrap.servers": settings.connections.kafka_bootstrap_servers,
                    "partitioner": "consistent_random"})
    codec = Codec()
    crc.produce(settings.topic("account.profiles"), key=account.encode(),
                value=codec.encode("AccountProfile", {**profile(account),
                                                      "email": "someone@example.com"}))
    crc.produce(settings.topic("account.profiles"), key=b"broken",
                value=b"\x00\x00\x00\x00\x04+8613800000000")  # undecodable, holds a number
    crc.flush()
    forwarded = Tap(settings, "pushcascade.account-events",
                    decode=lambda v: codec.decode(v, topic="account.profiles"))
    dlq = Tap(settings, "push.dlq")
    worker = start_worker(worker_env(settings), tmp_path)
    try:
        # a record may be forwarded or dead-lettered again around a rebalance (the same record,
        # dropped by its consumer): every copy must be masked
        forwarded.wait_for(lambda rs: len(rs) >= 1, timeout=60)
        dlq.wait_for(lambda rs: len(rs) >= 1, timeout=30)
        state = changelog_tap(settings, "accounts")
        state.wait_for(lambda rs: any(r and r["account_id"] == account for r in rs))
    finally:
        worker.stop()
    assert len({str(r) for r in forwarded.records}) == 1  # copies, if any, are one record
    for masked in forwarded.records:
        assert (masked["phone"], masked["wechat_openid"], masked["email"]) == ("***",) * 3
    assert len({(d["topic"], d["partition"], d["offset"]) for d in dlq.records}) == 1
    for letter in dlq.records:
        assert letter["value"] is None and "account.profiles" in letter["topic"]
    assert [r["addresses"] for r in state.records if r and r["account_id"] == account] == [
        ["WECHAT", "SMS", "EMAIL"]]

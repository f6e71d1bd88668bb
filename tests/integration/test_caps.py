"""Caps at the router, through the real broker: a foreign producer's oversized record is
dead-lettered with its reason, changes no state, and the account's next request is sent."""

from __future__ import annotations

from confluent_kafka import Producer

from schemas import Codec
from streams.harness import Tap, changelog_tap, producer_for, start_worker, worker_env
from streams.harness.taps import wait_committed
from tests.helpers import now_ms, request


def test_a_600_kb_request_from_a_plain_producer_is_dead_lettered_and_the_next_one_is_sent(
        settings, tmp_path):
    account = "cap-a"
    env = worker_env(settings, new_account_pushes=0, read_deadline_high=3600)
    sdk = producer_for(settings)
    sdk.send("account.profiles", {"account_id": account, "phone": "+8613800000000",
                                  "wechat_openid": f"o-{account}", "email": None,
                                  "updated_at": now_ms()})
    sdk.flush()
    # a plain librdkafka producer, no SDK: nothing checks the caps before the router
    plain = Producer({"bootstrap.servers": settings.connections.kafka_bootstrap_servers,
                      "partitioner": "murmur2_random"})
    codec = Codec()
    big = codec.encode("PushRequest", {**request("big", account), "body": "中" * 200_000})
    assert len(big) > 600_000
    delivered: dict[str, tuple[str, int, int]] = {}

    def report(name: str):
        def on_delivery(err, msg) -> None:
            assert err is None, err
            delivered[name] = (msg.topic(), msg.partition(), msg.offset())
        return on_delivery

    plain.produce(settings.topic("push.requests"), key=account.encode(), value=big,
                  on_delivery=report("big"))
    plain.produce(settings.topic("push.requests"), key=account.encode(),
                  value=codec.encode("PushRequest", request("after", account)),
                  on_delivery=report("after"))
    assert plain.flush(30) == 0 and set(delivered) == {"big", "after"}
    sends, dlq = Tap(settings, "push.sends"), Tap(settings, "push.dlq")
    worker = start_worker(env, tmp_path)
    try:
        sends.wait_for(lambda rs: any(r["message_id"] == "after" for r in rs), timeout=90)
        dlq.wait_for(lambda rs: any(r["key"] == account.encode() for r in rs), timeout=30)
        topic, partition, offset = delivered["after"]
        wait_committed(settings, {(topic, partition): offset + 1}, timeout=60, workers=[worker])
        messages = changelog_tap(settings, "messages")
        messages.poll(2.0)
    finally:
        worker.stop()
    # around a rebalance the dead letter may be written again: copies name the same record
    letters = [r for r in dlq.records if r["key"] == account.encode()]
    assert {(r["topic"], r["partition"], r["offset"]) for r in letters} == {delivered["big"]}
    for letter in letters:
        assert letter["value"] == big
        assert letter["error"] == ("push.requests: over a cap: PushRequest.body: 600000 bytes "
                                   "(UTF-8), over the cap of 2048 bytes")
    assert {r["message_id"] for r in sends.records if r["account_id"] == account} == {"after"}
    stored = {r["message_id"] for r in messages.records if r}
    assert "after" in stored and "big" not in stored  # the oversized one changed no state

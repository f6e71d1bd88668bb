"""The contract's key partitioner against librdkafka's murmur2_random, on the real broker."""

from __future__ import annotations

from confluent_kafka import KafkaError, Message, Producer

from schemas import key_partition

# Every tail length murmur2 folds in (0 to 3 bytes past a 4-byte block), multi-byte UTF-8 too.
KEYS = [f"acct-{i}" for i in range(200)] + ["a", "ab", "abc", "abcd", "账户-7", "über-Konto",
                                            "device-🙂-42", "x" * 257]


def test_librdkafka_murmur2_puts_every_key_on_its_key_partition(settings_factory) -> None:
    settings = settings_factory(partitions=7)  # not a power of two: the modulo matters
    topic = settings.topic("push.requests")
    producer = Producer({"bootstrap.servers": settings.connections.kafka_bootstrap_servers,
                         "partitioner": "murmur2_random"})
    placed: dict[str, int] = {}
    errors: list[str] = []

    def on_delivery(err: KafkaError | None, msg: Message) -> None:
        if err is None:
            placed[(msg.key() or b"").decode()] = msg.partition()
        else:
            errors.append(err.str())

    for key in KEYS:
        producer.produce(topic, key=key.encode(), value=b"partitioner test",
                         on_delivery=on_delivery)
        producer.poll(0)
    assert producer.flush(30) == 0 and errors == []
    assert placed == {key: key_partition(key, 7) for key in KEYS}
    assert len(set(placed.values())) == 7

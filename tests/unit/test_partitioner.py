"""Tests of the contract's key partitioner against Apache Kafka's own murmur2 test vectors."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from schemas import PRODUCER_CONFIG, key_partition, murmur2

#: Apache Kafka, clients/src/test/java/org/apache/kafka/common/utils/UtilsTest.java,
#: testMurmur2 (read at commit f55581dc73953c3509a4702433aeeeddc2970779).
KAFKA_VECTORS = {
    b"21": -973932308,
    b"foobar": -790332482,
    b"a-little-bit-long-string": -985981536,
    b"a-little-bit-longer-string": -1486304829,
    b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
    bytes([ord("a"), ord("b"), ord("c")]): 479470107,
}


@pytest.mark.parametrize("data", sorted(KAFKA_VECTORS))
def test_murmur2_gives_what_kafkas_java_client_gives(data: bytes) -> None:
    assert murmur2(data) == KAFKA_VECTORS[data]


@given(st.binary(max_size=64))
def test_murmur2_is_a_signed_32_bit_int(data: bytes) -> None:
    assert -(2**31) <= murmur2(data) < 2**31


@given(st.text(max_size=40), st.integers(min_value=1, max_value=1000))
def test_key_partition_is_the_positive_hash_of_the_utf8_key_modulo_partitions(
        key: str, partitions: int) -> None:
    expected = (murmur2(key.encode("utf-8")) & 0x7FFFFFFF) % partitions
    assert key_partition(key, partitions) == expected
    assert 0 <= key_partition(key, partitions) < partitions


@pytest.mark.parametrize(("key", "partitions", "expected"), [
    ("foobar", 10, 6),  # -790332482 & 0x7fffffff = 1357151166 (Java's Utils.toPositive)
    ("21", 7, 3),  # -973932308 & 0x7fffffff = 1173551340
    ("abc", 12, 3),  # 479470107 is positive already
])
def test_key_partition_of_kafka_vectors_worked_by_hand(key: str, partitions: int,
                                                       expected: int) -> None:
    assert key_partition(key, partitions) == expected


def test_producer_config_asks_librdkafka_for_the_java_partitioner() -> None:
    assert PRODUCER_CONFIG["partitioner"] == "murmur2_random"
    assert PRODUCER_CONFIG["enable.idempotence"] is True

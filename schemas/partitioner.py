"""The key partitioner of the contract: Kafka's murmur2, as the Java client and Faust place keys."""

from __future__ import annotations

from functools import lru_cache

#: librdkafka settings of a producer that keeps the contract's keying: each key on the partition
#: key_partition() names (murmur2, not librdkafka's default crc32), and one key's records neither
#: duplicated nor reordered by retries.
PRODUCER_CONFIG: dict[str, str | bool] = {
    "partitioner": "murmur2_random",
    "enable.idempotence": True,
}


def murmur2(data: bytes) -> int:
    """Kafka's murmur2 hash (the Java client's), as a signed 32-bit int."""
    length = len(data)
    seed, m, r = 0x9747B28C, 0x5BD1E995, 24
    h = (seed ^ length) & 0xFFFFFFFF
    end = length & ~3
    for i in range(0, end, 4):
        k = int.from_bytes(data[i : i + 4], "little")
        k = (k * m) & 0xFFFFFFFF
        k ^= k >> r
        k = (k * m) & 0xFFFFFFFF
        h = ((h * m) & 0xFFFFFFFF) ^ k
    rest = length & 3
    if rest == 3:
        h ^= data[end + 2] << 16
    if rest >= 2:
        h ^= data[end + 1] << 8
    if rest >= 1:
        h ^= data[end]
        h = (h * m) & 0xFFFFFFFF
    h ^= h >> 13
    h = (h * m) & 0xFFFFFFFF
    h ^= h >> 15
    return h - (1 << 32) if h & 0x80000000 else h


@lru_cache(maxsize=1 << 16)
def key_partition(key: str, partitions: int) -> int:
    """The partition the Java/murmur2 partitioner puts this key on; the owner of its state
    (the hash is pure Python: an account's partition is remembered)."""
    return (murmur2(key.encode()) & 0x7FFFFFFF) % partitions

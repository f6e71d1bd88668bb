"""The readers verify needs: every record of the run's topics (read_committed, to the ends a
Fetch reports), the sink's committed offsets, ClickHouse rows, the simulator's call counts."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import httpx
from confluent_kafka import KafkaError, TopicPartition

from schemas import BY_NAME, Codec
from streams.kafka import admin, consumer
from streams.lag import committed, end_offsets
from streams.settings import Settings


@dataclass(frozen=True)
class Raw:
    """One record as the broker holds it, and its decoded value (None when it does not
    decode as its topic's record)."""

    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...]
    record: dict[str, Any] | None

    def bytes(self) -> bytes:
        """Key, headers and value, for searching."""
        parts = [self.key or b"", *(k.encode() + b"=" + (v or b"") for k, v in self.headers),
                 self.value or b""]
        return b"\n\0".join(parts)


def run_topics(settings: Settings) -> list[str]:
    """The unprefixed names of this run's topics: the catalog's and the workers' own (Faust
    changelogs and the like, named after the app id `<prefix>pushcascade`)."""
    prefix = settings.tuning.topic_prefix
    names = admin(settings.connections.kafka_bootstrap_servers).list_topics(timeout=10).topics
    return sorted(n[len(prefix):] for n in names if n.startswith(prefix)
                  and not n.startswith("__")
                  and (n[len(prefix):] in BY_NAME or n[len(prefix):].startswith("pushcascade")))


def read_topics(settings: Settings, names: Iterable[str], timeout: float = 120.0
                ) -> dict[str, list[Raw]]:
    """Every record of these (unprefixed) topics from the beginning to the end a Fetch
    reports now, read_committed; catalog topics decoded."""
    bootstrap = settings.connections.kafka_bootstrap_servers
    full = {settings.topic(n): n for n in names}
    ends = {tp: end for tp, end in end_offsets(bootstrap, full).items() if end > 0}
    out: dict[str, list[Raw]] = {n: [] for n in full.values()}
    if not ends:
        return out
    codec = Codec(settings.connections.schema_registry_url or None)
    reader = consumer(bootstrap, f"verify-{uuid.uuid4().hex}",
                      **{"isolation.level": "read_committed", "fetch.wait.max.ms": 50,
                         "enable.partition.eof": True})
    try:
        reader.assign([TopicPartition(t, p, 0) for t, p in ends])
        left, deadline = dict(ends), time.monotonic() + timeout
        while left:
            if time.monotonic() > deadline:
                raise TimeoutError(f"verify: {len(left)} partitions not read to their end "
                                   f"within {timeout:g}s")
            for msg in reader.consume(num_messages=5000, timeout=0.2):
                err, topic, partition = msg.error(), msg.topic() or "", msg.partition() or 0
                tp = (topic, partition)
                if err is not None:
                    if err.code() != KafkaError._PARTITION_EOF:
                        raise RuntimeError(f"verify: reading {topic}: {err.str()}")
                    if tp in left and (msg.offset() or 0) >= left[tp]:
                        del left[tp]
                    continue
                offset = msg.offset() or 0
                if offset >= ends[tp]:
                    left.pop(tp, None)
                    continue
                name = full[topic]
                got = msg.headers() or []
                pairs = list(got.items()) if isinstance(got, dict) else list(got)
                headers = tuple((str(k), v if isinstance(v, bytes) else str(v or "").encode())
                                for k, v in pairs)
                out[name].append(Raw(partition, offset, msg.key(), msg.value(), headers,
                                     _decode(codec, msg.value(), name)))
                if offset + 1 >= ends[tp]:
                    left.pop(tp, None)
    finally:
        reader.close()
    return out


def _decode(codec: Codec, value: bytes | None, name: str) -> dict[str, Any] | None:
    if name not in BY_NAME or name.startswith("pushcascade."):
        return None
    try:
        return codec.decode(value, topic=name)
    except Exception:  # undecodable: the consumers dead-letter it; verify counts it apart
        return None


def sink_committed(settings: Settings, topics: Iterable[str]) -> dict[str, dict[int, int]]:
    """The sink group's committed offset per (unprefixed) topic and partition."""
    bootstrap = settings.connections.kafka_bootstrap_servers
    meta = admin(bootstrap).list_topics(timeout=10).topics
    tps = [(settings.topic(t), p) for t in topics if settings.topic(t) in meta
           for p in meta[settings.topic(t)].partitions]
    got = committed(bootstrap, f"{settings.tuning.topic_prefix}pushcascade.sink", tps)
    out: dict[str, dict[int, int]] = {}
    for (topic, partition), offset in got.items():
        out.setdefault(topic[len(settings.tuning.topic_prefix):], {})[partition] = offset
    return out


def simulator_counts(url: str) -> tuple[dict[str, int], dict[str, int]]:
    """The provider simulator's calls and acceptances per send_id (GET /_control/sends)."""
    response = httpx.get(f"{url.rstrip('/')}/_control/sends", timeout=30)
    response.raise_for_status()
    body = response.json()
    return dict(body["seen"]), dict(body["accepted"])

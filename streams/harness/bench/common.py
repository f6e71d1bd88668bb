"""What the benchmarks share: fresh topics, preloaded records, workers, outputs read back.

Every measured subject gets a fresh topic prefix on the same broker, its input preloaded with a
confluent-kafka producer (murmur2 partitioner), and its Faust worker run as a subprocess. A
bench waits until the worker's consumer group has committed the whole input (Faust flushes its
producers before committing), stops the worker, and reads the output topic: rates come from the
records' own CreateTime, stamped by the worker's producer when it sent them, so worker start-up,
group join and table recovery are never part of them. Outputs are not tailed while a measured
worker runs: on the embedded broker a tailing consumer's fetches cost broker CPU that grows with
the partition, and it halved the baseline's rate (2.8k/s -> 1.3k/s) when tried.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from schemas import Codec
from streams.harness.broker import kafka
from streams.harness.processes import Process, worker_env
from streams.harness.taps import Ends, Tap
from streams.kafka import producer
from streams.settings import Settings
from streams.topics import create_topics

Log = Callable[[str], None]
Record = tuple[str, bytes, bytes]  # (unprefixed topic, key, value)
Output = tuple[int, dict[str, Any]]  # (CreateTime in ms, decoded record)

LONG_DEADLINE = 7 * 86400.0


def quiet(_: str) -> None:
    """A log function that says nothing."""


@contextlib.contextmanager
def bench_kafka(var_dir: Path, log: Log = quiet) -> Iterator[str]:
    """KAFKA_BOOTSTRAP_SERVERS when set, else a fresh embedded broker for the whole run."""
    given = Settings().connections.kafka_bootstrap_servers
    with kafka(given, var_dir) as bootstrap:
        log(f"using Kafka at {given}" if given else f"embedded broker at {bootstrap}")
        yield bootstrap


def fresh_settings(bootstrap: str, label: str) -> Settings:
    """Settings with a topic prefix of their own (topics created), so runs never mix."""
    prefix = f"bench-{label}-{uuid.uuid4().hex[:8]}."
    settings = Settings(topic_prefix=prefix, kafka_bootstrap_servers=bootstrap)
    create_topics(settings, bootstrap)
    return settings


def bench_env(settings: Settings, **tuning: Any) -> dict[str, str]:
    """A benchmarked worker's environment: ESTABLISHED accounts, memory store, no metrics."""
    return worker_env(settings, **{"new_account_pushes": 0, "store": "memory://",
                                   "metrics_port": 0, **tuning})


def account_ids(count: int) -> list[str]:
    """Account ids acct-000000 ... of the benchmark."""
    return [f"acct-{i:06d}" for i in range(count)]


def push_requests(codec: Codec, accounts: Sequence[str], count: int, tag: str,
                  importance: str = "NORMAL") -> list[Record]:
    """`count` push requests spread round-robin over the accounts, message ids `tag-N`."""
    now_ms = int(time.time() * 1000)
    records: list[Record] = []
    for i in range(count):
        a = accounts[i % len(accounts)]
        records.append(("push.requests", a.encode(), codec.encode("PushRequest", {
            "message_id": f"{tag}-{i}", "account_id": a, "importance": importance,
            "title": "Your parcel", "body": "arrives today", "read_action": "BUTTON",
            "campaign_id": None, "device_ids": [], "created_at": now_ms})))
    return records


def produce(settings: Settings, records: Sequence[Record], ends: Ends | None = None,
            rate: float | None = None) -> float:
    """Produce records (murmur2 partitioner, keyed), wait for all; seconds taken.

    `ends`, when given, collects the offset after the last record of each partition; `rate`,
    when given, paces them to that many records per second (each record's CreateTime is its
    arrival time, which the router takes as the event's time)."""
    start = time.monotonic()
    out = producer(settings.connections.kafka_bootstrap_servers, **{"linger.ms": 20})
    failed: list[str] = []

    def report(err: Any, msg: Any) -> None:
        """Delivery report: remember failures and the end offset of each partition."""
        if err is not None:
            failed.append(str(err))
        elif ends is not None:
            tp = (msg.topic(), msg.partition())
            ends[tp] = max(ends.get(tp, 0), msg.offset() + 1)

    for i, (name, key, value) in enumerate(records):
        if rate and i % 100 == 0:
            while (ahead := start + i / rate - time.monotonic()) > 0:
                out.poll(ahead)
        while True:
            try:
                out.produce(settings.topic(name), key=key, value=value, on_delivery=report)
                break
            except BufferError:
                out.poll(0.05)
        out.poll(0)
    left = out.flush(60)
    if left or failed:
        raise RuntimeError(f"preload: {left} unconfirmed, {len(failed)} failed {failed[:3]}")
    return time.monotonic() - start


def read_outputs(settings: Settings, name: str, tag: str,
                 enough: Callable[[list[Output]], bool], timeout: float,
                 worker: Process | None = None) -> list[Output]:
    """Records of a topic whose message_id starts with `tag`, with their CreateTime, read from
    the beginning until enough(them) holds or `timeout` passes (then what was read)."""
    got: list[Output] = []
    deadline = time.monotonic() + timeout
    with Tap(settings, name, fetch_wait_ms=100) as tap:
        while not enough(got) and time.monotonic() < deadline:
            if worker is not None:
                worker.check()
            first = len(tap.records)
            tap.poll(0.2)
            got.extend((created, rec) for created, rec in zip(
                tap.created[first:], tap.records[first:], strict=True)
                if rec["message_id"].startswith(tag))
    return got


def distinct_messages(count: int) -> Callable[[list[Output]], bool]:
    """An `enough` for read_outputs: `count` distinct message ids seen."""
    return lambda got: len({rec["message_id"] for _, rec in got}) >= count


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) by nearest rank; nan for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]


def summary_ms(values: Sequence[float]) -> dict[str, float]:
    """min, p50, p99 and max of millisecond values."""
    if not values:
        return {k: float("nan") for k in ("min", "p50", "p99", "max")}
    return {"min": round(min(values), 1), "p50": round(percentile(values, 50), 1),
            "p99": round(percentile(values, 99), 1), "max": round(max(values), 1)}


def keep_logs(workdir: Path, var_dir: Path) -> None:
    """Copy the worker logs of a failed run to var_dir/logs."""
    target = var_dir / "logs"
    target.mkdir(parents=True, exist_ok=True)
    for path in workdir.glob("*.log"):
        (target / path.name).write_bytes(path.read_bytes())


def sms_send(i: int, tag: str) -> dict[str, Any]:
    """The i-th SMS ChannelSend of a run."""
    account = f"acct-{i % 5000:06d}"
    return {"send_id": f"{tag}-{i}", "message_id": f"{tag}-m{i}", "account_id": account,
            "channel": "SMS", "device_id": None, "route": None, "reason": "PRIMARY",
            "attempt": 0, "importance": "HIGH", "title": "Gate", "body": "Boarding now",
            "read_action": "LINK", "link": "https://air.example/b", "sent_at": 0}

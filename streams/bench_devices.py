"""Benchmark of Method B's device stage: device sends/s and receipt-deadline fallback lateness.

Accounts have one device each (Huawei: original route HUAWEI, alternative JPUSH) and no
addresses, so each request for an ESTABLISHED account is one APP PRIMARY send plus one
ORIGINAL_ROUTE device send, a receipt deadline, and whatever probes the device is due (rate
limited per device). Registrations are applied first; then N requests are preloaded and the
rate is N / (CreateTime of the last ORIGINAL_ROUTE send - CreateTime of the first).
Lateness: P requests whose devices never answer; every device send's receipt deadline comes due
and falls back once on JPUSH; lateness = fallback sent_at - (original sent_at + deadline).
"""

from __future__ import annotations

import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, TopicPartition

from schemas import Codec
from streams.bench import (
    LONG_DEADLINE,
    Ends,
    Log,
    Record,
    Worker,
    _quiet,
    account_ids,
    bench_broker,
    fresh_settings,
    produce,
    push_requests,
    start_worker,
    summary_ms,
    wait_committed,
    worker_env,
)
from streams.kafka import consumer
from streams.settings import Settings


def device_registrations(codec: Codec, accounts: Sequence[str]) -> list[Record]:
    """One Huawei device per account, reachable on HUAWEI and JPUSH."""
    now = int(time.time() * 1000)
    return [("device.registry", f"{a}-d".encode(), codec.encode("DeviceRegistration", {
        "device_id": f"{a}-d", "account_id": a, "manufacturer": "Huawei", "model": "P60",
        "routes": ["HUAWEI", "JPUSH"], "active": True, "registered_at": now}))
        for a in accounts]


def read_device_sends(settings: Settings, tag: str, expect: dict[str, int],
                      timeout: float) -> dict[str, list[dict[str, Any]]]:
    """Device-level sends of messages `tag-*` by reason, until `expect[reason]` of each came."""
    codec = Codec()
    reader = consumer(settings.connections.kafka_bootstrap_servers, f"bench-{uuid.uuid4().hex}")
    full = settings.topic("push.sends")
    parts = reader.list_topics(full, timeout=10).topics[full].partitions
    reader.assign([TopicPartition(full, p, OFFSET_BEGINNING) for p in parts])
    got: dict[str, list[dict[str, Any]]] = {reason: [] for reason in expect}
    end = time.monotonic() + timeout
    try:
        while any(len(got[r]) < n for r, n in expect.items()) and time.monotonic() < end:
            for msg in reader.consume(num_messages=5000, timeout=0.2):
                if msg.error():
                    continue
                rec = codec.decode(msg.value(), topic="push.sends")
                if rec["reason"] in got and rec["message_id"].startswith(tag):
                    rec["created"] = msg.timestamp()[1]
                    got[rec["reason"]].append(rec)
    finally:
        reader.close()
    return got


def start_device_router(settings: Settings, accounts: Sequence[str], workdir: Path,
                        receipt_deadline: float, log: Log) -> Worker:
    """Register the devices, start the router, return once a sentinel push reached a device."""
    codec = Codec()
    ends: Ends = {}
    produce(settings, device_registrations(codec, accounts), ends)
    env = worker_env(settings, workdir / "devices",
                     PUSHCASCADE_RECEIPT_DEADLINE=str(receipt_deadline),
                     PUSHCASCADE_READ_DEADLINE_NORMAL=str(LONG_DEADLINE))
    worker = start_worker(["-m", "streams.cli", "worker"], env, workdir, "devices")
    try:
        wait_committed(settings, ends, worker, timeout=120 + len(accounts) / 100)
        for attempt in range(30):  # forwarded registrations are applied shortly after
            produce(settings, push_requests(codec, [accounts[-1]], 1, f"sentinel{attempt}"))
            if read_device_sends(settings, f"sentinel{attempt}-", {"ORIGINAL_ROUTE": 1}, 2)[
                    "ORIGINAL_ROUTE"]:
                break
        else:
            raise TimeoutError("the devices were never applied")
        log(f"devices: {len(accounts)} devices registered and applied")
    except BaseException:
        worker.stop()
        raise
    return worker


def measure_device_sends(bootstrap: str, requests: int, accounts: int, workdir: Path,
                         log: Log) -> dict[str, Any]:
    """Device sends/s through the device stage (long receipt deadline: nothing falls back)."""
    settings = fresh_settings(bootstrap, "devices")
    ids = account_ids(accounts)
    worker = start_device_router(settings, ids, workdir, LONG_DEADLINE, log)
    try:
        ends: Ends = {}
        produce(settings, push_requests(Codec(), ids, requests, "dreq"), ends)
        wait_committed(settings, ends, worker, timeout=120 + requests / 100)
    finally:
        worker.stop()
    got = read_device_sends(settings, "dreq-", {"ORIGINAL_ROUTE": requests}, 120)
    stamps = sorted(r["created"] for r in got["ORIGINAL_ROUTE"])
    seconds = (stamps[-1] - stamps[0]) / 1000
    return {"device_sends": len(stamps), "seconds": round(seconds, 3),
            "device_sends_per_s": round(len(stamps) / seconds, 1),
            "repeats": len(stamps) - len({r["send_id"] for r in got["ORIGINAL_ROUTE"]})}


def measure_receipt_lateness(bootstrap: str, pending: int, accounts: int, deadline: float,
                             workdir: Path, log: Log) -> dict[str, Any]:
    """P silent device sends: each falls back once after the receipt deadline; how late."""
    settings = fresh_settings(bootstrap, "receipts")
    ids = account_ids(accounts)
    worker = start_device_router(settings, ids, workdir, deadline, log)
    try:
        ends: Ends = {}
        produce(settings, push_requests(Codec(), ids, pending, "silent"), ends)
        log(f"receipts: {pending} requests produced; receipt deadline {deadline:.0f}s")
        got = read_device_sends(settings, "silent-",
                                {"ORIGINAL_ROUTE": pending, "FALLBACK_ROUTE": pending},
                                timeout=deadline + 600 + pending / 50)
    finally:
        worker.stop()
    sent = {r["message_id"]: r["sent_at"] for r in got["ORIGINAL_ROUTE"]}
    fallbacks = Counter(r["message_id"] for r in got["FALLBACK_ROUTE"])
    late = [r["sent_at"] - (sent[r["message_id"]] + deadline * 1000)
            for r in got["FALLBACK_ROUTE"] if r["message_id"] in sent]
    first_due = min(sent.values()) + deadline * 1000 if sent else 0
    return {"pending": pending, "receipt_deadline_s": deadline,
            "pending_at_first_due": sum(1 for at in sent.values() if at < first_due),
            "fallbacks": len(fallbacks), "fell_back_exactly_once": sum(
                1 for n in fallbacks.values() if n == 1),
            "duplicates": sum(n - 1 for n in fallbacks.values()),
            "missing": pending - len(fallbacks), "fallback_routes": dict(Counter(
                r["route"] for r in got["FALLBACK_ROUTE"])),
            "lateness_ms": summary_ms(late)}


def run_device_bench(requests: int = 30000, accounts: int = 5000, pending: int = 100000,
                     deadline: float | None = None, var_dir: Path = Path("var/bench"),
                     log: Log = _quiet) -> dict[str, Any]:
    """Device sends/s, then receipt-deadline lateness with P pending."""
    with tempfile.TemporaryDirectory(prefix="pushcascade-bench-") as tmp, \
            bench_broker(var_dir, log) as bootstrap:
        workdir = Path(tmp)
        sends = measure_device_sends(bootstrap, requests, accounts, workdir, log)
        log(f"devices: {sends['device_sends_per_s']:.0f} device sends/s")
        chosen = deadline or float(max(60, round(pending / sends["device_sends_per_s"] * 1.5)))
        late = (measure_receipt_lateness(bootstrap, pending, accounts, chosen, workdir, log)
                if pending else None)
    return {"requests": requests, "accounts": accounts, "throughput": sends, "lateness": late}

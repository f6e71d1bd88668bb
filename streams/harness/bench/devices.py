"""The devices benchmark: device sends/s and receipt-deadline fallback lateness (Method B).

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
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from schemas import Codec
from streams.harness.bench.common import (
    LONG_DEADLINE,
    Log,
    Record,
    account_ids,
    bench_env,
    bench_kafka,
    fresh_settings,
    produce,
    push_requests,
    quiet,
    read_outputs,
    summary_ms,
)
from streams.harness.processes import Process, start_worker
from streams.harness.taps import Ends, wait_committed
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
    """Device-level sends of messages `tag*` by reason, until `expect[reason]` of each came
    (or `timeout` passed); each record gets its CreateTime as `created`."""
    def by_reason(got: list[tuple[int, dict[str, Any]]]) -> dict[str, list[dict[str, Any]]]:
        """The wanted reasons' records, each with its CreateTime."""
        out: dict[str, list[dict[str, Any]]] = {reason: [] for reason in expect}
        for created, rec in got:
            if rec["reason"] in out:
                out[rec["reason"]].append({**rec, "created": created})
        return out

    def enough(got: list[tuple[int, dict[str, Any]]]) -> bool:
        return all(len(recs) >= expect[r] for r, recs in by_reason(got).items())

    return by_reason(read_outputs(settings, "push.sends", tag, enough, timeout))


def start_device_router(settings: Settings, accounts: Sequence[str], workdir: Path,
                        receipt_deadline: float, log: Log) -> Process:
    """Register the devices, start the router, return once a sentinel push reached a device."""
    codec = Codec()
    ends: Ends = {}
    produce(settings, device_registrations(codec, accounts), ends)
    env = bench_env(settings, receipt_deadline=receipt_deadline,
                    read_deadline_normal=LONG_DEADLINE)
    worker = start_worker(env, workdir, f"devices-{settings.tuning.topic_prefix[:-1]}")
    try:
        wait_committed(settings, ends, timeout=120 + len(accounts) / 100, workers=[worker])
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
        wait_committed(settings, ends, timeout=120 + requests / 100, workers=[worker])
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
                     log: Log = quiet) -> dict[str, Any]:
    """Device sends/s, then receipt-deadline lateness with P pending."""
    with tempfile.TemporaryDirectory(prefix="pushcascade-bench-") as tmp, \
            bench_kafka(var_dir, log) as bootstrap:
        workdir = Path(tmp)
        sends = measure_device_sends(bootstrap, requests, accounts, workdir, log)
        log(f"devices: {sends['device_sends_per_s']:.0f} device sends/s")
        chosen = deadline or float(max(60, round(pending / sends["device_sends_per_s"] * 1.5)))
        late = (measure_receipt_lateness(bootstrap, pending, accounts, chosen, workdir, log)
                if pending else None)
    return {"requests": requests, "accounts": accounts, "throughput": sends, "lateness": late}

"""The campaign benchmark: a campaign at real size, through the router and the campaign agent.

N accounts (default 50,000) with D devices each (default 4: 200,000 devices), Huawei phones
(original route HUAWEI, alternative JPUSH), none of which ever acknowledges: the campaign's
ratio is 0, below any threshold, so every device falls back. The registrations are applied
first (the bench waits until the worker has committed every input, internal topics included);
then one push request per account carrying the same campaign_id is preloaded. Figures:

- time to decision after the last target: decided_at - (sent_at of the last ORIGINAL_ROUTE
  send + the receipt deadline); it includes the campaign owner's one-second settle wait;
- fallback sends/s: FALLBACK_ROUTE sends / (CreateTime of the last one - of the first), and
  how long after the decision the last one went out;
- the largest changelog record of each table (bytes), read back from the changelog topics:
  campaign state is counters, so it stays small whatever the campaign's size.
"""

from __future__ import annotations

import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from schemas import Codec
from streams.domain.state import ROUTER_TABLES
from streams.harness.bench.common import (
    Log,
    Record,
    bench_env,
    bench_kafka,
    fresh_settings,
    keep_logs,
    produce,
    quiet,
)
from streams.harness.processes import start_worker
from streams.harness.taps import Tap, changelog_tap, journal_topic, wait_idle
from streams.settings import Settings
from streams.state import changelog_bytes

CAMPAIGN = "spring-sale"


def device_registrations(codec: Codec, accounts: int, per_account: int) -> list[Record]:
    """Every account's devices: Huawei phones, HUAWEI original route, JPUSH alternative."""
    now_ms = int(time.time() * 1000)
    return [("device.registry", f"dev-{a:06d}-{d}".encode(), codec.encode("DeviceRegistration", {
        "device_id": f"dev-{a:06d}-{d}", "account_id": f"acct-{a:06d}", "manufacturer": "Huawei",
        "model": "P60", "routes": ["HUAWEI", "JPUSH"], "active": True, "registered_at": now_ms}))
        for a in range(accounts) for d in range(per_account)]


def campaign_requests(codec: Codec, accounts: int) -> list[Record]:
    """One request per account with the campaign's id (one message id shared by all accounts)."""
    now_ms = int(time.time() * 1000)
    return [("push.requests", f"acct-{a:06d}".encode(), codec.encode("PushRequest", {
        "message_id": f"{CAMPAIGN}-msg", "account_id": f"acct-{a:06d}", "importance": "NORMAL",
        "title": "Spring sale", "body": "today only", "read_action": "LINK",
        "campaign_id": CAMPAIGN, "device_ids": [], "created_at": now_ms})) for a in range(accounts)]


def largest_changelog_records(settings: Settings, timeout: float = 300.0) -> dict[str, int]:
    """The size in bytes of the largest state value of each table, and of the largest record
    of the state journal that carried them."""
    sizes: dict[str, int] = {}
    for table in ROUTER_TABLES:
        with changelog_tap(settings, table, timeout) as tap:
            tap.drain(timeout)
            sizes[table] = max((len(changelog_bytes(v)) for v in tap.records if v), default=0)
    with Tap(settings, "journal", decode=lambda value: len(value or b""),
             full=journal_topic(settings)) as tap:
        tap.drain(timeout)
        sizes["journal record"] = max(tap.records, default=0)
    return sizes


def campaign_figures(sends: Tap, decision: dict[str, Any], receipt_deadline: float,
                     targets: int) -> dict[str, Any]:
    """Decision time after the last target, fallback rate, and what each device got."""
    original = [r for r in sends.records if r["reason"] == "ORIGINAL_ROUTE"]
    fallback = sorted(created for created, r in zip(sends.created, sends.records, strict=True)
                      if r["reason"] == "FALLBACK_ROUTE")
    per_device = Counter(r["device_id"] for r in sends.records if r["reason"] == "FALLBACK_ROUTE")
    last_due = max(r["sent_at"] for r in original) + receipt_deadline * 1000
    span = (fallback[-1] - fallback[0]) / 1000 if len(fallback) > 1 else 0.0
    return {
        "targets": len(original), "expected_targets": targets,
        "decision": {k: decision[k] for k in ("targeted", "acked", "ratio", "fallback")},
        "decision_after_last_target_ms": decision["decided_at"] - last_due,
        "fallback_sends": len(fallback), "devices_with_one_fallback": sum(
            1 for n in per_device.values() if n == 1),
        "fallback_sends_per_s": round(len(fallback) / span, 1) if span else None,
        "last_fallback_after_decision_ms": fallback[-1] - decision["decided_at"]
        if fallback else None,
    }


def run_campaign_bench(accounts: int = 50000, devices: int = 4, receipt_deadline: float = 20.0,
                       var_dir: Path = Path("var/bench"), log: Log = quiet) -> dict[str, Any]:
    """One campaign to accounts x devices silent devices: decision time, fallback rate, sizes."""
    targets = accounts * devices
    with tempfile.TemporaryDirectory(prefix="pushcascade-bench-") as tmp, \
            bench_kafka(var_dir, log) as bootstrap:
        workdir = Path(tmp)
        settings = fresh_settings(bootstrap, "campaign")
        codec = Codec()
        produce(settings, device_registrations(codec, accounts, devices))
        worker = start_worker(bench_env(settings, receipt_deadline=receipt_deadline), workdir,
                              "campaign-router")
        try:
            start = time.monotonic()
            wait_idle(settings, timeout=1800, workers=[worker])
            log(f"campaign: {targets} devices registered in {time.monotonic() - start:.0f}s")
            produced = time.monotonic()
            produce(settings, campaign_requests(codec, accounts))
            log(f"campaign: {accounts} requests produced; waiting for the decision")
            with Tap(settings, "campaign.decisions") as decisions:
                decisions.wait_for(lambda rs: len(rs) >= 1, timeout=1800, workers=[worker])
            log(f"campaign: decided {time.monotonic() - produced:.0f}s after the requests")
            wait_idle(settings, timeout=1800, workers=[worker])
        except BaseException:
            keep_logs(workdir, var_dir)
            raise
        finally:
            worker.stop()
        with Tap(settings, "push.sends") as sends:
            sends.drain(600)
        result = campaign_figures(sends, decisions.records[0], receipt_deadline, targets)
        result["decisions"] = len(decisions.records)
        result["largest_changelog_record_bytes"] = largest_changelog_records(settings)
    result.update({"accounts": accounts, "devices_per_account": devices,
                   "receipt_deadline_s": receipt_deadline, "worker_warnings": worker.warnings()})
    return result

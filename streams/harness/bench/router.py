"""The router benchmark: the router against a bare Faust agent, and read-deadline lateness.

Router runs: one profile per account (phone and WeChat openid: WECHAT primary, SMS to escalate
to) is produced first, the router worker is started, and the bench waits until the router's
consumer group has committed every registration offset, then until one sentinel request per
partition has its send. Only then are the N requests produced (encoded beforehand, so producing
takes milliseconds), each for an ESTABLISHED account (PUSHCASCADE_NEW_ACCOUNT_PUSHES=0): exactly
one PRIMARY send and one pending read deadline each. No devices are registered: an APP send would
add Method B's per-device deliveries and receipt deadlines to what is measured. The rate is
N / (CreateTime of the N-th output record - CreateTime of the first).

Lateness run: P more such requests arriving at A per second (default: half the measured router
rate), every read deadline set to D (default: P / A + 20 s, so all P are pending before the
first comes due; `pending_at_first_due` checks it). A request's deadline counts from its
arrival (its CreateTime), so the deadlines come due at A per second too, as they would in
production; a burst of P would make them all due in the same second and measure the firing
rate instead. push.escalations is tailed live: lateness = time seen - deadline_at, and also
fired_at - deadline_at from the record; repeats are counted by message_id. The worker's RSS is
sampled every second (its peak is reported).
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from schemas import Codec, key_partition
from streams.harness.bench.common import (
    LONG_DEADLINE,
    Log,
    Output,
    Record,
    account_ids,
    bench_env,
    bench_kafka,
    distinct_messages,
    fresh_settings,
    keep_logs,
    produce,
    push_requests,
    quiet,
    read_outputs,
    summary_ms,
)
from streams.harness.bench.soak import Sampler
from streams.harness.broker import free_port
from streams.harness.processes import Process, start_python, start_worker, worker_events
from streams.harness.taps import Ends, Tap, wait_committed
from streams.settings import Settings

# -- records -----------------------------------------------------------------------------------


def registrations(codec: Codec, accounts: Sequence[str], now_ms: int) -> list[Record]:
    """One profile per account: WECHAT (primary) and SMS (escalation target) enabled."""
    return [("account.profiles", a.encode(), codec.encode("AccountProfile", {
        "account_id": a, "phone": "+8613800000000", "wechat_openid": f"o-{a}", "email": None,
        "updated_at": now_ms})) for a in accounts]


def sentinels(codec: Codec, accounts: Sequence[str], partitions: int,
              tag: str = "s") -> list[Record]:
    """One push request per partition, for the first account that partition owns."""
    owners: dict[int, str] = {}
    for a in accounts:
        owners.setdefault(key_partition(a, partitions), a)
    return [rec for p, a in sorted(owners.items())
            for rec in push_requests(codec, [a], 1, f"sentinel-{tag}-{p}")]


# -- workers and their outputs -----------------------------------------------------------------


def start_router(settings: Settings, workdir: Path, deadline: float, name: str,
                 **tuning: Any) -> Process:
    """The router (`python -m streams.cli worker`) with every read deadline set to `deadline`."""
    deadlines = {f"read_deadline_{i}": deadline for i in ("low", "normal", "high", "urgent")}
    return start_worker(bench_env(settings, **deadlines, **tuning), workdir, name)


def start_baseline(settings: Settings, workdir: Path, name: str) -> Process:
    """The bare Faust agent (`python -m streams.harness.bench baseline-worker`)."""
    return start_python("streams.harness.bench", "baseline-worker", env=bench_env(settings),
                        workdir=workdir, name=name)


@dataclass
class Outputs:
    """Records of one output topic with the wanted message ids: first of each, and repeats."""

    first: dict[str, Output] = field(default_factory=dict)
    repeats: int = 0
    reasons: Counter[str] = field(default_factory=Counter)


def collect_outputs(settings: Settings, name: str, expect: int, tag: str,
                    worker: Process | None = None, timeout: float = 120.0) -> Outputs:
    """Read a topic from the beginning until `expect` distinct message ids `tag*` were seen."""
    got = read_outputs(settings, name, tag, distinct_messages(expect), timeout, worker)
    out = Outputs()
    for created, rec in got:
        out.reasons[rec.get("reason", "-")] += 1
        if rec["message_id"] in out.first:
            out.repeats += 1
        else:
            out.first[rec["message_id"]] = (created, rec)
    if len(out.first) < expect:
        raise TimeoutError(f"{name}: {len(out.first)}/{expect} outputs within {timeout}s")
    return out


# -- the measured subjects ---------------------------------------------------------------------


def throughput(subject: str, out: Outputs, count: int, preload_s: float,
               worker: Process) -> dict[str, Any]:
    """Rate = N / (timestamp of the N-th output - timestamp of the first), and the details."""
    stamps = sorted(ts for ts, _ in out.first.values())[:count]
    seconds = (stamps[-1] - stamps[0]) / 1000 if len(stamps) > 1 else 0.0
    return {"subject": subject, "events": len(stamps), "seconds": round(seconds, 3),
            "rate": round(len(stamps) / seconds, 1) if seconds > 0 else float("nan"),
            "repeated_outputs": out.repeats, "reasons": dict(out.reasons),
            "preload_seconds": round(preload_s, 3), "worker_warnings": worker.warnings()}


def measure_baseline(bootstrap: str, requests: int, accounts: int, workdir: Path,
                     log: Log = quiet) -> dict[str, Any]:
    """Bare Faust agent (one table write, one send per event) over N preloaded requests."""
    settings = fresh_settings(bootstrap, "baseline")
    ends: Ends = {}
    preload = produce(settings, push_requests(Codec(), account_ids(accounts), requests, "base"),
                      ends)
    log(f"baseline: {requests} requests preloaded in {preload:.1f}s; starting the agent")
    worker = start_baseline(settings, workdir, f"baseline-{settings.tuning.topic_prefix[:-1]}")
    try:
        wait_committed(settings, ends, timeout=120 + requests / 100, workers=[worker])
    finally:
        worker.stop()
    out = collect_outputs(settings, "push.sends", requests, "base-")
    return throughput("baseline", out, requests, preload, worker)


def start_registered_router(settings: Settings, accounts: Sequence[str], workdir: Path,
                            deadline: float, log: Log, workers: int = 1) -> list[Process]:
    """Preload registrations, start the router worker(s), return once every account has its
    channels and, with several workers, each of them owns partitions (it sent a sentinel)."""
    codec = Codec()
    regs = registrations(codec, accounts, int(time.time() * 1000))
    ends: Ends = {}
    produce(settings, regs, ends)
    name = f"router-{settings.tuning.topic_prefix[:-1]}"
    ports = [free_port() if workers > 1 else 0 for _ in range(workers)]
    started = [start_router(settings, workdir, deadline, f"{name}-{i}", metrics_port=port)
               for i, port in enumerate(ports)]
    try:
        start = time.monotonic()
        wait_committed(settings, ends, timeout=120 + len(regs) / 100, workers=started)
        for attempt in range(30):
            probes = sentinels(codec, accounts, settings.tuning.partitions, f"s{attempt}")
            produce(settings, probes)
            got = collect_outputs(settings, "push.sends", len(probes), f"sentinel-s{attempt}-",
                                  started[0])
            busy = [port for port in ports if port and worker_events(port).get(
                ("router", "send_PRIMARY"), 0) > 0]
            if workers == 1 or len(busy) == workers:
                break
            time.sleep(2)  # the group is still settling: send sentinels again
        channels = sorted({rec["channel"] for _, rec in got.first.values()})
        log(f"router: {len(regs)} registrations applied by {workers} worker(s), sentinel sends "
            f"on {channels}, {time.monotonic() - start:.1f}s after the worker(s) started")
    except BaseException:
        for worker in started:
            worker.stop()
        raise
    return started


def measure_router(bootstrap: str, requests: int, accounts: int, workdir: Path,
                   log: Log = quiet, workers: int = 1) -> dict[str, Any]:
    """The router over N requests for registered, ESTABLISHED accounts (one PRIMARY send each),
    on one worker or several sharing the partitions."""
    settings = fresh_settings(bootstrap, "router")
    ids = account_ids(accounts)
    started = start_registered_router(settings, ids, workdir, LONG_DEADLINE, log, workers)
    try:
        batch = push_requests(Codec(), ids, requests, "req")
        ends: Ends = {}
        preload = produce(settings, batch, ends)
        log(f"router: {requests} requests produced in {preload:.2f}s")
        wait_committed(settings, ends, timeout=120 + requests / 100, workers=started)
    finally:
        for worker in started:
            worker.stop()
    out = collect_outputs(settings, "push.sends", requests, "req-")
    return throughput(f"router x{workers}", out, requests, preload, started[0])


def trend_ms(pairs: Sequence[tuple[float, float]], parts: int = 10) -> list[float]:
    """Median lateness of each tenth of the (deadline, lateness) pairs, earliest deadlines first."""
    ordered = [late for _, late in sorted(pairs)]
    size = max(1, len(ordered) // parts)
    return [round(statistics.median(ordered[i:i + size]), 1)
            for i in range(0, size * parts, size) if ordered[i:i + size]]


Escalations = dict[str, list[tuple[float, int, int]]]  # message id -> [(seen, deadline, fired)]


def watch_escalations(settings: Settings, worker: Process, pending: int, give_up: float,
                      log: Log) -> Escalations:
    """Collect push.escalations live until all P escalated (and 3 s quiet) or it stalls.

    Only escalations are tailed live: tailing push.sends would halve the measured worker's rate."""
    escalations: Escalations = {}
    last_progress = time.monotonic()
    with Tap(settings, "push.escalations", fetch_wait_ms=100) as tap:
        while time.monotonic() < give_up:
            worker.check()
            first = len(tap.records)
            tap.poll(0.2)
            now = time.monotonic()
            for seen, rec in zip(tap.seen_at[first:], tap.records[first:], strict=True):
                if rec["message_id"].startswith("late-"):
                    last_progress = now
                    escalations.setdefault(rec["message_id"], []).append(
                        (seen, rec["deadline_at"], rec["fired_at"]))
            if len(escalations) >= pending and now - last_progress > 3:
                break
            if escalations and now - last_progress > 60:
                log("deadline: no escalation for 60s; giving up")
                break
    return escalations


def measure_lateness(bootstrap: str, pending: int, accounts: int, deadline: float,
                     arrival: float, workdir: Path, log: Log = quiet) -> dict[str, Any]:
    """P requests arriving at `arrival` per second with one read deadline each; how late, and
    how often, each escalates; the worker's peak RSS."""
    settings = fresh_settings(bootstrap, "deadline")
    ids = account_ids(accounts)
    (worker,) = start_registered_router(settings, ids, workdir, deadline, log)
    sampler = Sampler({"worker": worker.pid}, interval=1.0)
    sampler.start()
    try:
        batch = push_requests(Codec(), ids, pending, "late")
        ends: Ends = {}
        produced_at, give_up = time.time(), time.monotonic() + deadline + 300 + pending / 100
        log(f"deadline: producing {pending} requests at {arrival:.0f}/s; read deadline "
            f"{deadline:.0f}s")
        produce(settings, batch, ends, rate=arrival)
        log(f"deadline: {pending} requests produced in {time.time() - produced_at:.0f}s")
        ingest = wait_committed(settings, ends, timeout=deadline + pending / 100,
                                workers=[worker])
        log(f"deadline: all {pending} requests processed {ingest:.1f}s after producing")
        escalations = watch_escalations(settings, worker, pending, give_up, log)
        early = lateness_result(pending, deadline, produced_at, {}, escalations)
        log(f"deadline: {early['escalated']} escalated ({early['escalated_exactly_once']} "
            f"exactly once, {early['missing']} missing); lateness seen "
            f"{early['lateness_seen_ms']}, fired {early['lateness_fired_ms']} (before the "
            f"sends are read back, which is slow for large runs)")
    finally:
        sampler.stopped.set()
        worker.stop()
    sends = collect_outputs(settings, "push.sends", pending, "late-",
                            timeout=60 + pending / 500)  # Tansu fetches big partitions slowly
    sent_at = {mid: rec["sent_at"] for mid, (_, rec) in sends.first.items()}
    result = lateness_result(pending, deadline, produced_at, sent_at, escalations)
    result["arrival_per_s"] = round(arrival, 1)
    result["worker_peak_rss_mib"] = max(
        (s["rss_mib"].get("worker", 0.0) for s in sampler.samples), default=None)
    result["worker_warnings"] = worker.warnings()
    return result


def lateness_result(pending: int, deadline: float, produced_at: float, sent_at: dict[str, int],
                    escalations: Escalations) -> dict[str, Any]:
    """Lateness percentiles, duplicate and missing counts, and whether all P were pending."""
    firsts = [v[0] for v in escalations.values()]
    seen_ms = [s * 1000 - d for s, d, _ in firsts]
    fired_ms = [float(f - d) for _, d, f in firsts]
    first_due = min((d for _, d, _ in firsts), default=0)
    esc_times = sorted(s for s, _, _ in firsts)
    esc_span = esc_times[-1] - esc_times[0] if len(esc_times) > 1 else 0.0
    last_sent = max(sent_at.values(), default=0)
    return {
        "pending": pending, "read_deadline_s": deadline,
        "ingest_seconds": round(last_sent / 1000 - produced_at, 1) if last_sent else None,
        "primary_sends": len(sent_at),
        "pending_at_first_due": sum(1 for at in sent_at.values() if at < first_due),
        "escalated": len(escalations),
        "escalated_exactly_once": sum(1 for v in escalations.values() if len(v) == 1),
        "duplicates": sum(len(v) - 1 for v in escalations.values()),
        "missing": pending - len(escalations),
        "escalations_per_s": round(len(esc_times) / esc_span, 1) if esc_span else None,
        "lateness_seen_ms": summary_ms(seen_ms), "lateness_fired_ms": summary_ms(fired_ms),
        "lateness_seen_ms_by_tenth": trend_ms([(d, s * 1000 - d) for s, d, _ in firsts]),
    }


# -- the whole benchmark -----------------------------------------------------------------------


def auto_arrival(router_rate: float) -> float:
    """The lateness run's arrival rate: half the router's measured rate (1,000/s unmeasured)."""
    return router_rate / 2 if router_rate == router_rate and router_rate > 0 else 1000.0


def auto_deadline(pending: int, arrival: float) -> float:
    """A read deadline long enough that all P requests are pending before the first is due."""
    return float(max(60, round(pending / arrival + 20)))


def run_router_bench(requests: int = 30000, accounts: int = 5000, pending: int = 100000,
                     deadline: float | None = None, arrival: float | None = None,
                     repeat: int = 2,
                     var_dir: Path = Path("var/bench"), log: Log = quiet,
                     scale: bool = True) -> dict[str, Any]:
    """Baseline and router alternated `repeat` times, then two workers against one, then the
    lateness run; all figures."""
    runs: list[dict[str, Any]] = []
    scaling: dict[str, Any] | None = None
    with tempfile.TemporaryDirectory(prefix="pushcascade-bench-") as tmp, \
            bench_kafka(var_dir, log) as bootstrap:
        workdir = Path(tmp)
        try:
            for i in range(repeat):
                base = measure_baseline(bootstrap, requests, accounts, workdir, log)
                log(f"[{i + 1}/{repeat}] baseline {base['rate']:.0f} events/s")
                router = measure_router(bootstrap, requests, accounts, workdir, log)
                log(f"[{i + 1}/{repeat}] router {router['rate']:.0f} requests/s")
                runs.append({"baseline": base, "router": router,
                             "ratio": round(router["rate"] / base["rate"], 3)})
            router_rate = statistics.median(r["router"]["rate"] for r in runs)
            if scale:
                one = measure_router(bootstrap, requests, accounts, workdir, log)
                two = measure_router(bootstrap, requests, accounts, workdir, log, workers=2)
                scaling = {"one_worker": one, "two_workers": two,
                           "ratio": round(two["rate"] / one["rate"], 3)}
                log(f"scale: one worker {one['rate']:.0f}/s, two {two['rate']:.0f}/s")
            late = None
            if pending > 0:
                rate = arrival or auto_arrival(router_rate)
                chosen = deadline or auto_deadline(pending, rate)
                late = measure_lateness(bootstrap, pending, accounts, chosen, rate, workdir,
                                        log)
        except BaseException:
            keep_logs(workdir, var_dir)
            raise
    return {
        "requests": requests, "accounts": accounts, "repeat": repeat, "runs": runs,
        "baseline_rate_median": statistics.median(r["baseline"]["rate"] for r in runs),
        "router_rate_median": router_rate,
        "ratio_median": statistics.median(r["ratio"] for r in runs),
        "scaling": scaling,
        "lateness": late,
    }


"""The whole pipeline end to end: push requests in, provider calls out.

Reference: a bare confluent-kafka passthrough (consume a request, produce it as-is to another
topic, commit), in this process, on the same broker in the same run. Subject: the supervised
loop (streams.harness.loop) with 1, then 2, stream workers, the dispatcher and the provider
simulator. Accounts are ESTABLISHED with a phone number (one PRIMARY SMS send per request, no
reads, no devices: nothing but the request's own path). N requests are preloaded once the loop
is ready; the rate is N / (time from the first provider call to the last), a provider call's
time being its DispatchIntent's `at` (written just before the call), and the latency of each
request from its `created_at` to that call.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from confluent_kafka import TopicPartition

from schemas import Codec
from streams.harness.bench.common import (
    Log,
    account_ids,
    bench_kafka,
    fresh_settings,
    keep_logs,
    produce,
    push_requests,
    quiet,
    summary_ms,
)
from streams.harness.bench.router import registrations
from streams.harness.loop import Loop
from streams.harness.taps import Ends, Tap, wait_committed
from streams.kafka import consumer, producer
from streams.settings import Settings

INTENTS = "pushcascade.dispatch-intents"
#: Clock ticks per second of /proc/<pid>/stat's CPU times.
TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds a process (all its threads) has used; None once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime (fields 14 and 15)


def cpu_shares(before: dict[str, float | None], after: dict[str, float | None],
               seconds: float) -> dict[str, float]:
    """Each process's CPU use between two readings, in cores (1.0: one core busy)."""
    return {name: round((after[name] or 0.0) - (before[name] or 0.0), 2) / seconds
            for name in before if before[name] is not None and after.get(name) is not None
            and seconds > 0}


def passthrough(settings: Settings, requests: int, accounts: int) -> dict[str, Any]:
    """Bare confluent-kafka: consume each request, produce it to push.sends, commit; rate from
    the first consumed record to the last produced one."""
    ids = account_ids(accounts)
    ends: Ends = {}
    produce(settings, push_requests(Codec(), ids, requests, "pass"), ends)
    bootstrap = settings.connections.kafka_bootstrap_servers
    source = consumer(bootstrap, settings.topic("bench-passthrough"))
    sink = producer(bootstrap, **{"linger.ms": 5})
    topic, out = settings.topic("push.requests"), settings.topic("push.sends")
    source.assign([TopicPartition(topic, p, 0) for p in range(settings.tuning.partitions)])
    seen, first, deadline = 0, 0.0, time.monotonic() + 120
    while seen < requests and time.monotonic() < deadline:
        batch = [m for m in source.consume(1000, 0.2) if m.error() is None]
        if batch and not first:
            first = time.monotonic()
        for m in batch:
            sink.produce(out, key=m.key(), value=m.value())
        sink.poll(0)
        if batch:
            source.commit(asynchronous=True)
        seen += len(batch)
    sink.flush(30)
    seconds = time.monotonic() - first
    source.close()
    return {"subject": "passthrough", "requests": seen, "seconds": round(seconds, 3),
            "rate": round(seen / seconds, 1) if seconds > 0 else None}


def through_loop(bootstrap: str, requests: int, accounts: int, workers: int, var_dir: Path,
                 log: Log, pace: float | None = None) -> dict[str, Any]:
    """The loop with `workers` stream workers: requests/s to the provider and latency, the
    requests all at once, or `pace` per second (each one's latency from its own produce)."""
    subject = f"pipeline x{workers}" + (f" at {pace:,.0f}/s" if pace else "")
    settings = fresh_settings(bootstrap, f"pipeline{workers}{'p' if pace else ''}")
    settings = Settings(topic_prefix=settings.tuning.topic_prefix,
                        kafka_bootstrap_servers=bootstrap,
                        clickhouse_dsn=f"chdb://{(var_dir / f'pipeline{workers}-chdb').resolve()}")
    ids = account_ids(accounts)
    regs: Ends = {}
    produce(settings, registrations(Codec(), ids, int(time.time() * 1000)), regs)
    workdir = var_dir / f"pipeline{workers}{'-paced' if pace else ''}"
    workdir.mkdir(parents=True, exist_ok=True)
    with Loop(settings, workdir, "pipeline", workers=workers, profile={},
              new_account_pushes=0, read_deadline_normal=7 * 86400) as loop:
        try:
            wait_committed(settings, regs, timeout=180, workers=loop.procs)
            time.sleep(3.0)  # every worker holds its partitions
            batch = push_requests(Codec(), ids, requests, "pipe")
            # every process's CPU while the requests flow (the provider simulator is a thread
            # of this bench process: "bench + simulator")
            pids = {p.name.removeprefix("pipeline-"): p.pid for p in loop.procs}
            pids["bench + simulator"] = os.getpid()
            cpu_before = {name: cpu_seconds(pid) for name, pid in pids.items()}
            produced = time.time()
            produce(settings, batch, rate=pace)
            with Tap(settings, INTENTS) as tap:
                tap.wait_for(lambda rs: len({r["send_id"] for r in rs}) >= requests,
                             timeout=120 + requests / 20, workers=loop.procs)
                intents = list(tap.records)
            cpu = cpu_shares(cpu_before, {name: cpu_seconds(pid) for name, pid in pids.items()},
                             time.time() - produced)
        except BaseException:
            keep_logs(workdir, var_dir)
            raise
    first: dict[str, int] = {}
    for r in intents:
        first.setdefault(r["message_id"], r["at"])
    calls = sorted(first.values())
    created = {f"pipe-{i}": (produced + (i / pace if pace else 0)) * 1000
               for i in range(requests)}
    seconds = (calls[-1] - calls[0]) / 1000 if len(calls) > 1 else 0.0
    return {"subject": subject, "requests": len(calls),
            "seconds": round(seconds, 3),
            "rate": round(len(calls) / seconds, 1) if seconds > 0 else None,
            "request_to_provider_ms": summary_ms([at - created[m] for m, at in first.items()
                                                  if m in created]),
            "cpu_cores": dict(sorted(cpu.items(), key=lambda kv: -kv[1]))}


def run_pipeline_bench(requests: int = 3000, accounts: int = 1000,
                       var_dir: Path = Path("var/bench"), log: Log = quiet) -> dict[str, Any]:
    """The passthrough reference and the loop with one and two workers, in one run."""
    with bench_kafka(var_dir, log) as bootstrap:
        reference = passthrough(fresh_settings(bootstrap, "passthrough"), requests, accounts)
        log(f"pipeline: passthrough {reference['rate']}/s")
        runs = []
        for workers in (1, 2):
            run = through_loop(bootstrap, requests, accounts, workers, var_dir, log)
            run["ratio_to_passthrough"] = round(run["rate"] / reference["rate"], 4) \
                if run["rate"] and reference["rate"] else None
            log(f"pipeline: {workers} worker(s) {run['rate']}/s, "
                f"p50/p99 {run['request_to_provider_ms']['p50']}/"
                f"{run['request_to_provider_ms']['p99']} ms")
            runs.append(run)
        if runs[0]["rate"]:  # latency at half the rate one worker carries, for 10 s
            pace = runs[0]["rate"] / 2
            paced = through_loop(bootstrap, int(pace * 10), accounts, 1, var_dir, log, pace)
            log(f"pipeline: 1 worker at {pace:,.0f}/s: p50/p99 "
                f"{paced['request_to_provider_ms']['p50']}/"
                f"{paced['request_to_provider_ms']['p99']} ms")
            runs.append(paced)
    return {"requests": requests, "accounts": accounts, "passthrough": reference,
            "runs": runs, "two_over_one": round(runs[1]["rate"] / runs[0]["rate"], 3)
            if runs[0]["rate"] and runs[1]["rate"] else None}

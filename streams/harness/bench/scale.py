"""Scaling under steady load: one worker, then a second joins, then one is stopped (SIGTERM).

Accounts get a profile (WECHAT primary, SMS to escalate to); once the first worker applied
them, a load thread produces push requests at a steady rate for the whole run. Every
`escalate_every`-th request is HIGH with a short read deadline and is never read, so it must
escalate to SMS exactly once; the others are NORMAL with a deadline beyond the run. Phases:

1. **one**: worker A alone;
2. **two**: worker B joins (timed from its /readyz), the partitions split between them;
3. **takeover**: B gets SIGTERM and A takes its partitions back.

Each worker's partitions are read from its `pushcascade_consumer_lag` gauge (one series per
partition it holds). After the load stops and A committed everything, push.sends is read
once: throughput per phase from the sends' CreateTime (no tailing while the workers run: it
costs the embedded broker CPU), takeover as the longest silence of any partition after the
SIGTERM, and every escalation counted by its distinct send_ids.
"""

from __future__ import annotations

import shutil
import threading
import time
import urllib.request
from collections import Counter, defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from schemas import Codec
from streams.app import TANSU_SESSION_TIMEOUT
from streams.harness.bench.common import (
    LONG_DEADLINE,
    Log,
    account_ids,
    bench_env,
    bench_kafka,
    fresh_settings,
    keep_logs,
    produce,
    quiet,
)
from streams.harness.bench.router import registrations
from streams.harness.broker import free_port
from streams.harness.processes import Process, start_worker
from streams.harness.taps import Ends, Tap, committed, drain, wait_committed
from streams.kafka import producer
from streams.settings import Settings

TICK = 0.05  # seconds between two bursts of the load thread


class Load(threading.Thread):
    """Produces push requests at a steady rate until stopped; remembers what it wrote."""

    def __init__(self, settings: Settings, accounts: Sequence[str], rate: float,
                 escalate_every: int) -> None:
        super().__init__(name="load", daemon=True)
        self.settings, self.accounts, self.rate = settings, accounts, rate
        self.escalate_every = escalate_every
        self.codec = Codec()
        self.ends: Ends = {}
        self.high: list[str] = []
        self.count = 0
        self.failed: list[str] = []
        self.stopped = threading.Event()

    def run(self) -> None:
        """Bursts every TICK seconds, each bringing the total to rate x elapsed."""
        out = producer(self.settings.connections.kafka_bootstrap_servers, **{"linger.ms": 5})
        topic = self.settings.topic("push.requests")
        start = time.monotonic()
        while not self.stopped.is_set():
            due = int((time.monotonic() - start) * self.rate)
            while self.count < due:
                self._one(out, topic)
            out.poll(0)
            time.sleep(TICK)
        if out.flush(60):
            self.failed.append("requests unconfirmed at the end")

    def _one(self, out: Any, topic: str) -> None:
        i = self.count
        account = self.accounts[i % len(self.accounts)]
        high = i % self.escalate_every == 0
        message_id = f"load-{i}"
        if high:
            self.high.append(message_id)
        value = self.codec.encode("PushRequest", {
            "message_id": message_id, "account_id": account,
            "importance": "HIGH" if high else "NORMAL", "title": "t", "body": "b",
            "read_action": "BUTTON", "campaign_id": None, "device_ids": [],
            "created_at": int(time.time() * 1000)})
        while True:
            try:
                out.produce(topic, key=account.encode(), value=value, on_delivery=self._delivered)
                break
            except BufferError:
                out.poll(0.05)
        self.count += 1

    def _delivered(self, err: Any, msg: Any) -> None:
        if err is not None:
            self.failed.append(str(err))
            return
        tp = (msg.topic(), msg.partition())
        self.ends[tp] = max(self.ends.get(tp, 0), msg.offset() + 1)


def owned(port: int, topic: str) -> list[int]:
    """The partitions of `topic` a worker holds, from its consumer-lag gauge."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as page:
            text = page.read().decode()
    except OSError:
        return []
    return sorted(int(s.labels["partition"]) for f in text_string_to_metric_families(text)
                  for s in f.samples if s.name == "pushcascade_consumer_lag"
                  and s.labels.get("topic") == topic)


def ready(port: int) -> bool:
    """Whether a worker answers 200 on /readyz."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5) as answer:
            return bool(answer.status == 200)
    except OSError:
        return False


def behind(settings: Settings, load: Load) -> dict[int, int]:
    """Requests produced but not committed by the workers' group (now), per partition."""
    ends = dict(load.ends)
    have = committed(settings, ends)
    return {tp[1]: max(0, end - have[tp]) for tp, end in sorted(ends.items())}


def run_scale_bench(rate: float = 4000.0, phase: float = 15.0, accounts: int = 5000,
                    escalate_every: int = 20, deadline: float = 5.0,
                    store: str = "rocksdb://", standby: int = 1,
                    var_dir: Path = Path("var/bench"), log: Log = quiet) -> dict[str, Any]:
    """The three phases at `rate` requests/s, `phase` seconds each; figures as a dict.

    The workers keep their tables in `store` with `standby` warm copies (the production
    profile: RocksDB, one standby), so a takeover has only the tail of a changelog to read."""
    with bench_kafka(var_dir, log) as bootstrap:
        settings = fresh_settings(bootstrap, "scale")
        workdir = var_dir / "scale"
        shutil.rmtree(workdir, ignore_errors=True)  # the last run's RocksDB stores and logs
        workdir.mkdir(parents=True, exist_ok=True)
        ids = account_ids(accounts)
        requests = settings.topic("push.requests")
        ports = {"A": free_port(), "B": free_port()}
        env = {name: bench_env(settings, read_deadline_high=deadline,
                               read_deadline_normal=LONG_DEADLINE, metrics_port=port,
                               store=store, standby_replicas=standby)
               for name, port in ports.items()}
        regs: Ends = {}
        produce(settings, registrations(Codec(), ids, int(time.time() * 1000)), regs)
        workers: dict[str, Process] = {
            "A": start_worker(env["A"], workdir, "scale-A", loglevel="info")}
        load = Load(settings, ids, rate, escalate_every)
        marks: dict[str, float] = {}
        split: dict[str, dict[str, list[int]]] = {}
        lag: dict[str, dict[int, int]] = {}
        try:
            wait_committed(settings, regs, timeout=180, workers=list(workers.values()))
            log(f"scale: {accounts} accounts registered; load at {rate:.0f} requests/s")
            load.start()
            marks["one"] = time.time()
            time.sleep(phase)
            split["one"] = {"A": owned(ports["A"], requests)}
            lag["one"] = behind(settings, load)
            log(f"scale: one worker holds {split['one']['A']}, "
                f"{sum(lag['one'].values())} requests behind (per partition {lag['one']})")
            marks["join"] = time.time()
            workers["B"] = start_worker(env["B"], workdir, "scale-B", loglevel="info")
            end = time.monotonic() + 120
            while not (ready(ports["B"]) and owned(ports["B"], requests)):
                workers["B"].check()
                if time.monotonic() > end:
                    raise TimeoutError("the second worker got no partition within 120 s")
                time.sleep(0.2)
            marks["two"] = time.time()
            log(f"scale: B ready {marks['two'] - marks['join']:.1f}s after it started")
            time.sleep(phase / 2)
            log(f"scale: halfway with two workers, behind per partition {behind(settings, load)}")
            time.sleep(phase / 2)
            split["two"] = {n: owned(p, requests) for n, p in ports.items()}
            lag["two"] = behind(settings, load)
            log(f"scale: two workers hold {split['two']}, "
                f"{sum(lag['two'].values())} requests behind (per partition {lag['two']})")
            marks["term"] = time.time()
            workers["B"].stop(30)
            marks["exited"] = time.time()
            log(f"scale: B exited {marks['exited'] - marks['term']:.1f}s after SIGTERM")
            time.sleep(phase)
            split["takeover"] = {"A": owned(ports["A"], requests)}
            lag["takeover"] = behind(settings, load)
            log(f"scale: after the SIGTERM, {sum(lag['takeover'].values())} requests behind "
                f"(per partition {lag['takeover']})")
            marks["stop"] = time.time()
            load.stopped.set()
            load.join(60)
            wait_committed(settings, load.ends, timeout=600, workers=[workers["A"]])
            time.sleep(deadline + 3)  # the last HIGH requests' deadlines
            wait_committed(settings, load.ends, timeout=60, workers=[workers["A"]])
        except BaseException:
            keep_logs(workdir, var_dir)
            raise
        finally:
            load.stopped.set()
            for worker in workers.values():
                worker.stop()
        with Tap(settings, "push.sends") as tap:
            drain([tap], timeout=900)
            sends = list(zip(tap.created, tap.records, tap.record_partitions, strict=True))
    result = figures(sends, load, marks, split, lag, phase, deadline, settings.tuning.partitions)
    return {"store": store, "standby_replicas": standby, **result}


def figures(sends: list[tuple[int, dict[str, Any], int]], load: Load, marks: dict[str, float],
            split: dict[str, dict[str, list[int]]], lag: dict[str, dict[int, int]], phase: float,
            deadline: float, partitions: int) -> dict[str, Any]:
    """Throughput per phase, takeover silence, and escalations lost or duplicated."""
    primary = [(ts / 1000, rec, p) for ts, rec, p in sends if rec["reason"] == "PRIMARY"]
    windows = {"one": (marks["one"], marks["join"]), "two": (marks["two"], marks["term"]),
               "takeover": (marks["term"], marks["stop"])}
    rates = {}
    for name, (start, end) in windows.items():
        n = sum(1 for t, _, _ in primary if start <= t < end)
        rates[name] = round(n / (end - start), 1)
    by_partition: dict[int, list[float]] = defaultdict(list)
    for t, _, p in primary:
        if marks["term"] - 1 <= t <= marks["stop"]:
            by_partition[p].append(t)
    silence = {}
    for p in range(partitions):
        times = sorted([marks["term"], *by_partition.get(p, []), marks["stop"]])
        silence[p] = round(max(b - a for a, b in zip(times, times[1:], strict=False)), 2)
    moved = split["two"].get("B", [])
    seen_primary = {rec["message_id"] for _, rec, _ in primary}
    escalations: dict[str, set[str]] = defaultdict(set)
    repeats: Counter[str] = Counter()
    for _, rec, _ in sends:
        if rec["reason"] == "ESCALATION":
            escalations[rec["message_id"]].add(rec["send_id"])
            repeats[rec["send_id"]] += 1
    written = [f"load-{i}" for i in range(load.count)]
    return {
        "rate_offered": load.rate, "phase_seconds": phase, "requests": load.count,
        "produce_failures": len(load.failed),
        "sends_per_s": rates,
        "two_over_one": round(rates["two"] / rates["one"], 3) if rates["one"] else None,
        "behind_at_phase_end": {name: sum(v.values()) for name, v in lag.items()},
        "behind_per_partition": lag,
        "partitions": split,
        "second_ready_after_s": round(marks["two"] - marks["join"], 2),
        "sigterm_exit_s": round(marks["exited"] - marks["term"], 2),
        "takeover_s": max((silence[p] for p in moved), default=None),
        "silence_after_sigterm_s": silence,
        "session_timeout_s": TANSU_SESSION_TIMEOUT,
        "requests_without_send": len([m for m in written if m not in seen_primary]),
        "escalations": {
            "high_requests": len(load.high), "read_deadline_s": deadline,
            "escalated_once": sum(1 for m in load.high if len(escalations[m]) == 1),
            "lost": sum(1 for m in load.high if not escalations[m]),
            "duplicated": sum(1 for m in load.high if len(escalations[m]) > 1),
            "same_send_repeated": sum(n - 1 for n in repeats.values() if n > 1),
        },
    }

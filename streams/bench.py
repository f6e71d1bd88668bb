"""Benchmark plumbing: the router against a bare Faust agent, and deadline lateness.

Every measured subject gets a fresh topic prefix on the same broker, its input preloaded with a
confluent-kafka producer (murmur2 partitioner), and its Faust worker run as a subprocess. The
bench waits until the worker's consumer group has committed the whole input (Faust flushes its
producers before committing), stops the worker, and reads the output topic with a confluent
consumer: the rate is N / (timestamp of the N-th output record - timestamp of the first), the
records' own CreateTime, stamped by the worker's producer when it sent them. Worker start-up,
group join and table recovery are never part of it. The output is not tailed while the worker
runs: on the embedded broker a tailing consumer's fetches cost broker CPU that grows with the
partition, and it halved the baseline's rate (2.8k/s -> 1.3k/s) when tried.

Router runs: one profile per account (phone and WeChat openid: WECHAT primary, SMS to escalate
to) is produced first, the router worker is started, and the bench waits until the router's
consumer group has committed every registration offset, then until one sentinel request per
partition has its send. Only then are the N requests produced (encoded beforehand, so producing
takes milliseconds), each for an ESTABLISHED account (PUSHCASCADE_NEW_ACCOUNT_PUSHES=0): exactly
one PRIMARY send and one pending read deadline each. No devices are registered: an APP send would
add Method B's per-device deliveries and receipt deadlines to what is measured.

Lateness run: P more such requests, every read deadline set to D (default: 1.5 x P / the measured
router rate + 20 s, so all P are pending before the first comes due; `pending_at_first_due`
checks it). push.escalations is tailed live: lateness = time seen - deadline_at, and also
fired_at - deadline_at from the record; repeats are counted by message_id.

Run `python -m streams.bench baseline-worker` (environment as for `pushcascade worker`) to start
the baseline agent on its own.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from schemas import Codec, key_partition
from streams.embedded import _die_with_parent, start_broker
from streams.kafka import consumer, producer
from streams.settings import Settings
from streams.topics import create_topics

Log = Callable[[str], None]
Record = tuple[str, bytes, bytes]  # (unprefixed topic, key, value)
Ends = dict[tuple[str, int], int]  # (full topic, partition) -> offset after the last record

#: Environment every benchmarked worker gets, on top of the caller's.
WORKER_ENV = {"PUSHCASCADE_NEW_ACCOUNT_PUSHES": "0", "PUSHCASCADE_STORE": "memory://",
              "PUSHCASCADE_METRICS_PORT": "0"}
LONG_DEADLINE = 7 * 86400.0


def _quiet(_: str) -> None:
    """A log function that says nothing."""


# -- broker and topics -------------------------------------------------------------------------


@contextlib.contextmanager
def bench_broker(var_dir: Path, log: Log = _quiet) -> Iterator[str]:
    """KAFKA_BOOTSTRAP_SERVERS when set, else a fresh embedded broker for the whole run."""
    given = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "")
    if given:
        log(f"using Kafka at {given}")
        yield given
        return
    var_dir.mkdir(parents=True, exist_ok=True)
    broker = start_broker(log_path=var_dir / "broker.log")
    log(f"embedded broker at {broker.bootstrap}")
    try:
        yield broker.bootstrap
    finally:
        broker.stop()


def fresh_settings(bootstrap: str, label: str) -> Settings:
    """Settings with a topic prefix of their own (topics created), so runs never mix."""
    prefix = f"bench-{label}-{uuid.uuid4().hex[:8]}."
    settings = Settings(topic_prefix=prefix, kafka_bootstrap_servers=bootstrap)
    create_topics(settings, bootstrap)
    return settings


def group_id(settings: Settings) -> str:
    """The consumer group (= Faust app id) of the app streams.app.create_app makes."""
    return f"{settings.tuning.topic_prefix}pushcascade"


# -- records -----------------------------------------------------------------------------------


def account_ids(count: int) -> list[str]:
    """Account ids acct-000000 ... of the benchmark."""
    return [f"acct-{i:06d}" for i in range(count)]


def registrations(codec: Codec, accounts: Sequence[str], now_ms: int) -> list[Record]:
    """One profile per account: WECHAT (primary) and SMS (escalation target) enabled."""
    return [("account.profiles", a.encode(), codec.encode("AccountProfile", {
        "account_id": a, "phone": "+8613800000000", "wechat_openid": f"o-{a}", "email": None,
        "updated_at": now_ms})) for a in accounts]


def sentinels(codec: Codec, accounts: Sequence[str], partitions: int) -> list[Record]:
    """One push request per partition, for the first account that partition owns."""
    owners: dict[int, str] = {}
    for a in accounts:
        owners.setdefault(key_partition(a, partitions), a)
    return [rec for p, a in sorted(owners.items())
            for rec in push_requests(codec, [a], 1, f"sentinel-{p}")]


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


def produce(settings: Settings, records: Sequence[Record], ends: Ends | None = None) -> float:
    """Produce records (murmur2 partitioner, keyed), wait for all; seconds taken.

    `ends`, when given, collects the offset after the last record of each partition."""
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

    for name, key, value in records:
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


# -- workers -----------------------------------------------------------------------------------


@dataclass
class Worker:
    """A Faust worker subprocess and its log file."""

    process: subprocess.Popen[bytes]
    log_path: Path

    def check(self) -> None:
        """Raise with the end of the log when the worker has exited."""
        if self.process.poll() is not None:
            raise RuntimeError(f"worker exited with code {self.process.returncode}:\n"
                               f"{self.tail()}")

    def tail(self, lines: int = 30) -> str:
        """The last lines of the worker's log."""
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def warnings(self) -> dict[str, int]:
        """How often each WARNING (numbers replaced by #) appears in the worker's log."""
        counts: Counter[str] = Counter()
        with contextlib.suppress(OSError):
            for line in self.log_path.read_text(errors="replace").splitlines():
                if "[WARNING]" in line:
                    text = line.split("[WARNING]", 1)[1].strip()
                    counts[re.sub(r"\d+(\.\d+)?", "#", text)] += 1
        return dict(counts.most_common(5))

    def stop(self, grace: float = 10.0) -> None:
        """SIGTERM, a bounded wait, then SIGKILL (a Faust worker may hang on shutdown)."""
        if self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(grace)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)


def worker_env(settings: Settings, data_dir: Path, **extra: str) -> dict[str, str]:
    """The environment of a benchmarked worker: broker, prefix, data dir and bench tuning."""
    return {**os.environ, **WORKER_ENV, **extra,
            "KAFKA_BOOTSTRAP_SERVERS": settings.connections.kafka_bootstrap_servers,
            "PUSHCASCADE_TOPIC_PREFIX": settings.tuning.topic_prefix,
            "PUSHCASCADE_DATA_DIR": str(data_dir)}


def start_worker(args: Sequence[str], env: dict[str, str], workdir: Path, name: str) -> Worker:
    """Start `python ARGS` as a worker with its output in workdir/NAME.log."""
    log_path = workdir / f"{name}.log"
    log_file = open(log_path, "ab")  # noqa: SIM115  (the child owns it)
    process = subprocess.Popen([sys.executable, *args], env=env, stdout=log_file,
                               stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                               preexec_fn=_die_with_parent)
    log_file.close()
    return Worker(process, log_path)


def start_router(settings: Settings, workdir: Path, deadline: float, name: str) -> Worker:
    """The router (`python -m streams.cli worker`) with every read deadline set to `deadline`."""
    deadlines = {f"PUSHCASCADE_READ_DEADLINE_{i}": str(deadline)
                 for i in ("LOW", "NORMAL", "HIGH", "URGENT")}
    env = worker_env(settings, workdir / name, **deadlines)
    return start_worker(["-m", "streams.cli", "worker"], env, workdir, name)


def start_baseline(settings: Settings, workdir: Path, name: str) -> Worker:
    """The bare Faust agent (`python -m streams.bench baseline-worker`)."""
    env = worker_env(settings, workdir / name)
    return start_worker(["-m", "streams.bench", "baseline-worker"], env, workdir, name)


# -- reading outputs --------------------------------------------------------------------------


def wait_committed(settings: Settings, ends: Ends, worker: Worker, timeout: float) -> float:
    """Wait until the worker's group committed every offset in `ends`; seconds it took.

    Faust flushes its producers before it commits, so every output of those inputs is written."""
    reader = consumer(settings.connections.kafka_bootstrap_servers, group_id(settings))
    tps = [TopicPartition(t, p) for t, p in ends]
    start = time.monotonic()
    try:
        while True:
            worker.check()
            behind = sum(max(0, ends[(tp.topic, tp.partition)] - max(tp.offset, 0))
                         for tp in reader.committed(tps, timeout=10))
            if not behind:
                return time.monotonic() - start
            if time.monotonic() - start > timeout:
                raise TimeoutError(f"{behind} records not committed within {timeout}s\n"
                                   f"{worker.tail()}")
            time.sleep(0.25)
    finally:
        reader.close()


@dataclass
class Outputs:
    """Records of one output topic with the wanted message ids: first of each, and repeats."""

    first: dict[str, tuple[int, dict[str, Any]]] = field(default_factory=dict)
    repeats: int = 0
    reasons: Counter[str] = field(default_factory=Counter)


def read_outputs(settings: Settings, name: str, expect: int, tag: str,
                 worker: Worker | None = None, timeout: float = 120.0) -> Outputs:
    """Read a topic from the beginning until `expect` distinct message ids `tag-*` were seen."""
    codec = Codec()
    reader = consumer(settings.connections.kafka_bootstrap_servers, f"bench-{uuid.uuid4().hex}",
                      **{"fetch.wait.max.ms": 100})
    full = settings.topic(name)
    parts = reader.list_topics(full, timeout=10).topics[full].partitions
    reader.assign([TopicPartition(full, p, OFFSET_BEGINNING) for p in parts])
    out, deadline = Outputs(), time.monotonic() + timeout
    try:
        while len(out.first) < expect:
            if worker is not None:
                worker.check()
            if time.monotonic() > deadline:
                raise TimeoutError(f"{name}: {len(out.first)}/{expect} outputs within {timeout}s")
            for msg in reader.consume(num_messages=5000, timeout=0.2):
                if msg.error():
                    continue
                rec = codec.decode(msg.value(), topic=name)
                if not rec["message_id"].startswith(tag):
                    continue
                out.reasons[rec.get("reason", "-")] += 1
                if rec["message_id"] in out.first:
                    out.repeats += 1
                else:
                    out.first[rec["message_id"]] = (msg.timestamp()[1], rec)
    finally:
        reader.close()
    return out


class Watch:
    """A live confluent consumer on whole topics from the beginning, stamping arrival times.

    Only for what must be seen live (escalations): on Tansu every fetch of a tailing consumer
    costs broker CPU that grows with the partition, and tailing push.sends halves the rate
    of the very worker being measured; throughput is read afterwards (read_outputs)."""

    def __init__(self, settings: Settings, names: Sequence[str]) -> None:
        self.settings = settings
        self.consumer: Consumer = consumer(
            settings.connections.kafka_bootstrap_servers, f"bench-{uuid.uuid4().hex}",
            **{"fetch.wait.max.ms": 100})
        self.names = [settings.topic(n) for n in names]
        self.assigned: set[str] = set()
        self._assign()

    def _assign(self) -> None:
        """Assign every partition of the watched topics that exist now."""
        meta = self.consumer.list_topics(timeout=10).topics
        todo = [t for t in self.names
                if t in meta and t not in self.assigned and meta[t].partitions]
        if todo:
            self.consumer.incremental_assign([TopicPartition(t, p, OFFSET_BEGINNING)
                                              for t in todo for p in meta[t].partitions])
            self.assigned.update(todo)

    def poll(self, timeout: float = 0.05) -> list[tuple[float, Any]]:
        """Records that arrived, each with time.time() when seen.

        Returns as soon as one record is there (consume(n, timeout) would wait for n)."""
        if len(self.assigned) < len(self.names):
            self._assign()
        first = self.consumer.poll(timeout)
        if first is None:
            return []
        seen = time.time()
        batch = [first, *self.consumer.consume(num_messages=5000, timeout=0)]
        return [(seen, m) for m in batch if not m.error()]

    def close(self) -> None:
        """Close the consumer."""
        self.consumer.close()


# -- the measured subjects ---------------------------------------------------------------------


def throughput(subject: str, out: Outputs, count: int, preload_s: float,
               worker: Worker) -> dict[str, Any]:
    """Rate = N / (timestamp of the N-th output - timestamp of the first), and the details."""
    stamps = sorted(ts for ts, _ in out.first.values())[:count]
    seconds = (stamps[-1] - stamps[0]) / 1000 if len(stamps) > 1 else 0.0
    return {"subject": subject, "events": len(stamps), "seconds": round(seconds, 3),
            "rate": round(len(stamps) / seconds, 1) if seconds > 0 else float("nan"),
            "repeated_outputs": out.repeats, "reasons": dict(out.reasons),
            "preload_seconds": round(preload_s, 3), "worker_warnings": worker.warnings()}


def measure_baseline(bootstrap: str, requests: int, accounts: int, workdir: Path,
                     log: Log = _quiet) -> dict[str, Any]:
    """Bare Faust agent (one table write, one send per event) over N preloaded requests."""
    settings = fresh_settings(bootstrap, "baseline")
    ends: Ends = {}
    preload = produce(settings, push_requests(Codec(), account_ids(accounts), requests, "base"),
                      ends)
    log(f"baseline: {requests} requests preloaded in {preload:.1f}s; starting the agent")
    worker = start_baseline(settings, workdir, f"baseline-{settings.tuning.topic_prefix[:-1]}")
    try:
        wait_committed(settings, ends, worker, timeout=120 + requests / 100)
    finally:
        worker.stop()
    out = read_outputs(settings, "push.sends", requests, "base-")
    return throughput("baseline", out, requests, preload, worker)


def start_registered_router(settings: Settings, accounts: Sequence[str], workdir: Path,
                            deadline: float, log: Log) -> Worker:
    """Preload registrations, start the router, return once every account has its channels."""
    codec = Codec()
    regs = registrations(codec, accounts, int(time.time() * 1000))
    ends: Ends = {}
    produce(settings, regs, ends)
    name = f"router-{settings.tuning.topic_prefix[:-1]}"
    worker = start_router(settings, workdir, deadline, name)
    try:
        start = time.monotonic()
        wait_committed(settings, ends, worker, timeout=120 + len(regs) / 100)
        probes = sentinels(codec, accounts, settings.tuning.partitions)
        produce(settings, probes)
        got = read_outputs(settings, "push.sends", len(probes), "sentinel-", worker)
        channels = sorted({rec["channel"] for _, rec in got.first.values()})
        log(f"router: {len(regs)} registrations applied, sentinel sends on {channels}, "
            f"{time.monotonic() - start:.1f}s after the worker started")
    except BaseException:
        worker.stop()
        raise
    return worker


def measure_router(bootstrap: str, requests: int, accounts: int, workdir: Path,
                   log: Log = _quiet) -> dict[str, Any]:
    """The router over N requests for registered, ESTABLISHED accounts (one PRIMARY send each)."""
    settings = fresh_settings(bootstrap, "router")
    ids = account_ids(accounts)
    worker = start_registered_router(settings, ids, workdir, LONG_DEADLINE, log)
    try:
        batch = push_requests(Codec(), ids, requests, "req")
        ends: Ends = {}
        preload = produce(settings, batch, ends)
        log(f"router: {requests} requests produced in {preload:.2f}s")
        wait_committed(settings, ends, worker, timeout=120 + requests / 100)
    finally:
        worker.stop()
    out = read_outputs(settings, "push.sends", requests, "req-")
    return throughput("router", out, requests, preload, worker)


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


def trend_ms(pairs: Sequence[tuple[float, float]], parts: int = 10) -> list[float]:
    """Median lateness of each tenth of the (deadline, lateness) pairs, earliest deadlines first."""
    ordered = [late for _, late in sorted(pairs)]
    size = max(1, len(ordered) // parts)
    return [round(statistics.median(ordered[i:i + size]), 1)
            for i in range(0, size * parts, size) if ordered[i:i + size]]


Escalations = dict[str, list[tuple[float, int, int]]]  # message id -> [(seen, deadline, fired)]


def watch_escalations(settings: Settings, worker: Worker, pending: int, give_up: float,
                      log: Log) -> Escalations:
    """Collect push.escalations live until all P escalated (and 3 s quiet) or it stalls."""
    codec = Codec()
    watch = Watch(settings, ["push.escalations"])
    escalations: Escalations = {}
    last_progress = time.monotonic()
    try:
        while time.monotonic() < give_up:
            worker.check()
            got = watch.poll(0.2)
            now = time.monotonic()
            for seen, msg in got:
                rec = codec.decode(msg.value(), topic="push.escalations")
                if rec["message_id"].startswith("late-"):
                    last_progress = now
                    escalations.setdefault(rec["message_id"], []).append(
                        (seen, rec["deadline_at"], rec["fired_at"]))
            if len(escalations) >= pending and now - last_progress > 3:
                break
            if escalations and now - last_progress > 60:
                log("deadline: no escalation for 60s; giving up")
                break
    finally:
        watch.close()
    return escalations


def measure_lateness(bootstrap: str, pending: int, accounts: int, deadline: float,
                     workdir: Path, log: Log = _quiet) -> dict[str, Any]:
    """P requests with one read deadline; how late, and how often, each escalates."""
    settings = fresh_settings(bootstrap, "deadline")
    ids = account_ids(accounts)
    worker = start_registered_router(settings, ids, workdir, deadline, log)
    try:
        batch = push_requests(Codec(), ids, pending, "late")
        ends: Ends = {}
        produced_at, give_up = time.time(), time.monotonic() + deadline + 300 + pending / 100
        produce(settings, batch, ends)
        log(f"deadline: {pending} requests produced; read deadline {deadline:.0f}s")
        ingest = wait_committed(settings, ends, worker, timeout=deadline + pending / 100)
        log(f"deadline: all {pending} requests processed {ingest:.1f}s after producing")
        escalations = watch_escalations(settings, worker, pending, give_up, log)
    finally:
        worker.stop()
    sends = read_outputs(settings, "push.sends", pending, "late-", timeout=60)
    sent_at = {mid: rec["sent_at"] for mid, (_, rec) in sends.first.items()}
    result = lateness_result(pending, deadline, produced_at, sent_at, escalations)
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


def auto_deadline(pending: int, router_rate: float) -> float:
    """A read deadline long enough that all P requests are pending before the first is due."""
    rate = router_rate if router_rate == router_rate and router_rate > 0 else 1000.0
    return float(max(60, round(pending / rate * 1.5 + 20)))


def run_router_bench(requests: int = 30000, accounts: int = 5000, pending: int = 100000,
                     deadline: float | None = None, repeat: int = 2,
                     var_dir: Path = Path("var/bench"), log: Log = _quiet) -> dict[str, Any]:
    """Baseline and router alternated `repeat` times, then the lateness run; all figures."""
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="pushcascade-bench-") as tmp, \
            bench_broker(var_dir, log) as bootstrap:
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
            late = None
            if pending > 0:
                chosen = deadline or auto_deadline(pending, router_rate)
                late = measure_lateness(bootstrap, pending, accounts, chosen, workdir, log)
        except BaseException:
            keep_logs(workdir, var_dir)
            raise
    return {
        "requests": requests, "accounts": accounts, "repeat": repeat, "runs": runs,
        "baseline_rate_median": statistics.median(r["baseline"]["rate"] for r in runs),
        "router_rate_median": router_rate,
        "ratio_median": statistics.median(r["ratio"] for r in runs),
        "lateness": late,
    }


def keep_logs(workdir: Path, var_dir: Path) -> None:
    """Copy the worker logs of a failed run to var_dir/logs."""
    target = var_dir / "logs"
    target.mkdir(parents=True, exist_ok=True)
    for path in workdir.glob("*.log"):
        (target / path.name).write_bytes(path.read_bytes())


# -- the baseline agent ------------------------------------------------------------------------


def baseline_app(settings: Settings, bootstrap: str) -> Any:
    """The bare agent: for each request, one table write and one send, in the router's style."""
    import faust

    from streams.app import create_app

    app = create_app(settings, bootstrap)
    source, out = (app.topic(settings.topic(n), key_type=bytes, value_type=bytes,
                             partitions=settings.tuning.partitions, internal=False)
                   for n in ("push.requests", "push.sends"))
    table = app.Table("baseline", partitions=settings.tuning.partitions,
                      schema=faust.Schema(key_serializer="raw", value_serializer="json"))

    async def run(stream: Any) -> None:
        """One table write and one send per event."""
        async for event in stream.events():
            msg = event.message
            table[msg.key] = {"offset": msg.offset, "size": len(msg.value)}
            await out.send(key=msg.key, value=msg.value, force=True)

    app.agent(source, name="baseline")(run)
    return app


def baseline_worker() -> None:
    """Run the baseline agent with the environment's settings until SIGTERM."""
    import faust

    settings = Settings()
    bootstrap = settings.connections.kafka_bootstrap_servers
    if not bootstrap:
        raise SystemExit("KAFKA_BOOTSTRAP_SERVERS is not set")
    app = baseline_app(settings, bootstrap)
    faust.Worker(app, loglevel="warning", quiet=True).execute_from_commandline()


def main(argv: Sequence[str]) -> None:
    """`python -m streams.bench baseline-worker`."""
    if list(argv) != ["baseline-worker"]:
        raise SystemExit("usage: python -m streams.bench baseline-worker")
    baseline_worker()


if __name__ == "__main__":
    main(sys.argv[1:])

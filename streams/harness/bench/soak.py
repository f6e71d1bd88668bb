"""Soak: steady load through the whole loop for a long while, memory and file descriptors of
every process sampled as it runs.

The embedded broker, then the supervised loop (streams.harness.loop: stream worker,
dispatcher, ack gateway, sink into a fresh chDB store, and the provider simulator in this
process) with the demo's tuning, playing the demo's population (streams.harness.crowd) scaled
to `accounts`. Once every account is registered, the demo's push requests go in at `rate` per
second (round-robin over the accounts, every tenth of a round in that round's campaign), and
the simulated people answer with receipts and reads. Every `interval` seconds each process
(broker, each loop child with its descendants, and this process, which runs the simulator
and the load) is read from /proc: VmRSS and the entries of /proc/PID/fd. After `warmup`
minutes a least-squares line per process gives the growth in MiB per hour and fds per hour.

The population is fixed, so the state the pipeline keeps per account and device is fixed too:
whatever still grows once warm is per-message state, windows, timers or caches that are not
bounded (or the broker's memory storage, which keeps every record: no retention here).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import threading
import time
import uuid
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from streams.harness.bench.common import Log, quiet
from streams.harness.broker import start_broker
from streams.harness.processes import ProcessExited
from streams.kafka import check_kafka
from streams.settings import Settings
from streams.topics import create_topics

MIB = 1024 * 1024

# -- pure parts ---------------------------------------------------------------------------


def parse_status(text: str) -> dict[str, float]:
    """VmRSS, VmHWM (MiB) and Threads from the text of /proc/PID/status (absent keys left out)."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        parts = value.split()
        if key in ("VmRSS", "VmHWM") and parts:
            unit = parts[1].lower() if len(parts) > 1 else "kb"
            scale = {"kb": 1024, "mb": MIB, "b": 1}.get(unit, 1024)
            out[key] = int(parts[0]) * scale / MIB
        elif key == "Threads" and parts:
            out[key] = float(parts[0])
    return out


def parse_children(text: str) -> list[int]:
    """The pids listed in a /proc/PID/task/TID/children file."""
    return [int(p) for p in text.split()]


def fit_slope(points: Sequence[tuple[float, float]]) -> float | None:
    """Least-squares slope of (x, y) points; None for fewer than two distinct x."""
    n = len(points)
    if n < 2:
        return None
    mean_x = sum(x for x, _ in points) / n
    mean_y = sum(y for _, y in points) / n
    sxx = sum((x - mean_x) ** 2 for x, _ in points)
    if sxx == 0:
        return None
    return sum((x - mean_x) * (y - mean_y) for x, y in points) / sxx


def per_hour(points: Sequence[tuple[float, float]]) -> float | None:
    """The least-squares slope of (seconds, value) points, in value per hour."""
    slope = fit_slope(points)
    return None if slope is None else slope * 3600


def summarize(series: Sequence[tuple[float, float, int]], warmup: float) -> dict[str, Any]:
    """One process's figures from its (seconds since start, RSS MiB, fds) samples: RSS at the
    start, at the end of the warm-up, at the end and its peak; fds at the start and the end;
    least-squares slopes after the warm-up (per hour), and over its second half alone."""
    if not series:
        return {"samples": 0}
    warm = [s for s in series if s[0] >= warmup]
    late = warm[len(warm) // 2:]
    rss_slope = per_hour([(t, r) for t, r, _ in warm])
    fd_slope = per_hour([(t, float(f)) for t, _, f in warm])
    late_slope = per_hour([(t, r) for t, r, _ in late])
    return {
        "samples": len(series), "samples_after_warmup": len(warm),
        "rss_start_mib": round(series[0][1], 1),
        "rss_warm_mib": round(warm[0][1], 1) if warm else None,
        "rss_end_mib": round(series[-1][1], 1),
        "rss_peak_mib": round(max(r for _, r, _ in series), 1),
        "rss_slope_mib_per_h": None if rss_slope is None else round(rss_slope, 2),
        "rss_slope_second_half_mib_per_h": None if late_slope is None else round(late_slope, 2),
        "fds_start": series[0][2], "fds_warm": warm[0][2] if warm else None,
        "fds_end": series[-1][2], "fds_peak": max(f for _, _, f in series),
        "fd_slope_per_h": None if fd_slope is None else round(fd_slope, 2),
    }


# -- sampling /proc -----------------------------------------------------------------------


def descendants(pid: int, proc: Path = Path("/proc"),
                skip: Collection[int] = ()) -> list[int]:
    """Every process below `pid` (children of each of its threads, recursively), leaving out
    `skip` and everything below them (processes sampled on their own)."""
    found: list[int] = []
    todo = [pid]
    while todo:
        current = todo.pop()
        with contextlib.suppress(OSError):
            for task in (proc / str(current) / "task").iterdir():
                with contextlib.suppress(OSError):
                    kids = [k for k in parse_children((task / "children").read_text())
                            if k not in skip]
                    found += kids
                    todo += kids
    return found


def sample_pid(pid: int, proc: Path = Path("/proc")) -> tuple[float, int, int] | None:
    """(RSS MiB, open fds, threads) of one process; None once it is gone."""
    try:
        status = parse_status((proc / str(pid) / "status").read_text())
        fds = len(os.listdir(proc / str(pid) / "fd"))
    except OSError:
        return None
    return status.get("VmRSS", 0.0), fds, int(status.get("Threads", 0))


def sample_tree(pid: int, proc: Path = Path("/proc"),
                skip: Collection[int] = ()) -> tuple[float, int, int] | None:
    """(RSS MiB, open fds, threads) of a process and its descendants (but `skip` and theirs)
    together; None once it is gone."""
    own = sample_pid(pid, proc)
    if own is None:
        return None
    rss, fds, threads = own
    for kid in descendants(pid, proc, skip):
        got = sample_pid(kid, proc)
        if got is not None:
            rss, fds, threads = rss + got[0], fds + got[1], threads + got[2]
    return rss, fds, threads


class Sampler(threading.Thread):
    """Samples named pids every `interval` seconds until stopped; `extras()` adds context."""

    def __init__(self, pids: Mapping[str, int], interval: float = 5.0,
                 extras: Callable[[], dict[str, Any]] | None = None,
                 stream: Path | None = None) -> None:
        super().__init__(name="soak-sampler", daemon=True)
        self.pids, self.interval, self.extras = dict(pids), interval, extras
        self.stream = stream  # each sample is also appended here as a JSON line
        self.samples: list[dict[str, Any]] = []
        self.stopped = threading.Event()
        self.started_at = time.time()

    def take(self) -> dict[str, Any]:
        """One sample of every process (and the extras), appended and returned."""
        row: dict[str, Any] = {"t": round(time.time() - self.started_at, 2), "at": time.time(),
                               "rss_mib": {}, "fds": {}, "threads": {}}
        others = set(self.pids.values())
        for name, pid in self.pids.items():
            got = sample_tree(pid, skip=others - {pid})
            if got is not None:
                row["rss_mib"][name] = round(got[0], 2)
                row["fds"][name] = got[1]
                row["threads"][name] = got[2]
        if self.extras is not None:
            with contextlib.suppress(Exception):  # context only: a miss is not a failure
                row["extras"] = self.extras()
        self.samples.append(row)
        if self.stream is not None:
            with contextlib.suppress(OSError), self.stream.open("a") as out:
                out.write(json.dumps(row) + "\n")
        return row

    def run(self) -> None:
        """Sample, then sleep to the next tick."""
        tick = time.monotonic()
        while not self.stopped.is_set():
            self.take()
            tick += self.interval
            self.stopped.wait(max(0.0, tick - time.monotonic()))


def threads_of(samples: Sequence[dict[str, Any]], name: str,
               warmup: float) -> dict[str, int | None]:
    """A process's thread count at the start, at the end of the warm-up, at the end, at most."""
    counts = [(s["t"], s["threads"][name]) for s in samples if name in s.get("threads", {})]
    if not counts:
        return {}
    return {"threads_start": counts[0][1],
            "threads_warm": next((n for t, n in counts if t >= warmup), None),
            "threads_end": counts[-1][1], "threads_peak": max(n for _, n in counts)}


def series_of(samples: Sequence[dict[str, Any]], name: str) -> list[tuple[float, float, int]]:
    """(t, RSS MiB, fds) of one process from the sampler's rows."""
    return [(s["t"], s["rss_mib"][name], s["fds"][name]) for s in samples
            if name in s["rss_mib"]]


# -- the run ------------------------------------------------------------------------------


@contextlib.contextmanager
def broker_for(var_dir: Path, log: Log) -> Iterator[tuple[str, int | None]]:
    """(bootstrap, broker pid): KAFKA_BOOTSTRAP_SERVERS (pid None) or a fresh embedded broker."""
    given = Settings().connections.kafka_bootstrap_servers
    if given:
        check_kafka(given)
        log(f"using Kafka at {given} (not sampled)")
        yield given, None
        return
    broker = start_broker(log_path=var_dir / "broker.log")
    log(f"embedded broker at {broker.bootstrap} (pid {broker.process.pid})")
    try:
        yield broker.bootstrap, broker.process.pid
    finally:
        broker.stop()


def gauges(text: str, names: Collection[str]) -> dict[str, float]:
    """The samples of these metrics in a Prometheus text page, keyed `name` or `name.label`
    (the first label's value), e.g. pushcascade_deadlines_pending.messages."""
    from prometheus_client.parser import text_string_to_metric_families

    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name in names:
                label = next(iter(sample.labels.values()), None)
                out[f"{sample.name}.{label}" if label else sample.name] = sample.value
    return out


def scrape(port: int, names: Collection[str]) -> dict[str, float]:
    """gauges() of a service's /metrics on loopback ({} when it does not answer)."""
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as page:
            return gauges(page.read().decode(), names)
    except OSError:
        return {}


#: What the worker and the dispatcher hold, sampled with the memory: deadlines indexed (a
#: message's EXPIRE deadline lives as long as its state) and provider requests in flight.
HELD = ("pushcascade_deadlines_pending", "pushcascade_dispatch_in_flight")


def simulator_sizes(sim: Any) -> dict[str, int]:
    """How much the provider simulator remembers (send ids, idempotency keys, pending tasks)."""
    return {"sim_send_ids": len(sim.seen), "sim_keys": len(sim._keyed),  # noqa: SLF001
            "sim_pending": len(sim._tasks)}  # noqa: SLF001


def extras_summary(samples: Sequence[dict[str, Any]], warmup: float,
                   lag: bool) -> dict[str, dict[str, float]]:
    """Each extra recorded with the samples (consumer-group lag when `lag`, else what the
    services hold) at the end of the warm-up, at the end, and its largest after the warm-up."""
    out: dict[str, dict[str, float]] = {}
    warm = [s.get("extras", {}) for s in samples if s["t"] >= warmup]
    for key in sorted({k for e in warm for k in e if k.startswith("lag_") == lag}):
        values = [e[key] for e in warm if key in e]
        out[key.removeprefix("lag_")] = {"warm": values[0], "end": values[-1],
                                         "max": max(values)}
    return out


def soak_tuning(deadline: float, retention: float, in_flight: int = 50) -> dict[str, Any]:
    """The demo's tuning with read deadlines of `deadline` s (receipts: half of it), and
    message state and the dispatcher's dedupe window kept `retention` s instead of a day, so
    that timers fire and state expires many times within a run; at most `in_flight` provider
    requests at once (500 swamp the in-process simulator on a loaded machine: its receipts
    and reads to the gateway time out, and each lost one makes a fallback or escalation)."""
    from streams.harness.loop import DEMO_TUNING

    reads = {f"read_deadline_{i}": deadline for i in ("low", "normal", "high", "urgent")}
    return {**DEMO_TUNING, **reads, "receipt_deadline": deadline / 2,
            "probe_timeout": deadline / 2, "message_retention": retention,
            "dispatch_dedupe_window": retention, "dispatch_in_flight": in_flight}


def run_soak_bench(minutes: float = 30.0, rate: float = 3.0, warmup: float = 5.0,
                   accounts: int = 100, interval: float = 5.0, deadline: float = 20.0,
                   retention: float = 120.0, in_flight: int = 50, strategy: str = "adaptive",
                   var_dir: Path = Path("var/bench"), log: Log = quiet) -> dict[str, Any]:
    """Steady load for `minutes`; per-process samples and slopes after `warmup` minutes
    (tuned by soak_tuning); every sample is also appended to var_dir/soak.samples.jsonl."""
    from connectors.producer import PushProducer, RecordProducer
    from streams.harness.crowd import Crowd
    from streams.harness.loop import Loop
    from streams.harness.taps import wait_accounts
    from streams.lag import lag

    base = Crowd.load()
    crowd = Crowd(base.spec.model_copy(update={"accounts": accounts}))
    ids = [m.account_id for m in crowd.members]
    workdir = var_dir / "soak"
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True, exist_ok=True)
    with broker_for(workdir, log) as (bootstrap, broker_pid):
        settings = Settings(topic_prefix=f"bench-soak-{uuid.uuid4().hex[:8]}.",
                            kafka_bootstrap_servers=bootstrap,
                            clickhouse_dsn=f"chdb://{(workdir / 'chdb').resolve()}")
        create_topics(settings, bootstrap)
        tuning = soak_tuning(deadline, retention, in_flight)
        with Loop(settings, workdir, "soak", seed=crowd.spec.seed, profile=tuning,
                  strategy=strategy) as loop:
            with RecordProducer(bootstrap, topic_prefix=settings.tuning.topic_prefix) as out:
                for topic, record in crowd.registrations(int(time.time() * 1000)):
                    out.send(topic, record)
            wait_accounts(settings, ids, timeout=300, workers=loop.procs)
            log(f"soak: {len(ids):,} accounts, {sum(len(m.phones) for m in crowd.members):,} "
                f"phones registered; {rate:g} requests/s for {minutes:g} min")
            assert loop.simulator is not None
            sim = loop.simulator.sim
            loop.set_population(crowd.document(time.time(), minutes * 60))
            pids = {**({"broker": broker_pid} if broker_pid else {}),
                    **{p.name.removeprefix("soak-"): p.pid for p in loop.procs},
                    "bench+simulator": os.getpid()}
            lags: dict[str, int] = {}
            ports = (loop.ports["worker"], loop.ports["dispatch"])
            stream = var_dir / "soak.samples.jsonl"
            stream.unlink(missing_ok=True)
            sampler = Sampler(pids, interval, lambda: {
                **simulator_sizes(sim), **lags,
                **{k: v for port in ports for k, v in scrape(port, HELD).items()}}, stream)
            sent, started = 0, time.monotonic()
            total, next_report, next_lag = int(minutes * 60 * rate), started + 60, started
            sampler.start()
            aborted = None
            try:
                with PushProducer(bootstrap, topic_prefix=settings.tuning.topic_prefix) as push:
                    while sent < total:
                        due = min(total, int((time.monotonic() - started) * rate))
                        while sent < due:
                            push.push(crowd.request(sent, int(time.time() * 1000)))
                            sent += 1
                        push.flush()
                        loop.check()
                        now = time.monotonic()
                        if now >= next_lag:
                            with contextlib.suppress(Exception):  # context, retried next time
                                totals: dict[str, int] = {}
                                for row in lag(settings):
                                    totals[f"lag_{row.group}"] = \
                                        totals.get(f"lag_{row.group}", 0) + row.lag
                                lags.update(totals)
                            next_lag = now + 15
                        if now >= next_report:
                            last = sampler.samples[-1] if sampler.samples else {}
                            rss = ", ".join(f"{n} {v:.0f}" for n, v in
                                            last.get("rss_mib", {}).items())
                            log(f"soak: {(now - started) / 60:5.1f} min, {sent:,} requests, "
                                f"{lags}, RSS MiB: {rss}")
                            next_report = now + 60
                        time.sleep(0.25)
            except ProcessExited as exc:  # the figures until then are still the run's
                aborted = str(exc)
                log(f"soak: stopped after {(time.monotonic() - started) / 60:.1f} min: "
                    f"{aborted.splitlines()[0]}")
            finally:
                sampler.stopped.set()
                sampler.join(interval + 30)
            loaded = time.monotonic() - started
            sampler.take()  # the last one, as the load ends
    meta = {"minutes": minutes, "load_seconds": round(loaded, 1), "rate": rate,
            "requests": sent, "accounts": len(ids),
            "phones": sum(len(m.phones) for m in crowd.members), "strategy": strategy,
            "warmup_minutes": warmup, "interval_s": interval, "tuning": tuning, "pids": pids,
            "aborted": aborted}
    return assemble(sampler.samples, meta)


def assemble(samples: Sequence[dict[str, Any]], meta: dict[str, Any]) -> dict[str, Any]:
    """A run's figures from its samples and what it was (`meta`: at least warmup_minutes and
    pids): per-process summaries, lag and what the services held."""
    warmup = meta["warmup_minutes"] * 60
    processes = {name: {**summarize(series_of(samples, name), warmup),
                        **threads_of(samples, name, warmup)} for name in meta["pids"]}
    return {**meta, "processes": processes,
            "lag": extras_summary(samples, warmup, lag=True),
            "held": extras_summary(samples, warmup, lag=False),
            "last_extras": samples[-1].get("extras", {}) if samples else {},
            "first_extras": next((s["extras"] for s in samples if "extras" in s), {}),
            "samples": list(samples)}


# -- the plot -----------------------------------------------------------------------------


def plot_html(result: dict[str, Any], path: Path) -> Path:
    """RSS, its change since the warm-up and open fds of every process over time, as a
    self-contained plotly page."""
    from plotly.colors import qualitative
    from plotly.subplots import make_subplots

    samples = result["samples"]
    warm = result["warmup_minutes"]
    fig = make_subplots(rows=3, cols=1, shared_xaxes=True, row_heights=[0.4, 0.35, 0.25],
                        vertical_spacing=0.05,
                        subplot_titles=("RSS (MiB)", "RSS change since the end of the warm-up "
                                        "(MiB)", "open file descriptors"))
    palette = qualitative.Plotly
    for n, name in enumerate(result["processes"]):
        color = palette[n % len(palette)]
        series = series_of(samples, name)
        minutes = [t / 60 for t, _, _ in series]
        slope = result["processes"][name].get("rss_slope_mib_per_h")
        label = f"{name} ({slope:+.1f} MiB/h)" if slope is not None else name
        fig.add_scatter(x=minutes, y=[r for _, r, _ in series], name=label, mode="lines",
                        line_color=color, legendgroup=name, row=1, col=1)
        base = next((r for t, r, _ in series if t >= warm * 60), None)
        if base is not None:
            fig.add_scatter(x=minutes, y=[r - base for _, r, _ in series], name=name,
                            mode="lines", line_color=color, legendgroup=name, showlegend=False,
                            row=2, col=1)
        fig.add_scatter(x=minutes, y=[f for _, _, f in series], name=name, mode="lines",
                        line_color=color, legendgroup=name, showlegend=False, row=3, col=1)
    fig.add_vline(x=warm, line_dash="dash", line_color="grey")
    fig.update_xaxes(title_text="minutes since the load started", row=3, col=1)
    fig.update_layout(
        title=(f"pushcascade bench soak: {result['rate']:g} requests/s to {result['accounts']:,} "
               f"accounts ({result['phones']:,} phones) for {result['load_seconds'] / 60:.0f} "
               f"min; read deadline {result['tuning']['read_deadline_normal']:g} s, message "
               f"state kept {result['tuning']['message_retention']:g} s; slopes after the "
               f"{warm:g}-min warm-up (dashed)"),
        template="plotly_white", width=1400, height=1000, title_font_size=15,
        legend={"x": 1.01, "y": 1})
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.write_html(str(path), include_plotlyjs=True, full_html=True,
                   config={"displayModeBar": False, "staticPlot": True})
    return path


def render_png(html: Path, png: Path, timeout: float = 120.0) -> str | None:
    """Screenshot the page with headless chromium; None when done, else why not."""
    import subprocess

    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        return "chromium is not installed (apt-get install -y chromium); the HTML plot is kept"
    png.parent.mkdir(parents=True, exist_ok=True)
    png.unlink(missing_ok=True)
    argv = [browser, "--headless", "--no-sandbox", "--disable-gpu",
            "--disable-background-networking", "--hide-scrollbars",
            f"--screenshot={png.resolve()}", "--window-size=1400,1000",
            f"file://{html.resolve()}"]
    try:
        done = subprocess.run(argv, capture_output=True, timeout=timeout, check=False)  # noqa: S603
    except subprocess.TimeoutExpired:
        return f"chromium took longer than {timeout:.0f}s"
    if done.returncode != 0 or not png.exists():
        return f"chromium failed ({done.returncode}): {done.stderr.decode()[-300:]}"
    return None

"""`pushcascade demo`: the embedded stack end to end under load, scored from ClickHouse.

One run: the supervised loop (streams.harness.loop) on fresh topics and a fresh chDB store, a
population (streams.harness.crowd) registered and played by the provider simulator, push
requests at a steady rate with live progress, then the quality figures from ClickHouse and the
HTML report. `--compare` runs every strategy on the same population and seed (a repeated
`--strategy`, those strategies); `--seeds K` on K seeds of it, with means, 95% intervals and
checks judged on them (streams.harness.stats).
"""

from __future__ import annotations

import contextlib
import json
import shutil
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any, NamedTuple

import click
from rich.console import Console
from rich.live import Live
from rich.table import Table

from connectors.producer import PushProducer, RecordProducer
from schemas import Codec
from streams.cli import cli
from streams.domain.channels import STRATEGIES
from streams.harness import ProcessExited, Tap, stack, wait_accounts
from streams.harness.bound import bounds
from streams.harness.crowd import Crowd, PopulationError, shipped
from streams.harness.loop import DEMO_PRIORS, DEMO_TUNING, LAST_TIMER, REACH_WINDOW, Loop
from streams.settings import Connections, Settings, get_settings

console = Console(stderr=True)


def sample_records(now_ms: int) -> dict[str, dict]:
    """One valid record for every topic outside users write."""
    account, device, message = "acct-demo", "dev-demo", f"msg-{uuid.uuid4().hex[:8]}"
    return {
        "device.registry": {"device_id": device, "account_id": account, "manufacturer": "Huawei",
                            "model": "P60", "routes": ["HUAWEI", "JPUSH"],
                            "push_tokens": {"HUAWEI": "tok-demo"}, "active": True,
                            "registered_at": now_ms},
        "account.profiles": {"account_id": account, "phone": "+8613800000000",
                             "wechat_openid": "o-demo", "email": None, "updated_at": now_ms},
        "account.settings": {"account_id": account, "primary": None, "secondary": None,
                             "updated_at": now_ms},
        "push.requests": {"message_id": message, "account_id": account, "importance": "HIGH",
                          "title": "Your parcel", "body": "arrives today", "read_action": "BUTTON",
                          "link": None, "campaign_id": None, "device_ids": [],
                          "created_at": now_ms},
        "push.acks": {"message_id": message, "account_id": account, "channel": "APP",
                      "kind": "READ", "device_id": device, "route": "HUAWEI", "send_id": None,
                      "acked_at": now_ms},
    }


def smoke(settings: Settings) -> None:
    """Produce one record of each writable type and read each back."""
    codec = Codec(settings.connections.schema_registry_url or None)
    records = sample_records(int(time.time() * 1000))
    with RecordProducer(settings.connections.kafka_bootstrap_servers,
                        topic_prefix=settings.tuning.topic_prefix, codec=codec) as producer:
        for topic, record in records.items():
            producer.send(topic, record)
        console.print(f"produced {producer.flush()} records")
    for topic, record in records.items():
        with Tap(settings, topic) as tap:
            seen = tap.drain()
        ok = seen == [record]
        console.print(f"  {'[green]ok' if ok else '[red]MISMATCH'}[/] {topic}")
        if not ok:
            raise click.ClickException(f"{topic}: read back {seen!r}")




class Progress:
    """What went through the pipeline so far, read from its topics, and the lag per stage."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.taps = {n: Tap(settings, n) for n in ("push.sends", "push.outcomes", "push.acks",
                                                   "push.results")}
        self.lags: dict[str, int] = {}
        self._lag_at = 0.0

    def poll(self) -> tuple[int, ...]:
        """Read what is new (the lag every 2 s); a fingerprint of the counts (same = quiet)."""
        for tap in self.taps.values():
            tap.poll(0.05)
        if time.monotonic() - self._lag_at > 2:
            from streams.lag import lag

            with contextlib.suppress(Exception):  # progress only: the next poll tries again
                totals: Counter[str] = Counter()
                for row in lag(self.settings):
                    totals[row.group] += row.lag
                self.lags = dict(totals)
            self._lag_at = time.monotonic()
        return tuple(len(t.records) for t in self.taps.values())

    def rows(self, requests: int) -> list[tuple[str, str]]:
        """The live table's rows."""
        sends = Counter(s["reason"] for s in self.taps["push.sends"].records
                        if s["device_id"] or s["reason"] not in DEVICE_REASONS)
        outcomes = Counter(o["status"] for o in self.taps["push.outcomes"].records)
        acks = Counter(a["kind"] for a in self.taps["push.acks"].records)
        read = {(r["account_id"], r["message_id"]) for r in self.taps["push.results"].records
                if r["status"] == "READ"}
        lag = " / ".join(f"{self.lags.get(g, 0):,}" for g in ("workers", "dispatcher", "sink"))
        return [("push requests", f"{requests:,}"),
                ("fan-out sends (new accounts)", f"{sends['FANOUT']:,}"),
                ("primary sends (established)", f"{sends['PRIMARY']:,}"),
                ("escalations (missed read deadline)", f"{sends['ESCALATION']:,}"),
                ("device sends on the original route", f"{sends['ORIGINAL_ROUTE']:,}"),
                ("device fallback sends (no receipt)", f"{sends['FALLBACK_ROUTE']:,}"),
                ("probes", f"{sends['PROBE']:,}"),
                ("provider: accepted / rejected / failed",
                 f"{outcomes['ACCEPTED']:,} / {outcomes['REJECTED']:,} / {outcomes['FAILED']:,}"),
                ("receipts (vendor callbacks)", f"{acks['RECEIPT']:,}"),
                ("reads (signed links)", f"{acks['READ']:,}"), ("messages read", f"{len(read):,}"),
                ("lag: workers / dispatcher / sink", lag)]

    def table(self, title: str, requests: int, started: float) -> Table:
        """The live table."""
        table = Table(title=f"{title} — {time.monotonic() - started:5.1f} s")
        table.add_column("what")
        table.add_column("count", justify="right")
        for what, n in self.rows(requests):
            table.add_row(what, n)
        return table

    def close(self) -> None:
        """Close the taps."""
        for tap in self.taps.values():
            tap.close()


#: Reasons of the per-device sends (their account-level APP record is not counted twice).
DEVICE_REASONS = ("ORIGINAL_ROUTE", "FALLBACK_ROUTE", "PROBE")


def drive(settings: Settings, crowd: Crowd, loop: Loop, progress: Progress, rate: float,
          duration: float, title: str) -> int:
    """Push `rate` x `duration` requests at `rate` per second, the crowd's (round-robin over
    its accounts), showing live progress; returns how many were sent."""
    sent, started = 0, time.monotonic()
    with PushProducer(settings.connections.kafka_bootstrap_servers,
                      topic_prefix=settings.tuning.topic_prefix,
                      schema_registry_url=settings.connections.schema_registry_url) as out, \
            Live(progress.table(title, 0, started), console=console,
                 refresh_per_second=4) as live:
        total = int(duration * rate)
        while sent < total:
            due = min(total, int((time.monotonic() - started) * rate))
            while sent < due:  # catching up after a slow turn: the run always has `total`
                out.push(crowd.request(sent, int(time.time() * 1000), total))
                sent += 1
            out.flush()
            loop.check()
            progress.poll()
            live.update(progress.table(title, sent, started))
            time.sleep(0.25)
        settle(loop, progress, lambda: live.update(progress.table(title, sent, started)))
    return sent


def settle(loop: Loop, progress: Progress, show: Any, timeout: float = 120.0) -> None:
    """Let the last timers come due, then wait until the simulator has answered everything
    and no topic grew for three seconds."""
    end = time.monotonic() + LAST_TIMER
    while time.monotonic() < end:
        loop.check()
        progress.poll()
        show()
        time.sleep(0.25)
    end = time.monotonic() + timeout
    last, since = progress.poll(), time.monotonic()
    while time.monotonic() - since < 3.0:
        if time.monotonic() > end:
            raise TimeoutError(f"the pipeline did not settle in {timeout:.0f}s")
        loop.check()
        assert loop.simulator is not None
        loop.simulator.idle(timeout=max(1.0, end - time.monotonic()))
        counts = progress.poll()
        show()
        if counts != last:
            last, since = counts, time.monotonic()
        time.sleep(0.25)


def stored(settings: Settings, progress: Progress, loop: Loop, timeout: float = 120.0) -> Any:
    """The run's warehouse once ClickHouse holds every send (the sink answers its SQL)."""
    from connectors.clickhouse.warehouse import open_warehouse

    dsn = settings.connections.dsn
    sent = len({s["send_id"] for s in progress.taps["push.sends"].records})
    end = time.monotonic() + timeout
    with console.status("the sink is writing the events to ClickHouse"):
        while True:
            loop.check()
            try:
                warehouse = open_warehouse(dsn)
                have = int(warehouse.rows("SELECT count() AS n FROM sends FINAL")[0]["n"])
            except Exception:  # the sink may not answer yet
                have = -1
            if have >= sent:
                return warehouse
            if time.monotonic() > end:
                raise TimeoutError(f"ClickHouse holds {have} of {sent} sends after {timeout}s")
            time.sleep(0.5)


def read_deadlines() -> dict[str, float]:
    """The demo profile's read deadline (s) per importance."""
    return {name: float(DEMO_TUNING[f"read_deadline_{name.lower()}"])
            for name in ("LOW", "NORMAL", "HIGH", "URGENT")}


#: Movers are scored on their PRIMARY sends from this many pushes after their change on.
MOVER_GRACE = 5
#: A phone's best route, or an account's best channel, counts as clear when it leads the next by
#: this much (a near tie is right either way).
CLEAR_MARGIN = 0.1


def score(warehouse: Any, crowd: Crowd, duration: float, started: float | None = None,
          costs: dict[str, float] | None = None) -> dict[str, Any]:
    """The run's quality from ClickHouse, and what it learnt against the population's truth;
    `started` (epoch s) is when the population's clock started (the movers' changes count from
    it), `costs` the cost of one send per channel; per-segment figures under "segments"."""
    from connectors.clickhouse.quality import accuracy, learnt, measure, per_account, pushes
    from streams.harness.stats import by_segment, clear_best, followed, leads

    figures = measure(warehouse.rows, REACH_WINDOW, read_deadlines(), costs)
    primaries, targets = learnt(warehouse.rows)
    phones = [p for m in crowd.members for p in m.phones]
    requested, primary_sends = pushes(warehouse.rows)
    if started is None:  # the first request's time
        started = min((t for v in requested.values() for t, _ in v), default=0.0) / 1000
    movers = {m.account_id: m for m in crowd.members if not m.stable}
    change_ms = {a: (started + at) * 1000 for a, m in movers.items()
                 if (at := m.changed_at(duration)) is not None and at <= duration}
    truth_after = {a: movers[a].true_primary(duration) for a in change_ms}
    figures.update(accuracy(
        primaries, targets, {m.account_id: m.true_primary(duration) for m in crowd.members},
        {m.account_id: m.stable for m in crowd.members},
        {p.device_id: p.best_alternative for p in phones},
        followed=followed(requested, primary_sends, change_ms, truth_after, MOVER_GRACE),
        clear={p.device_id for p in phones if clear_best(p.receipt, p.original, CLEAR_MARGIN)},
        clear_accounts={m.account_id for m in crowd.members
                        if leads(m.push_reads(duration).values(), CLEAR_MARGIN)}))
    figures["segments"] = by_segment(per_account(warehouse.rows, REACH_WINDOW, costs),
                                     {m.account_id: m.segment.name for m in crowd.members})
    return figures


def run_strategy(base: Settings, bootstrap: str, crowd: Crowd, strategy: str, rate: float,
                 duration: float, workers: int, var_dir: Path,
                 keep: dict[str, Any] | None = None) -> dict[str, Any]:
    """One strategy end to end on its own topics and store; its figures."""
    prefix = f"{base.tuning.topic_prefix}demo-{strategy}-{uuid.uuid4().hex[:6]}."
    dsn = store_for(base.connections.dsn, var_dir, strategy)
    settings = Settings(topic_prefix=prefix, kafka_bootstrap_servers=bootstrap,
                        clickhouse_dsn=dsn)
    from streams.topics import create_topics

    create_topics(settings, bootstrap)
    title = f"pushcascade demo — strategy {strategy}, seed {crowd.spec.seed}"
    with Loop(settings, var_dir, f"demo-{strategy}", workers=workers, seed=crowd.spec.seed,
              strategy=strategy) as loop:
        progress = Progress(settings)
        try:
            with RecordProducer(bootstrap, topic_prefix=prefix) as out:
                for topic, record in crowd.registrations(int(time.time() * 1000)):
                    out.send(topic, record)
            with console.status(f"{strategy}: services starting, {len(crowd.members):,} "
                                "accounts registering"):
                wait_accounts(settings, [m.account_id for m in crowd.members], timeout=180,
                              counts=crowd.registered(),
                              workers=loop.procs)
            started = time.time()  # the population's clock: its times resolved on duration
            loop.set_population(crowd.document(started, duration))
            sent = drive(settings, crowd, loop, progress, rate, duration, title)
            warehouse = stored(settings, progress, loop)
            figures = {"strategy": strategy, "seed": crowd.spec.seed, "requests": sent,
                       **score(warehouse, crowd, duration, started, settings.tuning.costs)}
            figures["verify_violations"] = check_promises(settings, strategy, loop)
            if keep is not None:
                from connectors.clickhouse.report import collect

                keep["report"] = collect(warehouse)
                keep["dsn"] = dsn
        finally:
            progress.close()
    return figures


def rehearse_strategy(base: Settings, crowd: Crowd, strategy: str, rate: float,
                      duration: float, var_dir: Path,
                      keep: dict[str, Any] | None = None) -> dict[str, Any]:
    """One strategy rehearsed (streams.harness.rehearsal) into its own store; its figures."""
    from connectors.clickhouse.warehouse import open_warehouse
    from streams.harness.rehearsal import Rehearsal, store
    from streams.router import router_config

    dsn = store_for(base.connections.dsn, var_dir, strategy)
    settings = Settings(strategy=strategy, **DEMO_TUNING)
    with console.status(f"{strategy}: rehearsing seed {crowd.spec.seed}, "
                        f"{int(rate * duration):,} requests"):
        played = Rehearsal(crowd, router_config(settings), rate, duration,
                           campaign_fallback_ratio=settings.tuning.campaign_fallback_ratio,
                           **{k: v for k, v in DEMO_PRIORS.items() if k != "priors_window"}
                           ).run()
        store(played.records, dsn)
        warehouse = open_warehouse(dsn)
        figures = {"strategy": strategy, "seed": crowd.spec.seed,
                   "requests": int(rate * duration), "rehearsed": True,
                   **score(warehouse, crowd, duration, played.start, settings.tuning.costs)}
    if keep is not None:
        from connectors.clickhouse.report import collect

        keep["report"] = collect(warehouse)
        keep["dsn"] = dsn
    return figures


def check_promises(settings: Settings, strategy: str, loop: Loop) -> int:
    """`pushcascade verify` on the run (services still up), its table; the violations."""
    from streams.cli.verify import table
    from streams.verify import run_settled, violations

    assert loop.simulator is not None
    tuned = Settings(topic_prefix=settings.tuning.topic_prefix, strategy=strategy,
                     kafka_bootstrap_servers=settings.connections.kafka_bootstrap_servers,
                     clickhouse_dsn=settings.connections.dsn, **DEMO_TUNING)
    with console.status(f"{strategy}: pushcascade verify"):
        checks = run_settled(tuned, timeout=60, settle=2.0, simulator_url=loop.simulator.url)
    console.print(table(checks, f"{strategy}: pushcascade verify"))
    return violations(checks)


def store_for(dsn: str, var_dir: Path, strategy: str) -> str:
    """A fresh chDB store per run (under var/demo) unless CLICKHOUSE_DSN names another."""
    if dsn != Connections.model_fields["clickhouse_dsn"].default.get_secret_value():
        if dsn.startswith("chdb://"):
            return f"{dsn.rstrip('/')}/{strategy}"
        raise click.ClickException("the demo scores each run on a fresh store: leave "
                                   "CLICKHOUSE_DSN unset (embedded chDB) or point it at chdb://")
    folder = var_dir / "demo" / f"{strategy}-chdb"
    shutil.rmtree(folder, ignore_errors=True)
    return f"chdb://./{folder}"


ROWS = (("reach (read before the last read deadline)", "reach_in_time", "{:.1%}"),
        (f"reach (read within {REACH_WINDOW:g} s)", "reach", "{:.1%}"),
        ("sends per message", "sends_per_message", "{:.2f}"),
        ("SMS per message", "sms_per_message", "{:.2f}"),
        ("redundant sends per message", "redundant_per_message", "{:.2f}"),
        ("cost per message", "cost_per_message", "{:.4f}"),
        ("cost per read", "cost_per_read", "{:.4f}"),
        ("time to first read p50 / s", "time_to_read_p50_s", "{}"),
        ("time to first read p90 / s", "time_to_read_p90_s", "{}"),
        ("primary channel right (stable)", "primary_accuracy_stable", "{:.1%}"),
        (f"primary channel right (stable, best leads by >= {CLEAR_MARGIN:g})",
         "primary_accuracy_clear", "{:.1%}"),
        (f"primary channel right (movers, after {MOVER_GRACE} pushes)",
         "primary_accuracy_movers", "{:.1%}"),
        ("target route right (measured)", "route_accuracy", "{:.1%}"),
        (f"target route right (best leads by >= {CLEAR_MARGIN:g})", "route_accuracy_clear",
         "{:.1%}"),
        ("phones measured / all", "devices_scored", "{:,}"),
        ("probes per message", "probes_per_message", "{:.2f}"),
        ("messages", "messages", "{:,}"))


def figures_table(runs: list[dict[str, Any]], title: str) -> Table:
    """One column per strategy run, one row per figure."""
    table = Table(title=title)
    table.add_column("figure")
    for run in runs:
        table.add_column(run["strategy"], justify="right")
    for name, key, fmt in ROWS:
        cells = ["–" if run.get(key) is None else fmt.format(run[key]) for run in runs]
        if key == "devices_scored":
            cells = [f"{c} / {run['devices']:,}" for c, run in zip(cells, runs, strict=True)]
        table.add_row(name, *cells)
    return table


def series(runs: list[dict[str, Any]], strategy: str, key: str) -> dict[int, float]:
    """seed -> the figure of that strategy's run on it (runs without the figure left out)."""
    return {int(r.get("seed", 0)): r[key] for r in runs
            if r["strategy"] == strategy and r.get(key) is not None}


def summarize(runs: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, Any]]]:
    """strategy -> figure -> its mean over the seeds and 95% interval (as_dict)."""
    from streams.harness.stats import interval

    out: dict[str, dict[str, dict[str, Any]]] = {}
    for strategy in dict.fromkeys(r["strategy"] for r in runs):
        for _, key, _ in ROWS:
            got = interval(series(runs, strategy, key).values())
            if got is not None:
                out.setdefault(strategy, {})[key] = got.as_dict()
    return out


def summarize_segments(runs: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, float]]]:
    """segment -> strategy -> each per-segment figure's mean over the seeds."""
    values: dict[tuple[str, str, str], list[float]] = {}
    for run in runs:
        for segment, figures in run.get("segments", {}).items():
            for key, value in figures.items():
                values.setdefault((segment, run["strategy"], key), []).append(float(value))
    out: dict[str, dict[str, dict[str, float]]] = {}
    for (segment, strategy, key), xs in values.items():
        out.setdefault(segment, {}).setdefault(strategy, {})[key] = sum(xs) / len(xs)
    return out


#: The per-segment figures: (name, key, format).
SEGMENT_ROWS = (("accounts", "accounts", "{:.0f}"), ("messages", "messages", "{:.0f}"),
                (f"reach ({REACH_WINDOW:g} s)", "reach", "{:.1%}"),
                ("sends/msg", "sends_per_message", "{:.2f}"),
                ("SMS/msg", "sms_per_message", "{:.2f}"),
                ("cost/msg", "cost_per_message", "{:.4f}"))


def summary_table(summary: dict[str, dict[str, dict[str, Any]]], title: str) -> Table:
    """One column per strategy, one row per figure: the mean over the seeds, and with two
    seeds or more its 95% interval as mean ± half-width."""
    from streams.harness.stats import Interval

    table = Table(title=title)
    table.add_column("figure")
    for strategy in summary:
        table.add_column(strategy, justify="right")
    for name, key, fmt in ROWS:
        fmt = "{:.2f}" if fmt in ("{}", "{:,}") else fmt
        cells = []
        for figures in summary.values():
            got = figures.get(key)
            cells.append("–" if got is None else
                         Interval(got["mean"], got["half"], got["n"]).show(fmt))
        table.add_row(name, *cells)
    return table


def segment_table(segments: dict[str, dict[str, dict[str, float]]], title: str) -> Table:
    """Segments by strategies: accounts, messages, reach, sends, SMS and cost per message."""
    strategies = list(dict.fromkeys(s for by in segments.values() for s in by))
    table = Table(title=title)
    table.add_column("segment")
    table.add_column("figure")
    for strategy in strategies:
        table.add_column(strategy, justify="right")
    for segment, by in segments.items():
        for i, (name, key, fmt) in enumerate(SEGMENT_ROWS):
            table.add_row(segment if i == 0 else "", name,
                          *["–" if key not in by.get(s, {}) else fmt.format(by[s][key])
                            for s in strategies], end_section=i == len(SEGMENT_ROWS) - 1)
    return table


class Check(NamedTuple):
    """One thing the comparison must show: whether it holds (None: not measured in this run),
    and whether it is information only (the seed strategy's own checks)."""

    text: str
    holds: bool | None
    info: bool = False


def verdicts(runs: list[dict[str, Any]]) -> list[Check]:
    """What the comparison must show, each with whether these runs (one per strategy and
    seed) show it: adaptive against blast on the means, adaptive against seed beyond the 95%
    intervals of the paired differences (with two seeds or more), the learning accuracies on
    the means, verify on every run; seed against blast as information."""
    from streams.harness.stats import interval

    def mean(strategy: str, key: str) -> float | None:
        got = interval(series(runs, strategy, key).values())
        return None if got is None else got.mean

    strategies = set(r["strategy"] for r in runs)
    seeds = sorted({int(r.get("seed", 0)) for r in runs})
    k = len(seeds)
    on = f"the means over {k} seeds" if k > 1 else "one seed"
    out: list[Check] = []
    reaches = (("reach_in_time", "reach before the last deadline"),
               ("reach", f"reach within {REACH_WINDOW:g} s"))
    if {"blast", "seed"} <= strategies:
        for key, label in reaches:
            s, b = mean("seed", key), mean("blast", key)
            if s is not None and b is not None:
                out.append(Check(f"(information) seed {label} {s:.1%} >= 95% of blast's "
                                 f"{b:.1%} ({on})", s >= 0.95 * b, True))
        s, b = mean("seed", "sends_per_message"), mean("blast", "sends_per_message")
        if s is not None and b is not None:
            out.append(Check(f"(information) seed sends/msg {s:.2f} <= half of blast's "
                             f"{b:.2f} ({on})", s <= 0.5 * b, True))
    if {"blast", "adaptive"} <= strategies:
        for key, label, most, above in (*((k_, l_, 0.98, True) for k_, l_ in reaches),
                                        ("sends_per_message", "sends/msg", 0.60, False)):
            a, b = mean("adaptive", key), mean("blast", key)
            if a is None or b is None:
                continue
            ours, theirs = series(runs, "adaptive", key), series(runs, "blast", key)
            ratio = interval(ours[i] / theirs[i] for i in ours if theirs.get(i))
            per_seed = ("" if ratio is None or ratio.half is None else
                        f"; per-seed ratio {ratio.mean:.3f} [{ratio.lo:.3f}, {ratio.hi:.3f}]")
            if above:
                text = (f"adaptive {label} {a:.1%} >= {most:.0%} of blast's {b:.1%} "
                        f"(judged on {on}{per_seed})")
                out.append(Check(text, a >= most * b))
            else:
                text = (f"adaptive sends/msg {a:.2f} <= {most:.0%} of blast's {b:.2f} "
                        f"(judged on {on}{per_seed})")
                out.append(Check(text, a <= most * b))
    if {"seed", "adaptive"} <= strategies:
        out.extend(beats_seed(runs, k))
    for strategy in ("seed", "adaptive"):
        if strategy not in strategies:
            continue
        for key, what in (("primary_accuracy_stable", "primary-channel accuracy of stable "
                                                       "established accounts"),
                          ("primary_accuracy_movers", "primary-channel accuracy of movers "
                           f"from the {MOVER_GRACE + 1}th push after their change"),
                          ("route_accuracy_clear", "target route right on phones whose best "
                           f"route leads by >= {CLEAR_MARGIN:g}")):
            got = interval(series(runs, strategy, key).values())
            if got is None:
                out.append(Check(f"{strategy}: {what}: not measured in these runs", None))
                continue
            shown = got.show("{:.1%}") if got.half is None else (
                f"{got.mean:.1%} [{got.lo:.1%}, {got.hi:.1%}]")
            out.append(Check(f"{strategy}: {what} {shown} >= 90% (judged on {on})",
                             got.mean >= 0.9))
    for strategy in dict.fromkeys(r["strategy"] for r in runs):
        found = [r["verify_violations"] for r in runs
                 if r["strategy"] == strategy and "verify_violations" in r]
        if found:
            out.append(Check(f"{strategy}: pushcascade verify found {sum(found)} violations of "
                             "the promises" + (f" over {len(found)} runs" if k > 1 else ""),
                             sum(found) == 0))
    return out


def beats_seed(runs: list[dict[str, Any]], k: int) -> list[Check]:
    """adaptive beats seed on reach (within the window) or on sends per message without
    losing on the other: with two seeds or more beyond the 95% intervals of the paired
    per-seed differences, with one a point comparison."""
    from streams.harness.stats import interval, paired

    ours_r, seed_r = series(runs, "adaptive", "reach"), series(runs, "seed", "reach")
    ours_s = series(runs, "adaptive", "sends_per_message")
    seed_s = series(runs, "seed", "sends_per_message")
    both = sorted(set(ours_r) & set(seed_r) & set(ours_s) & set(seed_s))
    if not both:
        return []
    if len(both) < 2:
        (i,) = both
        reach_up, cheaper = ours_r[i] > seed_r[i], ours_s[i] < seed_s[i]
        no_worse = ours_r[i] >= seed_r[i] - 0.005 and ours_s[i] <= seed_s[i] * 1.005
        return [Check(f"adaptive beats seed (reach {ours_r[i]:.1%} vs {seed_r[i]:.1%}, sends/msg "
                      f"{ours_s[i]:.2f} vs {seed_s[i]:.2f}) without losing on the other (one "
                      "seed: a point comparison, not judged on intervals)",
                      (reach_up or cheaper) and no_worse)]
    reach = paired([ours_r[i] for i in both], [seed_r[i] for i in both], higher_is_better=True)
    sends = paired([ours_s[i] for i in both], [seed_s[i] for i in both],
                   higher_is_better=False)
    dr = interval(ours_r[i] - seed_r[i] for i in both)
    ds = interval(ours_s[i] - seed_s[i] for i in both)
    assert dr is not None and ds is not None and dr.half is not None and ds.half is not None
    holds = ((reach == "better" and sends != "worse")
             or (sends == "better" and reach != "worse"))
    return [Check(f"adaptive beats seed beyond the 95% intervals of the paired differences "
                  f"(adaptive - seed, same seed, {len(both)} seeds): reach {dr.mean:+.1%} "
                  f"[{dr.lo:+.1%}, {dr.hi:+.1%}] ({reach}), sends/msg {ds.mean:+.2f} "
                  f"[{ds.lo:+.2f}, {ds.hi:+.2f}] ({sends}); better on one, not worse on the "
                  "other", holds)]


@cli.command()
@click.option("--population", "population_file", metavar="NAME|FILE", default=None,
              help=f"a shipped population ({', '.join(shipped())}: streams/harness/"
                   "populations) or a population file (YAML) [default: default]")
@click.option("--accounts", type=int, default=None,
              help="only the first N accounts of the population")
@click.option("--strategy", "strategies", type=click.Choice(STRATEGIES), multiple=True,
              help="how channels are chosen; repeat it to compare some strategies on the same "
                   "population  [default: adaptive]")
@click.option("--compare", is_flag=True, help="run every strategy on the same population")
@click.option("--seeds", type=click.IntRange(min=1), default=1, show_default=True,
              help="run each strategy on K seeds of the population (the file's seed + 0..K-1): "
                   "means and 95% intervals over them")
@click.option("--rate", default=12.0, show_default=True,
              help="push requests per second (blast makes ~5 provider calls of each: the "
                   "simulator answers ~150/s here)")
@click.option("--duration", default=140.0, show_default=True, help="seconds of load")
@click.option("--workers", default=1, show_default=True, help="stream workers")
@click.option("--rehearse", is_flag=True,
              help="no stack: play the router's own handlers against the population in this "
                   "process on a simulated clock (seconds a run), the same figures and report; "
                   "without the stack's timing, provider errors or verify")
@click.option("--json-out", type=click.Path(dir_okay=False, path_type=Path),
              default=Path("var/demo/figures.json"), show_default=True)
def demo(population_file: str | None, accounts: int | None, strategies: tuple[str, ...],
         compare: bool, seeds: int, rate: float, duration: float, workers: int,
         rehearse: bool, json_out: Path) -> None:
    """Run the whole loop on the embedded stack under load (stream workers, dispatcher,
    provider simulator playing a population, ack gateway, sink into ClickHouse), with live
    progress; end with the quality figures from ClickHouse and the HTML report."""
    try:
        crowd = Crowd.load(population_file)
    except (PopulationError, OSError) as exc:
        raise click.ClickException(str(exc)) from None
    if accounts is not None:
        if accounts < 1:
            raise click.BadParameter("must be >= 1", param_hint="--accounts")
        crowd.members = crowd.members[:accounts]
    if rate <= 0 or duration <= 0 or workers < 1:
        raise click.BadParameter("--rate and --duration must be > 0, --workers >= 1")
    base = get_settings()
    var_dir = Path("var")
    chosen = list(STRATEGIES) if compare else list(dict.fromkeys(strategies or ("adaptive",)))
    crowds = reseeded(crowd, seeds, accounts)
    runs: list[dict[str, Any]] = []
    kept: dict[str, Any] = {}
    pushes = rate * duration / len(crowd.members)
    if rehearse:
        console.print(f"rehearsal: {len(crowd.members):,} accounts, "
                      f"{sum(len(m.phones) for m in crowd.members):,} phones; {rate:g} "
                      f"requests/s for {duration:g} s of simulated time per strategy"
                      + (f", {seeds} seeds" if seeds > 1 else ""))
        for one in crowds:
            for name in chosen:
                last = one is crowds[-1] and name == chosen[-1]
                runs.append(rehearse_strategy(base, one, name, rate, duration, var_dir,
                                              kept if last else None))
                console.print(figures_table(runs[-1:], f"{name}, seed {one.spec.seed}: "
                                                       "rehearsed, from ClickHouse"))
        report(runs, kept, json_out, var_dir, len(chosen) > 1,
               bounds(crowds, REACH_WINDOW, duration, pushes=pushes))
        return
    with stack(Settings(topic_prefix=f"{base.tuning.topic_prefix}demo-smoke.",
                        kafka_bootstrap_servers=base.connections.kafka_bootstrap_servers),
               var_dir) as bootstrap:
        console.print(f"broker at {bootstrap}; {len(crowd.members):,} accounts, "
                      f"{sum(len(m.phones) for m in crowd.members):,} phones; {rate:g} "
                      f"requests/s for {duration:g} s per strategy"
                      + (f", {seeds} seeds" if seeds > 1 else ""))
        smoke(Settings(topic_prefix=f"{base.tuning.topic_prefix}demo-smoke.",
                       kafka_bootstrap_servers=bootstrap))
        for one in crowds:
            for name in chosen:
                last = one is crowds[-1] and name == chosen[-1]
                try:
                    runs.append(run_strategy(base, bootstrap, one, name, rate, duration, workers,
                                             var_dir, kept if last else None))
                except (AssertionError, TimeoutError, ProcessExited) as exc:
                    raise click.ClickException(
                        f"{exc}\n(logs: {var_dir}/demo-{name}-*.log)") from exc
                console.print(figures_table(runs[-1:], f"{name}, seed {one.spec.seed}: from "
                                                       "ClickHouse"))
    report(runs, kept, json_out, var_dir, len(chosen) > 1,
           bounds(crowds, REACH_WINDOW, duration, pushes=pushes))


def bound_table(found: dict[str, Any], title: str) -> Table:
    """One row per segment and one for everyone: blast's reach and sends in the model, the
    oracle's at the share of blast's reach, and the learner's bound when it was computed."""
    learner = "learner_sends" in found
    table = Table(title=title)
    columns = ["segment", "blast: reach / sends", "oracle: reach / sends"]
    if learner:
        columns.append(f"learner ({found['pushes']:.3g} pushes an account): reach / sends")
    for column in columns:
        table.add_column(column, justify="left" if column == "segment" else "right")
    for name, row in found["segments"].items():
        cells = [name, f"{row['blast_reach']:.1%} / {row['blast_sends']:.2f}",
                 f"{row['reach']:.1%} / {row['sends']:.2f}"]
        if learner:
            cells.append(f"{row['learner_reach']:.1%} / {row['learner_sends']:.2f}")
        table.add_row(*cells)
    cells = ["everyone", f"{found['blast_reach']:.1%} / {found['blast_sends']:.2f}",
             f"{found['reach']:.1%} / {found['sends']:.2f} ({found['ratio']:.1%} of blast's "
             "sends)"]
    if learner:
        cells.append(f"{found['learner_reach']:.1%} / {found['learner_sends']:.2f} "
                     f"({found['learner_ratio']:.1%})")
    table.add_row(*cells)
    return table


def reseeded(crowd: Crowd, seeds: int, accounts: int | None) -> list[Crowd]:
    """The population on `seeds` seeds: the file's seed, then + 1, ... (each cut to the first
    `accounts` accounts when given); the first is `crowd` itself."""
    out = [crowd]
    for i in range(1, seeds):
        other = Crowd(crowd.spec.model_copy(update={"seed": crowd.spec.seed + i}))
        if accounts is not None:
            other.members = other.members[:accounts]
        out.append(other)
    return out


def report(runs: list[dict[str, Any]], kept: dict[str, Any], json_out: Path, var_dir: Path,
           compare: bool, bound: dict[str, Any] | None = None) -> None:
    """The summary table, the checks of a comparison, the oracle's bound beside them, the JSON
    and the HTML report."""
    from connectors.clickhouse.client import shown
    from connectors.clickhouse.report import write_html

    checks = verdicts(runs)
    summary, segments = summarize(runs), summarize_segments(runs)
    k = len({r.get("seed") for r in runs})
    what = "strategies compared" if compare else "summary"
    if k > 1:
        console.print(summary_table(summary, f"{what}: means over {k} seeds ± the 95% "
                                             "confidence half-width (Student t)"))
    else:
        console.print(figures_table(runs, what))
    console.print(segment_table(segments, "where each strategy loses: per segment"
                                + (f" (means over {k} seeds)" if k > 1 else "")))
    if bound is not None:
        console.print(bound_table(bound, f"the best possible: an oracle that knows every "
                                         f"account's habits, at {bound['share']:.0%} of "
                                         "blast's reach (the simulator's model)"))
    for check in checks:
        mark = ("[yellow]n/a" if check.holds is None else
                "[green]yes" if check.holds else "[red]NO ")
        console.print(f"  {mark}[/] {check.text}")
    if bound is not None and "adaptive" in summary and "blast" in summary:
        spent = summary["adaptive"]["sends_per_message"]["mean"]
        console.print(f"  [yellow]info[/] adaptive sends {spent:.2f} per message; the oracle "
                      f"{bound['sends']:.2f} ({bound['ratio']:.1%} of blast's in the model): "
                      "the rest is what not knowing costs"
                      + (f"; one that learns each account from its own pushes at least "
                         f"{bound['learner_sends']:.2f} ({bound['learner_ratio']:.1%})"
                         if "learner_sends" in bound else ""))
    json_out.parent.mkdir(parents=True, exist_ok=True)
    json_out.write_text(json.dumps({
        "runs": runs, "seeds": sorted({r.get("seed") for r in runs}), "summary": summary,
        "segments": segments, "bound": bound,
        "checks": [{"check": c.text, "holds": c.holds, **({"information": True} if c.info
                                                          else {})} for c in checks]},
        indent=2) + "\n")
    means = [{"strategy": s, **{key: v["mean"] for key, v in figures.items()}}
             for s, figures in summary.items()]
    page = write_html(kept["report"], var_dir / "report.html", shown(kept["dsn"]),
                      comparison=means, segments=segments)
    console.print(f"figures: {json_out}")
    console.print(f"report:  {page.resolve()}")
    console.print(f"query:   CLICKHOUSE_DSN={shown(kept['dsn'])} pushcascade sql "  # noqa: S608
                  "\"SELECT * FROM message_summary LIMIT 10\"")  # (a hint printed, not run)
    broken = sum(r.get("verify_violations", 0) for r in runs)
    if broken:
        raise click.ClickException(f"pushcascade verify found {broken} violations of the "
                                   "promises (tables above)")
    console.print("[bold green]demo finished")

"""`pushcascade bench`: benchmarks (not tests) on the embedded broker or KAFKA_BOOTSTRAP_SERVERS."""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from streams.cli import cli

console = Console(stderr=True)
MIN_RATIO, AIM_RATIO = 1.0, 1.5  # router against the bare agent: required, aimed at
SCALE_AIM = 1.5  # two workers against one


@cli.group()
def bench() -> None:
    """Measure throughput and deadline lateness (benchmarks, not tests)."""


@bench.command()
@click.option("--requests", default=30000, show_default=True,
              help="push requests per throughput run (router and baseline alike)")
@click.option("--accounts", default=5000, show_default=True, help="accounts the requests go to")
@click.option("--pending", default=100000, show_default=True,
              help="pending deadlines in the lateness run (0 skips it)")
@click.option("--deadline", type=float, default=None,
              help="read deadline (s) of the lateness run [default: long enough that all "
                   "--pending are pending before the first is due]")
@click.option("--arrival", type=float, default=None,
              help="push requests/s arriving in the lateness run, so deadlines come due at "
                   "that rate [default: half the router's measured rate]")
@click.option("--repeat", default=2, show_default=True,
              help="alternated baseline/router runs; the median is reported")
@click.option("--scale/--no-scale", default=True, show_default=True,
              help="also measure two workers sharing the partitions against one")
@click.option("--json-out", type=click.Path(dir_okay=False, path_type=Path),
              default=Path("var/bench/router.json"), show_default=True,
              help="where the figures are written as JSON")
def router(requests: int, accounts: int, pending: int, deadline: float | None,
           arrival: float | None, repeat: int, scale: bool, json_out: Path) -> None:
    """Router push requests/s against a bare Faust agent, and deadline lateness."""
    from streams.harness.bench import run_router_bench

    if requests < 1 or accounts < 1 or repeat < 1 or pending < 0 or (
            arrival is not None and arrival <= 0):
        raise click.BadParameter("--requests, --accounts and --repeat must be >= 1, "
                                 "--pending >= 0, --arrival > 0")
    command = shlex.join(["pushcascade", *sys.argv[1:]])
    result = run_router_bench(requests=requests, accounts=accounts, pending=pending,
                              deadline=deadline, arrival=arrival, repeat=repeat,
                              var_dir=json_out.parent,
                              log=lambda line: console.print(f"[dim]{line}"), scale=scale)
    result["command"] = command
    json_out.parent.mkdir(parents=True, exist_ok=True)
    json_out.write_text(json.dumps(result, indent=2) + "\n")
    Console().print(figures_table(result))
    console.print(f"figures written to {json_out}")


def figures_table(result: dict[str, Any]) -> Table:
    """The rich table of one benchmark result."""
    table = Table(title="pushcascade bench router")
    table.add_column("figure")
    table.add_column("value", justify="right")
    for i, run in enumerate(result["runs"], 1):
        table.add_row(f"run {i}: baseline events/s", f"{run['baseline']['rate']:,.0f}")
        table.add_row(f"run {i}: router requests/s", f"{run['router']['rate']:,.0f}")
        table.add_row(f"run {i}: ratio", f"{run['ratio']:.2f}")
    ratio = result["ratio_median"]
    color = "green" if ratio >= AIM_RATIO else "yellow" if ratio >= MIN_RATIO else "red"
    table.add_row("baseline events/s (median)", f"{result['baseline_rate_median']:,.0f}")
    table.add_row("router requests/s (median)", f"{result['router_rate_median']:,.0f}")
    table.add_row(f"ratio (need >= {MIN_RATIO}, aim >= {AIM_RATIO})",
                  f"[{color}]{ratio:.2f}")
    scaling = result.get("scaling")
    if scaling:
        table.add_row("one worker requests/s", f"{scaling['one_worker']['rate']:,.0f}")
        table.add_row("two workers requests/s", f"{scaling['two_workers']['rate']:,.0f}")
        color = "green" if scaling["ratio"] >= SCALE_AIM else "yellow"
        table.add_row(f"two workers / one (aim >= {SCALE_AIM})",
                      f"[{color}]{scaling['ratio']:.2f}")
    late = result.get("lateness")
    if late:
        table.add_row("pending deadlines / read deadline / arriving",
                      f"{late['pending']:,} / {late['read_deadline_s']:.0f}s / "
                      f"{late['arrival_per_s']:,.0f} per s")
        table.add_row("pending when the first came due", f"{late['pending_at_first_due']:,}")
        table.add_row("all pending requests processed after", f"{late['ingest_seconds']}s")
        # an escalation's fired_at is its due time (replay determinism): lateness is when the
        # escalation was seen on its topic
        s = late["lateness_seen_ms"]
        table.add_row("lateness p50 / p99 / max (seen on push.escalations)",
                      f"{s['p50']:,.0f} / {s['p99']:,.0f} / {s['max']:,.0f} ms")
        table.add_row("escalated exactly once", f"{late['escalated_exactly_once']:,}")
        table.add_row("duplicates / missing", f"{late['duplicates']:,} / {late['missing']:,}")
        table.add_row("escalations/s", f"{late['escalations_per_s'] or 0:,.0f}")
        table.add_row("worker peak RSS", f"{late['worker_peak_rss_mib'] or 0:,.0f} MiB")
    table.add_row("command", result["command"])
    return table


@bench.command()
@click.option("--requests", default=30000, show_default=True, help="push requests")
@click.option("--accounts", default=5000, show_default=True, help="accounts, one device each")
@click.option("--pending", default=100000, show_default=True,
              help="pending receipt deadlines in the lateness run (0 skips it)")
@click.option("--deadline", type=float, default=None,
              help="receipt deadline (s) of the lateness run [default: from the measured rate]")
@click.option("--json-out", type=click.Path(dir_okay=False, path_type=Path),
              default=Path("var/bench/devices.json"), show_default=True)
def devices(requests: int, accounts: int, pending: int, deadline: float | None,
            json_out: Path) -> None:
    """Device sends/s through Method B's device stage, and receipt-deadline fallback lateness."""
    from streams.harness.bench import run_device_bench

    result = run_device_bench(requests=requests, accounts=accounts, pending=pending,
                              deadline=deadline, var_dir=json_out.parent,
                              log=lambda line: console.print(f"[dim]{line}"))
    rows = [("device sends/s (ORIGINAL_ROUTE)",
             f"{result['throughput']['device_sends_per_s']:,.0f}")]
    late = result["lateness"]
    if late:
        s = late["lateness_ms"]
        rows += [("pending receipt deadlines / deadline",
                  f"{late['pending']:,} / {late['receipt_deadline_s']:.0f}s"),
                 ("pending when the first came due", f"{late['pending_at_first_due']:,}"),
                 ("fallback lateness p50 / p99 / max",
                  f"{s['p50']:,.0f} / {s['p99']:,.0f} / {s['max']:,.0f} ms"),
                 ("fell back exactly once", f"{late['fell_back_exactly_once']:,}"),
                 ("duplicates / missing", f"{late['duplicates']:,} / {late['missing']:,}")]
    finish(result, json_out, "pushcascade bench devices", rows)


@bench.command()
@click.option("--accounts", default=50000, show_default=True, help="accounts in the campaign")
@click.option("--devices", default=4, show_default=True, help="devices per account")
@click.option("--receipt-deadline", type=float, default=20.0, show_default=True,
              help="PUSHCASCADE_RECEIPT_DEADLINE of the run (s)")
@click.option("--json-out", type=click.Path(dir_okay=False, path_type=Path),
              default=Path("var/bench/campaign.json"), show_default=True)
def campaign(accounts: int, devices: int, receipt_deadline: float, json_out: Path) -> None:
    """A campaign to accounts x devices silent devices: time to decision, fallback sends/s, the
    largest changelog record."""
    from streams.harness.bench import run_campaign_bench

    result = run_campaign_bench(accounts=accounts, devices=devices,
                                receipt_deadline=receipt_deadline, var_dir=json_out.parent,
                                log=lambda line: console.print(f"[dim]{line}"))
    d = result["decision"]
    rows = [("devices targeted (original-route sends)", f"{result['targets']:,}"),
            ("decision: targeted / acked / fallback",
             f"{d['targeted']:,} / {d['acked']:,} / {d['fallback']}"),
            ("decision after the last target's deadline",
             f"{result['decision_after_last_target_ms']:,} ms"),
            ("fallback sends / devices with exactly one",
             f"{result['fallback_sends']:,} / {result['devices_with_one_fallback']:,}"),
            ("fallback sends/s", f"{result['fallback_sends_per_s'] or 0:,.0f}"),
            ("last fallback after the decision",
             f"{result['last_fallback_after_decision_ms'] or 0:,} ms")]
    rows += [(f"largest {name}" if " " in name else f"largest {name} state value",
              f"{size:,} bytes")
             for name, size in result["largest_changelog_record_bytes"].items()]
    finish(result, json_out, "pushcascade bench campaign", rows)


@bench.command()
@click.option("--sends", default=5000, show_default=True, help="SMS sends dispatched (and "
              "called from the bare client)")
@click.option("--in-flight", default=500, show_default=True, help="provider requests in flight")
@click.option("--acks", default=3000, show_default=True, help="read acks sent to the gateway")
@click.option("--concurrency", default=100, show_default=True, help="load generator requests "
              "in flight")
@click.option("--json-out", type=click.Path(path_type=Path),
              default=Path("var/bench/dispatch.json"), show_default=True,
              help="where the figures are written as JSON")
def dispatch(sends: int, in_flight: int, acks: int, concurrency: int, json_out: Path) -> None:
    """Dispatcher sends/s against the provider simulator beside a bare client's calls; the ack
    gateway's acks/s and latency from a load generator process."""
    from streams.harness.bench.dispatch import run_dispatch_bench

    r = run_dispatch_bench(sends, in_flight, acks, concurrency, json_out.parent,
                           log=lambda line: console.print(f"[dim]{line}"))
    g, w, h = r["gateway"], r["simulator_wrk"], r["apns_h2load"]
    finish(r, json_out, "pushcascade bench dispatch", [
        ("simulator under wrk: /_control/health", f"{w['health']['per_s']:,.0f}/s"),
        (f"simulator under wrk: signed SendSms accepted ({in_flight} connections)",
         f"{w['sms_accepted_per_s']:,.0f}/s (p99 {w['sms']['p99_us'] / 1000:.0f} ms)"),
        ("dispatcher / wrk on the same simulator", f"{r['dispatcher_over_wrk']:.2f}"),
        (f"bare client: SMS adapter calls/s ({in_flight} in flight)",
         f"{r['bare_calls_per_s']:,.0f}"),
        (f"dispatcher: sends/s with outcomes ({in_flight} in flight)",
         f"{r['dispatcher_sends_per_s']:,.0f}"),
        ("dispatcher / bare client", f"{r['ratio']:.2f}"),
        ("CPU cores while it ran", ", ".join(f"{name} {cores:.2f}"
                                             for name, cores in r["cpu_cores"].items())),
        (f"simulator under h2load: /_control/health over HTTP/2 ({h['connections']} "
         f"connections x {h['streams']} streams)", f"{h['health']['per_s']:,.0f}/s"),
        ("simulator under h2load: APNs calls accepted", f"{h['per_s']:,.0f}/s"),
        (f"bare client: APNs adapter calls/s over HTTP/2 ({in_flight} in flight)",
         f"{r['apns_calls_per_s']:,.0f}"),
        ("APNs adapter / h2load", f"{r['apns_calls_per_s'] / h['per_s']:.2f}"),
        (f"gateway: read acks/s ({concurrency} in flight)", f"{g['acks_per_s']:,.0f}"),
        ("gateway latency p50 / p99", f"{g['p50_ms']:.0f} / {g['p99_ms']:.0f} ms")])


@bench.command()
@click.option("--seconds", default=10.0, show_default=True, help="each wrk run's duration")
@click.option("--connections", default=100, show_default=True, help="wrk connections")
@click.option("--threads", default=2, show_default=True, help="wrk threads")
@click.option("--python-acks", default=3000, show_default=True,
              help="read acks from the Python load generator, for comparison (0: skip)")
@click.option("--json-out", type=click.Path(path_type=Path),
              default=Path("var/bench/gateway.json"), show_default=True,
              help="where the figures are written as JSON")
def gateway(seconds: float, connections: int, threads: int, python_acks: int,
            json_out: Path) -> None:
    """The ack gateway under wrk (a compiled load generator): read acks/s and latency beside
    its own /healthz in the same run, and beside the Python load generator."""
    from streams.harness.bench.gateway import MissingTool, run_gateway_bench

    try:
        r = run_gateway_bench(seconds, connections, threads, python_acks, json_out.parent,
                              log=lambda line: console.print(f"[dim]{line}"))
    except MissingTool as exc:
        raise click.ClickException(str(exc)) from None
    h, a, p = r["healthz"], r["acks"], r["python_loadgen"]

    def ms(us: float) -> str:
        return f"{us / 1000:.1f}"

    rows = [
        (f"wrk /healthz ({connections} connections)", f"{h['per_s']:,.0f}/s"),
        ("  p50 / p99 / max (ms)", f"{ms(h['p50_us'])} / {ms(h['p99_us'])} / {ms(h['max_us'])}"),
        (f"wrk read acks ({connections} connections)", f"{a['per_s']:,.0f}/s"),
        ("  p50 / p99 / max (ms)", f"{ms(a['p50_us'])} / {ms(a['p99_us'])} / {ms(a['max_us'])}"),
        ("  recorded (2xx) / refused / errors", f"{a['recorded']:,} / {a['refused']:,} / "
                                                 f"{a['errors']:,}"),
        ("  acks on push.acks", f"{r['acks_on_topic']:,}"),
        ("read acks / /healthz (same run)", f"{r['acks_over_healthz']:.2f}"),
    ]
    if p:
        rows += [(f"Python load generator: read acks ({connections} in flight)",
                  f"{p['acks_per_s']:,.0f}/s"),
                 ("  p50 / p99 (ms)", f"{p['p50_ms']:.0f} / {p['p99_ms']:.0f}"),
                 ("wrk / Python generator", f"{a['per_s'] / p['acks_per_s']:.1f}")]
    finish(r, json_out, "pushcascade bench gateway", rows)


@bench.command()
@click.option("--events", default=1_000_000, show_default=True, help="mixed events on the topics")
@click.option("--batch", default=50_000, show_default=True, help="rows per insert (both sides)")
@click.option("--json-out", type=click.Path(path_type=Path),
              default=Path("var/bench/sink.json"), show_default=True,
              help="where the figures are written as JSON")
def sink(events: int, batch: int, json_out: Path) -> None:
    """Sink rows/s from the topics into chDB beside a bare clickhouse-connect insert of the
    same rows."""
    from streams.harness.bench.sink import run_sink_bench

    r = run_sink_bench(events, batch, json_out.parent,
                       log=lambda line: console.print(f"[dim]{line}"))
    finish(r, json_out, "pushcascade bench sink", [
        ("events (12 topics)", f"{r['events']:,}"),
        (f"bare clickhouse-connect insert ({batch:,} rows per insert)",
         f"{r['bare_rows_per_s']:,.0f} rows/s"),
        ("sink: consume, insert (ClickHouse decodes the Avro), commit",
         f"{r['sink_rows_per_s']:,.0f} rows/s"),
        ("sink / bare (target >= 0.5)", f"{r['ratio']:.2f}"),
        ("rows stored (after FINAL)", f"{r['rows_stored']:,}")])


@bench.command()
@click.option("--rate", default=4000.0, show_default=True,
              help="push requests/s offered for the whole run (above one worker's capacity)")
@click.option("--phase", default=15.0, show_default=True,
              help="seconds of each phase: one worker, two, after the SIGTERM")
@click.option("--accounts", default=5000, show_default=True, help="accounts the requests go to")
@click.option("--escalate-every", default=20, show_default=True,
              help="every N-th request is HIGH, never read, and must escalate exactly once")
@click.option("--deadline", default=5.0, show_default=True, help="read deadline of HIGH (s)")
@click.option("--store", default="rocksdb://", show_default=True,
              help="the workers' table store (memory:// or rocksdb://)")
@click.option("--standby", default=1, show_default=True,
              help="standby replicas of each table partition")
@click.option("--json-out", type=click.Path(dir_okay=False, path_type=Path),
              default=Path("var/bench/scale.json"), show_default=True)
def scale(rate: float, phase: float, accounts: int, escalate_every: int, deadline: float,
          store: str, standby: int, json_out: Path) -> None:
    """One worker under steady load, a second joins, then one is stopped with SIGTERM."""
    from streams.harness.bench.scale import run_scale_bench

    if rate <= 0 or phase <= 0 or accounts < 1 or escalate_every < 1:
        raise click.BadParameter("--rate, --phase, --accounts and --escalate-every must be > 0")
    result = run_scale_bench(rate=rate, phase=phase, accounts=accounts,
                             escalate_every=escalate_every, deadline=deadline,
                             store=store, standby=standby, var_dir=json_out.parent,
                             log=lambda line: console.print(f"[dim]{line}"))
    r, esc = result["sends_per_s"], result["escalations"]
    rows = [("requests offered / produced", f"{rate:,.0f}/s / {result['requests']:,}"),
            ("worker tables", f"{store}, {standby} standby"),
            ("sends/s: one worker", f"{r['one']:,.0f}"),
            ("sends/s: two workers", f"{r['two']:,.0f}"),
            ("two / one", f"{result['two_over_one']}"),
            ("sends/s: after SIGTERM (one left)", f"{r['takeover']:,.0f}"),
            ("partitions: one / two / after", f"{result['partitions']['one']} / "
             f"{result['partitions']['two']} / {result['partitions']['takeover']}"),
            ("requests behind at each phase end", " / ".join(
                f"{v:,}" for v in result["behind_at_phase_end"].values())),
            ("second worker ready after", f"{result['second_ready_after_s']} s"),
            ("stopped worker exited after SIGTERM", f"{result['sigterm_exit_s']} s"),
            ("takeover (longest silence of its partitions)",
             f"{result['takeover_s']} s (session timeout {result['session_timeout_s']} s)"),
            ("requests without a send", f"{result['requests_without_send']:,}"),
            ("HIGH escalated once / lost / duplicated",
             f"{esc['escalated_once']:,} of {esc['high_requests']:,} / {esc['lost']} / "
             f"{esc['duplicated']}"),
            ("escalation sends repeated with the same send_id",
             f"{esc['same_send_repeated']}")]
    finish(result, json_out, "pushcascade bench scale", rows)


@bench.command()
@click.option("--requests", default=3000, show_default=True, help="push requests per run")
@click.option("--accounts", default=1000, show_default=True, help="accounts they go to")
@click.option("--json-out", type=click.Path(dir_okay=False, path_type=Path),
              default=Path("var/bench/pipeline.json"), show_default=True)
def pipeline(requests: int, accounts: int, json_out: Path) -> None:
    """Push requests/s the whole loop carries to the providers with 1 and 2 stream workers,
    request-to-provider latency and each process's CPU, beside a bare confluent-kafka
    passthrough."""
    from streams.harness.bench.pipeline import run_pipeline_bench

    if requests < 1 or accounts < 1:
        raise click.BadParameter("--requests and --accounts must be >= 1")
    result = run_pipeline_bench(requests=requests, accounts=accounts, var_dir=json_out.parent,
                                log=lambda line: console.print(f"[dim]{line}"))
    rows = [("passthrough requests/s (reference)", f"{result['passthrough']['rate']:,.0f}")]
    for run in result["runs"]:
        late = run["request_to_provider_ms"]
        rows += [(f"{run['subject']}: requests/s to the providers", f"{run['rate']:,.1f}")]
        if run.get("ratio_to_passthrough") is not None:
            rows.append((f"{run['subject']}: ratio to the passthrough",
                         f"{run['ratio_to_passthrough']}"))
        rows += [(f"{run['subject']}: request to provider call p50 / p99",
                  f"{late['p50']:,.0f} / {late['p99']:,.0f} ms"),
                 (f"{run['subject']}: CPU cores per process while requests flow",
                  ", ".join(f"{name} {cores:.2f}" for name, cores in run["cpu_cores"].items()))]
    rows.append(("two workers / one", f"{result['two_over_one']}"))
    finish(result, json_out, "pushcascade bench pipeline", rows)


def finish(result: dict[str, Any], json_out: Path, title: str,
           rows: list[tuple[str, str]]) -> None:
    """Stamp the command, write the figures as JSON and print them as a table."""
    result["command"] = shlex.join(["pushcascade", *sys.argv[1:]])
    json_out.parent.mkdir(parents=True, exist_ok=True)
    json_out.write_text(json.dumps(result, indent=2) + "\n")
    table = Table(title=title)
    table.add_column("figure")
    table.add_column("value", justify="right")
    for figure, value in [*rows, ("command", result["command"])]:
        table.add_row(figure, value)
    Console().print(table)
    console.print(f"figures written to {json_out}")


@bench.command()
@click.option("--minutes", default=30.0, show_default=True, help="minutes of steady load")
@click.option("--rate", default=3.0, show_default=True,
              help="push requests/s (the simulated people answer with receipts and reads); "
                   "keep it below what the dispatcher and simulator sustain, or the backlog "
                   "is what grows")
@click.option("--warmup", default=5.0, show_default=True,
              help="minutes left out of the slopes (start-up, caches filling)")
@click.option("--accounts", default=100, show_default=True,
              help="accounts of the demo's population (with their phones and profiles)")
@click.option("--interval", default=5.0, show_default=True, help="seconds between samples")
@click.option("--deadline", default=20.0, show_default=True,
              help="read deadline (s) of every importance; receipt deadline half of it")
@click.option("--in-flight", default=50, show_default=True,
              help="provider requests the dispatcher has in flight at most")
@click.option("--retention", default=120.0, show_default=True,
              help="seconds message state and the dispatcher's dedupe window are kept (a day "
                   "by default: shorter, so they turn over within the run)")
@click.option("--json-out", type=click.Path(dir_okay=False, path_type=Path),
              default=Path("var/bench/soak.json"), show_default=True)
@click.option("--plot", "plot_png", type=click.Path(dir_okay=False, path_type=Path),
              default=Path("var/bench/soak.png"), show_default=True,
              help="PNG of RSS and fds over time (an HTML page is written beside it)")
@click.option("--replot", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default=None, help="no run: the table and the plot again from a run's JSON")
def soak(minutes: float, rate: float, warmup: float, accounts: int, interval: float,
         deadline: float, in_flight: int, retention: float, json_out: Path, plot_png: Path,
         replot: Path | None) -> None:
    """Steady load through the whole loop; RSS and open fds of every process sampled, with
    each one's growth per hour after the warm-up."""
    from streams.harness.bench.soak import plot_html, render_png, run_soak_bench

    if replot is not None:
        result = json.loads(replot.read_text())
        problem = render_png(plot_html(result, plot_png.with_suffix(".html")), plot_png)
        Console(width=max(Console().width, 140)).print(soak_table(result))
        console.print(f"plot: {plot_png.with_suffix('.html') if problem else plot_png}"
                      + (f" ({problem})" if problem else ""))
        return
    if (minutes <= 0 or rate <= 0 or accounts < 1 or interval <= 0 or retention <= 0
            or deadline <= 0 or in_flight < 1
            or not 0 <= warmup < minutes):
        raise click.BadParameter("--minutes, --rate, --interval, --deadline, --retention > 0, "
                                 "--accounts >= 1, 0 <= --warmup < --minutes")
    result = run_soak_bench(minutes=minutes, rate=rate, warmup=warmup, accounts=accounts,
                            interval=interval, deadline=deadline, retention=retention,
                            in_flight=in_flight, var_dir=json_out.parent,
                            log=lambda line: console.print(f"[dim]{line}"))
    result["command"] = shlex.join(["pushcascade", *sys.argv[1:]])
    html = plot_html(result, plot_png.with_suffix(".html"))
    problem = render_png(html, plot_png)
    result["plot"] = str(html) if problem else str(plot_png)
    json_out.parent.mkdir(parents=True, exist_ok=True)
    json_out.write_text(json.dumps(result, indent=2) + "\n")
    Console(width=max(Console().width, 140)).print(soak_table(result))
    for group, lag in result["lag"].items():
        console.print(f"lag of {group}: {lag['warm']:,.0f} records at the end of the warm-up, "
                      f"{lag['end']:,.0f} at the end, at most {lag['max']:,.0f}")
    for name, held in result.get("held", {}).items():
        console.print(f"{name}: {held['warm']:,.0f} at the end of the warm-up, "
                      f"{held['end']:,.0f} at the end, at most {held['max']:,.0f}")
    console.print(f"figures written to {json_out}; plot: {result['plot']}"
                  + (f" ({problem})" if problem else ""))
    if result.get("aborted"):
        raise click.ClickException(f"the run stopped after {result['load_seconds'] / 60:.1f} "
                                   f"min (figures above are until then): {result['aborted']}")


def soak_table(result: dict[str, Any]) -> Table:
    """One row per process: RSS start / end / peak and slope, fds start / end and slope,
    threads."""
    table = Table(title=f"pushcascade bench soak — {result['requests']:,} requests at "
                        f"{result['rate']:g}/s over {result['load_seconds'] / 60:.1f} min, "
                        f"slopes after {result['warmup_minutes']:g} min")
    for name, justify in (("process", "left"), ("RSS start", "right"), ("RSS warm", "right"),
                          ("RSS end", "right"), ("RSS peak", "right"), ("MiB/h", "right"),
                          ("MiB/h 2nd half", "right"), ("fds start", "right"),
                          ("fds end", "right"), ("fds/h", "right"), ("threads", "right")):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]

    def num(value: float | None, fmt: str = "{:,.1f}") -> str:
        return "–" if value is None else fmt.format(value)

    for name, p in result["processes"].items():
        if not p.get("samples"):
            table.add_row(name, *["–"] * 10)
            continue
        table.add_row(name, num(p["rss_start_mib"]), num(p["rss_warm_mib"]),
                      num(p["rss_end_mib"]), num(p["rss_peak_mib"]),
                      num(p["rss_slope_mib_per_h"], "{:+,.1f}"),
                      num(p["rss_slope_second_half_mib_per_h"], "{:+,.1f}"),
                      num(p["fds_start"], "{:,}"), num(p["fds_end"], "{:,}"),
                      num(p["fd_slope_per_h"], "{:+,.1f}"),
                      f"{p['threads_start']} → {p['threads_end']}" if "threads_end" in p else "–")
    return table

"""`pushcascade demo`: the embedded stack end to end, with live progress."""

from __future__ import annotations

import shutil
import time
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.live import Live
from rich.table import Table

from connectors.producer import PushProducer, RecordProducer
from connectors.serving import free_port
from connectors.simulator import Simulator, SimulatorSettings, SimulatorThread
from schemas import Codec
from streams.cli import cli
from streams.harness import (
    Population,
    Process,
    ProcessExited,
    Tap,
    population,
    producer_for,
    stack,
    start_python,
    start_worker,
    wait_accounts,
    worker_env,
)
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


DEMO_TUNING = {"new_account_pushes": 2, "read_deadline_low": 3, "read_deadline_normal": 3,
               "read_deadline_high": 3, "read_deadline_urgent": 3, "receipt_deadline": 2,
               "probe_count_first": 5, "probe_device_per_hour": 3600, "probe_timeout": 2}
#: After the last push, every timer it can start has come due by then: its read deadline, and
#: the receipt deadline of the APP send an escalation may make.
LAST_TIMER = DEMO_TUNING["read_deadline_high"] + DEMO_TUNING["receipt_deadline"]


class Flow:
    """What went through the pipeline so far, read from its topics."""

    def __init__(self, settings: Settings) -> None:
        self.taps = {n: Tap(settings, n) for n in ("push.sends", "push.outcomes", "push.acks",
                                                   "push.results")}

    def poll(self) -> tuple[int, ...]:
        """Read what is new; a fingerprint of the counts (unchanged = quiet)."""
        for tap in self.taps.values():
            tap.poll(0.05)
        return tuple(len(t.records) for t in self.taps.values())

    def rows(self, requests: int) -> list[tuple[str, int | str]]:
        """The live table's rows."""
        sends = Counter(s["reason"] for s in self.taps["push.sends"].records
                        if s["device_id"] or s["reason"] not in DEVICE_REASONS)
        outcomes = Counter(o["status"] for o in self.taps["push.outcomes"].records)
        acks = Counter(a["kind"] for a in self.taps["push.acks"].records)
        read = {r["message_id"] for r in self.taps["push.results"].records
                if r["status"] == "READ"}
        return [("push requests", requests), ("fan-out sends (new accounts)", sends["FANOUT"]),
                ("primary sends (established)", sends["PRIMARY"]),
                ("escalations (missed read deadline)", sends["ESCALATION"]),
                ("device sends on the original route", sends["ORIGINAL_ROUTE"]),
                ("device fallback sends (no receipt)", sends["FALLBACK_ROUTE"]),
                ("probes", sends["PROBE"]),
                ("provider: accepted / rejected / failed",
                 f"{outcomes['ACCEPTED']} / {outcomes['REJECTED']} / {outcomes['FAILED']}"),
                ("receipts (vendor callbacks)", acks["RECEIPT"]),
                ("reads (signed links)", acks["READ"]), ("messages read", len(read))]

    def table(self, requests: int, started: float) -> Table:
        """The live table."""
        table = Table(title=f"pushcascade closed loop — {time.monotonic() - started:4.1f} s")
        table.add_column("what")
        table.add_column("count", justify="right")
        for what, n in self.rows(requests):
            table.add_row(what, str(n))
        return table

    def close(self) -> None:
        """Close the taps."""
        for tap in self.taps.values():
            tap.close()


#: Reasons of the per-device sends (their account-level APP record is not counted twice).
DEVICE_REASONS = ("ORIGINAL_ROUTE", "FALLBACK_ROUTE", "PROBE")


def start_edge(settings: Settings, crowd: Population, var_dir: Path
               ) -> tuple[SimulatorThread, list[Process]]:
    """The provider simulator playing the population, the sink, the ack gateway, the
    dispatcher and a worker: the whole loop over HTTP, into ClickHouse."""
    port = free_port()
    gateway_url = f"http://127.0.0.1:{port}"
    options: dict[str, Any] = {"port": 0, "seed": 7, "gateway_url": gateway_url}
    sim = Simulator(SimulatorSettings(**options))
    sim.set_population(crowd.document())
    simulator = SimulatorThread(sim).start()
    env = {**worker_env(settings, **DEMO_TUNING, gateway_port=port, sql_port=free_port(),
                        sink_flush_interval=0.5, priors_interval=30),
           "CLICKHOUSE_DSN": settings.connections.clickhouse_dsn,
           "PUSHCASCADE_GATEWAY_URL": gateway_url,
           "PUSHCASCADE_PROVIDER_SIMULATOR_URL": simulator.url}
    procs = [start_python("streams.cli", "sink", env=env, workdir=var_dir, name="demo-sink"),
             start_python("streams.cli", "acks-gateway", env=env, workdir=var_dir,
                          name="demo-gateway"),
             start_python("streams.cli", "dispatch", env=env, workdir=var_dir,
                          name="demo-dispatch"),
             start_worker(env, var_dir, "demo-worker")]
    return simulator, procs


def closed_loop(settings: Settings, users: int, rounds: int, var_dir: Path) -> None:
    """Run the pipeline's processes and a simulated population over HTTP; show live progress."""
    people = population(users)
    crowd = Population(people)
    simulator, procs = start_edge(settings, crowd, var_dir)
    flow = Flow(settings)
    try:
        with producer_for(settings) as producer:
            crowd.register(producer)
        with console.status("worker, dispatcher and gateway starting, devices registering"):
            wait_accounts(settings, crowd.users, workers=procs)
        started, sent = time.monotonic(), 0
        pushes = PushProducer(settings.connections.kafka_bootstrap_servers,
                              topic_prefix=settings.tuning.topic_prefix,
                              schema_registry_url=settings.connections.schema_registry_url)
        with pushes as producer, \
                Live(flow.table(0, started), console=console, refresh_per_second=4) as live:

            def show() -> tuple[int, ...]:
                counts = flow.poll()
                live.update(flow.table(sent, started))
                return counts

            for r in range(rounds):
                for u in people:
                    producer.push({"message_id": f"{u.account_id}-m{r}",
                                   "account_id": u.account_id, "importance": "HIGH",
                                   "title": "Your parcel", "body": f"update {r}",
                                   "read_action": "LINK", "link": "https://shop.example/parcel",
                                   "campaign_id": None, "device_ids": [],
                                   "created_at": int(time.time() * 1000)})
                    sent += 1
                producer.flush()
                pace(2.0, show, procs)
            # let the last timers come due, then wait until nothing moves any more
            pace(LAST_TIMER, show, procs)
            quiet(show, simulator, procs)
        rows = dict(flow.rows(sent))
        readers = [u for u in people if u.reads_on]
        channel_sends = sum(int(rows[k]) for k in ("fan-out sends (new accounts)",
                                                   "primary sends (established)",
                                                   "escalations (missed read deadline)"))
        console.print(f"messages read: {rows['messages read']} "
                      f"(of {len(readers) * rounds} pushed to users who read); channel sends per "
                      f"message: {channel_sends / max(sent, 1):.2f}")
        analytics(settings, flow, procs, var_dir)
    finally:
        flow.close()
        for proc in reversed(procs):
            proc.stop(8)
        simulator.stop()


def analytics(settings: Settings, flow: Flow, procs: list[Process], var_dir: Path,
              timeout: float = 60.0) -> None:
    """Wait until ClickHouse holds every send, then show the channel rates and write the
    report."""
    from connectors.clickhouse.client import shown
    from connectors.clickhouse.report import SECTIONS, collect, write_html
    from connectors.clickhouse.warehouse import open_warehouse

    dsn = settings.connections.clickhouse_dsn
    sent = len({s["send_id"] for s in flow.taps["push.sends"].records})
    end = time.monotonic() + timeout
    with console.status("the sink is writing the events to ClickHouse"):
        while True:
            for proc in procs:
                proc.check()
            try:
                stored = int(open_warehouse(dsn).rows(
                    "SELECT count() AS n FROM sends FINAL")[0]["n"])
            except Exception:  # the sink may not answer yet
                stored = -1
            if stored >= sent:
                break
            if time.monotonic() > end:
                raise TimeoutError(f"ClickHouse holds {stored} of {sent} sends after {timeout}s")
            time.sleep(0.5)
    data = collect(open_warehouse(dsn))
    table = Table(title="from ClickHouse: " + SECTIONS[0].question)
    for column in ("channel", "sends", "receipts", "reads", "receipt rate", "read rate"):
        table.add_column(column, justify="left" if column == "channel" else "right")
    for r in data["Channels"]:
        table.add_row(str(r["channel"]), str(r["sends"]), str(r["receipts"]), str(r["reads"]),
                      f"{r['receipt_rate']:.2f}", f"{r['read_rate']:.2f}")
    console.print(table)
    page = write_html(data, var_dir / "report.html", shown(dsn))
    console.print(f"report: {page.resolve()}")
    console.print(f"query:  CLICKHOUSE_DSN={shown(dsn)} pushcascade sql \"SELECT * FROM "
                  "message_summary LIMIT 10\"")


def quiet(show: Callable[[], tuple[int, ...]], simulator: SimulatorThread,
          procs: list[Process], timeout: float = 90.0) -> None:
    """Wait until the simulator has answered everything and no topic grew for two seconds."""
    end = time.monotonic() + timeout
    last, since = show(), time.monotonic()
    while time.monotonic() < end:
        for proc in procs:
            proc.check()
        simulator.idle(timeout=max(1.0, end - time.monotonic()))
        counts = show()
        if counts != last:
            last, since = counts, time.monotonic()
        elif time.monotonic() - since > 2.0:
            return
        time.sleep(0.25)
    raise TimeoutError(f"the pipeline did not settle in {timeout}s")


def pace(seconds: float, show: Callable[[], object], procs: list[Process]) -> None:
    """Refresh the live table four times a second for `seconds` (the demo's rhythm)."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        for proc in procs:
            proc.check()
        show()
        time.sleep(0.25)


@cli.command()
@click.option("--users", default=40, show_default=True, help="simulated accounts")
@click.option("--rounds", default=6, show_default=True, help="pushes per account")
def demo(users: int, rounds: int) -> None:
    """Run the embedded stack and the whole loop over HTTP (worker, dispatcher, provider
    simulator with its population, ack gateway, sink into ClickHouse), with live progress;
    end with the channel rates from ClickHouse and the HTML report."""
    base = get_settings()
    prefix = f"{base.tuning.topic_prefix}demo{uuid.uuid4().hex[:6]}."
    var_dir = Path("var")
    dsn = base.connections.clickhouse_dsn
    if dsn == Connections.model_fields["clickhouse_dsn"].default:  # a fresh store per demo
        shutil.rmtree(var_dir / "demo-chdb", ignore_errors=True)
        dsn = f"chdb://./{var_dir}/demo-chdb"
    given = Settings(topic_prefix=prefix, clickhouse_dsn=dsn,
                     kafka_bootstrap_servers=base.connections.kafka_bootstrap_servers)
    with stack(given, var_dir) as bootstrap:
        settings = Settings(topic_prefix=prefix, kafka_bootstrap_servers=bootstrap,
                            clickhouse_dsn=dsn)
        console.print(f"broker at {bootstrap}, topics (prefix {prefix})")
        smoke(settings)
        try:
            closed_loop(settings, users, rounds, var_dir)
        except (AssertionError, TimeoutError, ProcessExited) as exc:
            raise click.ClickException(f"{exc}\n(logs: {var_dir}/demo-*.log)") from exc
    console.print("[bold green]demo finished")

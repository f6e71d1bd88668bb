"""`pushcascade demo`: the embedded stack end to end, with live progress."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import click
from rich.console import Console
from rich.live import Live
from rich.table import Table

from connectors.producer import PushProducer, RecordProducer
from schemas import Codec
from streams.cli import cli
from streams.clickhouse import client
from streams.harness import (
    DeviceSimulator,
    Population,
    Process,
    ProcessExited,
    Tap,
    population,
    producer_for,
    stack,
    start_worker,
    wait_accounts,
    worker_env,
)
from streams.settings import Settings, get_settings

console = Console(stderr=True)


def sample_records(now_ms: int) -> dict[str, dict]:
    """One valid record for every topic outside users write."""
    account, device, message = "acct-demo", "dev-demo", f"msg-{uuid.uuid4().hex[:8]}"
    return {
        "device.registry": {"device_id": device, "account_id": account, "manufacturer": "Huawei",
                            "model": "P60", "routes": ["HUAWEI", "JPUSH"], "active": True,
                            "registered_at": now_ms},
        "account.profiles": {"account_id": account, "phone": "+8613800000000",
                             "wechat_openid": "o-demo", "email": None, "updated_at": now_ms},
        "account.settings": {"account_id": account, "primary": None, "secondary": None,
                             "updated_at": now_ms},
        "push.requests": {"message_id": message, "account_id": account, "importance": "HIGH",
                          "title": "Your parcel", "body": "arrives today", "read_action": "BUTTON",
                          "campaign_id": None, "device_ids": [], "created_at": now_ms},
        "push.acks": {"message_id": message, "account_id": account, "channel": "APP",
                      "kind": "READ", "device_id": device, "route": "HUAWEI", "send_id": None,
                      "acked_at": now_ms},
    }


def smoke(settings: Settings) -> None:
    """Produce one record of each writable type, read each back, and round-trip a chDB row."""
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
    ch = client(settings.connections.clickhouse_dsn)
    ch.command("CREATE TABLE IF NOT EXISTS demo_smoke (at DateTime64(3), note String) "
               "ENGINE = MergeTree ORDER BY at")
    ch.insert("demo_smoke", [[datetime.now(UTC), "smoke"]], column_names=["at", "note"])
    rows = ch.query("SELECT count() FROM demo_smoke").result_rows[0][0]
    console.print(f"  [green]ok[/] ClickHouse {settings.connections.clickhouse_dsn}: "
                  f"{rows} smoke rows")
    ch.close()


DEMO_TUNING = {"new_account_pushes": 2, "read_deadline_low": 3, "read_deadline_normal": 3,
               "read_deadline_high": 3, "read_deadline_urgent": 3, "receipt_deadline": 2,
               "probe_count_first": 5, "probe_device_per_hour": 3600, "probe_timeout": 2}
#: After the last push, every timer it can start has come due by then: its read deadline, and
#: the receipt deadline of the APP send an escalation may make.
LAST_TIMER = DEMO_TUNING["read_deadline_high"] + DEMO_TUNING["receipt_deadline"]


def progress(sim: DeviceSimulator, requests: int, started: float) -> Table:
    """The live table: what the pipeline sent and what the population answered."""
    c = sim.counts
    table = Table(title=f"pushcascade closed loop — {time.monotonic() - started:4.1f} s")
    table.add_column("what")
    table.add_column("count", justify="right")
    rows = [("push requests", requests), ("fan-out sends (new accounts)", c["send_FANOUT"]),
            ("primary sends (established)", c["send_PRIMARY"]),
            ("escalations (missed read deadline)", c["send_ESCALATION"]),
            ("device sends on the original route", c["send_ORIGINAL_ROUTE"]),
            ("device fallback sends (no receipt)", c["send_FALLBACK_ROUTE"]),
            ("probes", c["send_PROBE"]), ("receipts", c["receipt"]), ("reads", c["read"]),
            ("messages read", len(sim.read_messages))]
    for what, n in rows:
        table.add_row(what, str(n))
    return table


def closed_loop(settings: Settings, users: int, rounds: int, var_dir: Path) -> None:
    """Run a worker and a simulated population; show live progress and the outcome."""
    worker = start_worker(worker_env(settings, **DEMO_TUNING), var_dir, "demo-worker")
    people = population(users)
    crowd = Population(people)
    sim = crowd.simulator(settings)
    try:
        with producer_for(settings) as producer:
            crowd.register(producer)
        with console.status("worker starting, devices and profiles registering"):
            wait_accounts(settings, crowd.users, workers=[worker])
        sim.start()
        started, sent = time.monotonic(), 0
        pushes = PushProducer(settings.connections.kafka_bootstrap_servers,
                              topic_prefix=settings.tuning.topic_prefix,
                              schema_registry_url=settings.connections.schema_registry_url)
        with pushes as producer, \
                Live(progress(sim, 0, started), console=console, refresh_per_second=4) as live:

            def show() -> None:
                live.update(progress(sim, sent, started))

            for r in range(rounds):
                for u in people:
                    producer.push({"message_id": f"{u.account_id}-m{r}",
                                   "account_id": u.account_id, "importance": "HIGH",
                                   "title": "Your parcel", "body": f"update {r}",
                                   "read_action": "BUTTON", "campaign_id": None,
                                   "device_ids": [], "created_at": int(time.time() * 1000)})
                    sent += 1
                producer.flush()
                pace(2.0, show, worker)
            # let the last timers come due, then wait until every answer is processed
            pace(LAST_TIMER, show, worker)
            sim.wait_quiet(workers=[worker])
            show()
        sim.stop()
        readers = [u for u in people if u.reads_on]
        seen = sum(f"{u.account_id}-m{r}" in sim.read_messages
                   for u in readers for r in range(rounds))
        channel_sends = sum(sim.counts[f"send_{r}"] for r in ("FANOUT", "PRIMARY", "ESCALATION"))
        console.print(f"messages read by users who read: {seen} of {len(readers) * rounds}; "
                      f"channel sends per message: {channel_sends / max(sent, 1):.2f}")
    finally:
        sim.stop()
        worker.stop(8)


def pace(seconds: float, show: Callable[[], None], worker: Process) -> None:
    """Refresh the live table four times a second for `seconds` (the demo's rhythm)."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        worker.check()
        show()
        time.sleep(0.25)


@cli.command()
@click.option("--users", default=40, show_default=True, help="simulated accounts")
@click.option("--rounds", default=6, show_default=True, help="pushes per account")
def demo(users: int, rounds: int) -> None:
    """Run the embedded stack, a worker and a simulated population, with live progress."""
    base = get_settings()
    prefix = f"{base.tuning.topic_prefix}demo{uuid.uuid4().hex[:6]}."
    given = Settings(topic_prefix=prefix,
                     kafka_bootstrap_servers=base.connections.kafka_bootstrap_servers)
    var_dir = Path("var")
    with stack(given, var_dir) as bootstrap:
        settings = Settings(topic_prefix=prefix, kafka_bootstrap_servers=bootstrap)
        console.print(f"broker at {bootstrap}, topics (prefix {prefix})")
        smoke(settings)
        try:
            closed_loop(settings, users, rounds, var_dir)
        except (AssertionError, TimeoutError, ProcessExited) as exc:
            log = var_dir / "demo-worker.log"
            raise click.ClickException(f"{exc}\n(worker log: {log})") from exc
    console.print("[bold green]demo finished")

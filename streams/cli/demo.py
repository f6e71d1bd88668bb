"""`pushcascade demo`: the embedded stack end to end, with live progress."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import click
from confluent_kafka import OFFSET_BEGINNING, TopicPartition
from rich.console import Console
from rich.live import Live
from rich.table import Table

from connectors.producer import PushProducer, RecordProducer
from connectors.simulator import Simulator, population
from schemas import WRITABLE, Codec
from streams.cli import cli
from streams.clickhouse import client
from streams.embedded import stack
from streams.kafka import consumer
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


def smoke(bootstrap: str, settings: Settings) -> None:
    """Produce one record of each writable type, read each back, and round-trip a chDB row."""
    codec = Codec(settings.connections.schema_registry_url or None)
    records = sample_records(int(time.time() * 1000))
    with RecordProducer(bootstrap, topic_prefix=settings.tuning.topic_prefix,
                        codec=codec) as producer:
        for topic, record in records.items():
            producer.send(topic, record)
        console.print(f"produced {producer.flush()} records")
    reader = consumer(bootstrap, f"demo-{uuid.uuid4().hex[:8]}")
    reader.subscribe([settings.topic(t) for t in WRITABLE])
    seen: dict[str, dict] = {}
    deadline = time.monotonic() + 30
    while len(seen) < len(records) and time.monotonic() < deadline:
        msg = reader.poll(0.5)
        if msg is not None and not msg.error():
            topic = (msg.topic() or "")[len(settings.tuning.topic_prefix):]
            seen[topic] = codec.decode(msg.value(), topic=topic)
    reader.close()
    for topic, record in records.items():
        ok = seen.get(topic) == record
        console.print(f"  {'[green]ok' if ok else '[red]MISMATCH'}[/] {topic}")
        if not ok:
            raise click.ClickException(f"{topic}: read back {seen.get(topic)!r}")
    ch = client(settings.connections.clickhouse_dsn)
    ch.command("CREATE TABLE IF NOT EXISTS demo_smoke (at DateTime64(3), note String) "
               "ENGINE = MergeTree ORDER BY at")
    ch.insert("demo_smoke", [[datetime.now(UTC), "smoke"]], column_names=["at", "note"])
    rows = ch.query("SELECT count() FROM demo_smoke").result_rows[0][0]
    console.print(f"  [green]ok[/] ClickHouse {settings.connections.clickhouse_dsn}: "
                  f"{rows} smoke rows")
    ch.close()


DEMO_TUNING = {"PUSHCASCADE_NEW_ACCOUNT_PUSHES": "2", "PUSHCASCADE_READ_DEADLINE_LOW": "3",
               "PUSHCASCADE_READ_DEADLINE_NORMAL": "3", "PUSHCASCADE_READ_DEADLINE_HIGH": "3",
               "PUSHCASCADE_READ_DEADLINE_URGENT": "3", "PUSHCASCADE_RECEIPT_DEADLINE": "2",
               "PUSHCASCADE_PROBE_COUNT_FIRST": "5", "PUSHCASCADE_PROBE_DEVICE_PER_HOUR": "3600",
               "PUSHCASCADE_PROBE_TIMEOUT": "2"}


def wait_registered(settings: Settings, bootstrap: str, accounts: set[str],
                    timeout: float = 60) -> None:
    """Wait until the router's accounts table shows every account with a device and addresses."""
    name = f"{settings.tuning.topic_prefix}pushcascade-accounts-changelog"
    reader = consumer(bootstrap, f"demo-{uuid.uuid4().hex[:8]}")
    end = time.monotonic() + timeout
    while name not in reader.list_topics(timeout=10).topics:
        if time.monotonic() > end:
            raise click.ClickException("the worker did not start (see var/demo-worker.log)")
        time.sleep(0.3)
    parts = reader.list_topics(name, timeout=10).topics[name].partitions
    reader.assign([TopicPartition(name, p, OFFSET_BEGINNING) for p in parts])
    ready: set[str] = set()
    while ready < accounts and time.monotonic() < end:
        msg = reader.poll(0.2)
        value = msg.value() if msg is not None and not msg.error() else None
        if value:
            state = json.loads(value)
            if state and state["devices"] and state["addresses"]:
                ready.add(state["account_id"])
    reader.close()
    if ready < accounts:
        raise click.ClickException(f"only {len(ready)} of {len(accounts)} accounts registered")


def progress(sim: Simulator, requests: int, started: float) -> Table:
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
            ("messages read", len(sim.read))]
    for what, n in rows:
        table.add_row(what, str(n))
    return table


def closed_loop(settings: Settings, bootstrap: str, users: int, rounds: int) -> None:
    """Run a worker and a simulated population; show live progress and the outcome."""
    env = {**os.environ, **DEMO_TUNING, "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
           "PUSHCASCADE_TOPIC_PREFIX": settings.tuning.topic_prefix,
           "PUSHCASCADE_DATA_DIR": "var/demo-worker"}
    Path("var").mkdir(exist_ok=True)
    log = open("var/demo-worker.log", "wb")  # noqa: SIM115
    worker = subprocess.Popen([sys.executable, "-m", "streams.cli", "worker"], env=env,
                              stdout=log, stderr=subprocess.STDOUT)
    people = population(users)
    sim = Simulator(settings, bootstrap, people)
    try:
        sim.register()
        with console.status("worker starting, devices and profiles registering"):
            wait_registered(settings, bootstrap, {u.account_id for u in people})
        sim.start()
        started, sent = time.monotonic(), 0
        producer = PushProducer(bootstrap, topic_prefix=settings.tuning.topic_prefix,
                                schema_registry_url=settings.connections.schema_registry_url)
        with producer, \
                Live(progress(sim, 0, started), console=console, refresh_per_second=4) as live:
            for r in range(rounds):
                for u in people:
                    producer.push({"message_id": f"{u.account_id}-m{r}",
                                   "account_id": u.account_id, "importance": "HIGH",
                                   "title": "Your parcel", "body": f"update {r}",
                                   "read_action": "BUTTON", "campaign_id": None,
                                   "device_ids": [], "created_at": int(time.time() * 1000)})
                    sent += 1
                producer.flush()
                for _ in range(8):
                    live.update(progress(sim, sent, started))
                    time.sleep(0.25)
            for _ in range(32):  # let the last deadlines pass
                live.update(progress(sim, sent, started))
                time.sleep(0.25)
        sim.stop()
        readers = [u for u in people if u.reads_on]
        seen = sum(f"{u.account_id}-m{r}" in sim.read for u in readers for r in range(rounds))
        channel_sends = sum(sim.counts[f"send_{r}"] for r in ("FANOUT", "PRIMARY", "ESCALATION"))
        console.print(f"messages read by users who read: {seen} of {len(readers) * rounds}; "
                      f"channel sends per message: {channel_sends / max(sent, 1):.2f}")
    finally:
        worker.terminate()
        try:
            worker.wait(8)
        except subprocess.TimeoutExpired:
            worker.kill()
        log.close()


@cli.command()
@click.option("--users", default=40, show_default=True, help="simulated accounts")
@click.option("--rounds", default=6, show_default=True, help="pushes per account")
def demo(users: int, rounds: int) -> None:
    """Run the embedded stack, a worker and a simulated population, with live progress."""
    base = get_settings()
    settings = Settings(topic_prefix=f"{base.tuning.topic_prefix}demo{uuid.uuid4().hex[:6]}.",
                        kafka_bootstrap_servers=base.connections.kafka_bootstrap_servers)
    with stack(settings) as bootstrap:
        console.print(f"broker at {bootstrap}, topics (prefix {settings.tuning.topic_prefix})")
        smoke(bootstrap, settings)
        closed_loop(settings, bootstrap, users, rounds)
    console.print("[bold green]demo finished")

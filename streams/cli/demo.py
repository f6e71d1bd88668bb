"""`pushcascade demo`: the embedded stack end to end, with live progress."""

from __future__ import annotations

import time
import uuid

import click
from rich.console import Console

from connectors.producer import RecordProducer
from schemas import Codec
from streams.cli import cli
from streams.clickhouse import client
from streams.embedded import stack
from streams.kafka import consumer
from streams.settings import get_settings
from streams.topics import WRITABLE

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


def smoke(bootstrap: str) -> None:
    """Produce one record of each writable type, read each back, and round-trip a chDB row."""
    settings = get_settings()
    codec = Codec(settings.connections.schema_registry_url or None)
    records = sample_records(int(time.time() * 1000))
    with RecordProducer(bootstrap, settings=settings, codec=codec) as producer:
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
            topic = msg.topic()[len(settings.tuning.topic_prefix):]
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
    ch.insert("demo_smoke", [[time.time(), "smoke"]], column_names=["at", "note"])
    rows = ch.query("SELECT count() FROM demo_smoke").result_rows[0][0]
    console.print(f"  [green]ok[/] ClickHouse {settings.connections.clickhouse_dsn}: "
                  f"{rows} smoke rows")
    ch.close()


@cli.command()
def demo() -> None:
    """Run the embedded stack and a smoke flow through every topic and ClickHouse."""
    settings = get_settings()
    with console.status("starting the embedded stack"), stack(settings) as bootstrap:
        console.print(f"broker at {bootstrap}, topics created")
        smoke(bootstrap)
    console.print("[bold green]demo finished")

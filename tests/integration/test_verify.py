"""`pushcascade verify` on a real run of the whole loop (worker, dispatcher, simulator,
gateway, sink into chDB): 0 violations; then planted violations, each reported."""

from __future__ import annotations

import asyncio
import io
import json
import time
import uuid
from pathlib import Path
from typing import Any

from connectors.adapters.base import Delivery
from connectors.adapters.config import ProviderConfig
from connectors.adapters.registry import Registry
from connectors.clickhouse.client import client, database
from connectors.clickhouse.warehouse import Direct
from connectors.producer import PushProducer, RecordProducer
from schemas import Codec, spec
from streams.harness import wait_accounts
from streams.harness.crowd import Crowd
from streams.harness.loop import DEMO_TUNING, LAST_TIMER, Loop
from streams.kafka import producer
from streams.verify import Check, run, run_settled, violations
from tests.helpers import read_topic, run_cli

ACCOUNTS, ROUNDS = 6, 3


def found(checks: list[Check], name: str, text: str) -> list[str]:
    """The violations of the check called name that contain text."""
    return [v for c in checks if c.name == name for v in c.violations if text in v]


def shown(checks: list[Check]) -> str:
    from rich.console import Console

    from streams.cli.verify import table

    console = Console(width=200, file=io.StringIO())
    console.print(table(checks))
    return console.file.getvalue()  # type: ignore[attr-defined]


def test_verify_finds_nothing_in_a_real_run_then_each_planted_violation(settings_factory,
                                                                        tmp_path: Path):
    dsn = f"chdb://{tmp_path / 'chdb'}"
    settings = settings_factory(clickhouse_dsn=dsn, **DEMO_TUNING)
    crowd = Crowd.load()
    crowd.members = crowd.members[:ACCOUNTS]
    bootstrap, prefix = settings.connections.kafka_bootstrap_servers, settings.tuning.topic_prefix
    with Loop(settings, tmp_path, "verify", seed=crowd.spec.seed) as loop:
        assert loop.simulator is not None
        sim_url = loop.simulator.url
        with RecordProducer(bootstrap, topic_prefix=prefix) as out:
            for topic, record in crowd.registrations(int(time.time() * 1000)):
                out.send(topic, record)
        wait_accounts(settings, [m.account_id for m in crowd.members], timeout=120,
                      workers=loop.procs)
        loop.set_population(crowd.document(time.time()))
        with PushProducer(bootstrap, topic_prefix=prefix) as out:
            for n in range(ACCOUNTS * ROUNDS):
                out.push(crowd.request(n, int(time.time() * 1000)))  # account 0's in campaigns
                time.sleep(0.2)
        time.sleep(LAST_TIMER)
        clean = run_settled(settings, 90, settle=2.0, simulator_url=sim_url)
        print(shown(clean))
        assert violations(clean) == 0
        p1 = next(c for c in clean if c.promise == 1)
        assert p1.checked == ACCOUNTS * ROUNDS and p1.pending == 0
        assert all(c.checked > 0 for c in clean if not c.skipped and c.name != "lifecycle"
                   and c.promise != 4 and "dead_letters" not in c.name
                   and "account_settings" not in c.name and "route_changes" not in c.name
                   and "campaign_decisions" not in c.name)

        command = run_cli("verify", "--json", "--settle", "2", env={**loop.env(),
                          "PUSHCASCADE_VERIFY_SIMULATOR_URL": sim_url}, timeout=120)
        assert command.returncode == 0, command.stdout[-3000:] + command.stderr[-3000:]
        assert json.loads(command.stdout)["violations"] == 0

        # plant: the dispatcher stops, so what follows gets no outcome of its own; the workers
        # stop too, so nothing they send meanwhile adds to what is planted
        for proc in loop.procs:
            if proc.name.endswith("-dispatch") or "-worker" in proc.name:
                proc.stop(8)
        sends = read_topic(settings, "push.sends")
        outcomes = {o["send_id"]: o for o in read_topic(settings, "push.outcomes")}
        # a device send that is not a probe: a second (FAILED) outcome of a probe would also
        # change the probe window's rate in ClickHouse, a fourth violation (seen in CI)
        device = next(s for s in sends if s["device_id"] and s["reason"] != "PROBE"
                      and s["send_id"] in outcomes)
        sms = next(s for s in sends if s["channel"] == "SMS" and s["send_id"] in outcomes)
        orphan = {**device, "send_id": str(uuid.uuid4()), "attempt": 9,
                  "sent_at": device["sent_at"] - 600_000}
        produce(settings, "push.sends", device)  # the same send again (a repeat: allowed) ...
        produce(settings, "push.outcomes", {**outcomes[device["send_id"]], "status": "FAILED",
                                            "error_code": "planted"})  # ... a second outcome
        produce(settings, "push.sends", orphan)  # a send that never gets an outcome
        phone = next(m.phone_number for m in crowd.members if m.account_id == sms["account_id"])
        resend(sim_url, sms, phone)  # the provider called (and accepting) a second time

        time.sleep(3)  # the sink stores what was planted (flush interval 0.5 s)
        command = run_cli("verify", "--settle", "2", env={**loop.env(),
                          "PUSHCASCADE_VERIFY_SIMULATOR_URL": sim_url}, timeout=120)
        assert command.returncode == 1, command.stdout[-3000:] + command.stderr[-3000:]
        assert "pushcascade verify: 3 violation(s)" in command.stdout, command.stdout
        for proc in reversed(loop.procs):  # the sink lets go of the chDB store
            proc.stop(8)
        ch = client(dsn, database(dsn))
        try:
            dropped = next(r for r in read_topic(settings, "push.requests"))
            ch.command("DELETE FROM requests WHERE account_id = %(a)s AND message_id = %(m)s",
                       parameters={"a": dropped["account_id"], "m": dropped["message_id"]})
            planted = run(settings, settle=2.0, simulator_url=sim_url,
                          warehouse=Direct(ch, dsn))
        finally:
            ch.close()
    print(shown(planted))
    short = device["send_id"][:8]
    assert found(planted, "one outcome per send", f"send {short}…: 2 outcomes")
    assert found(planted, "one outcome per send", f"send {orphan['send_id'][:8]}…")
    assert found(planted, "no provider called twice (simulator)",
                 f"send {sms['send_id'][:8]}…: accepted by its provider 2 times")
    assert found(planted, "requests: each record stored once", dropped["account_id"][:10])
    assert violations(planted) == 4, shown(planted)


def produce(settings: Any, topic: str, record: dict[str, Any]) -> None:
    """Write one record as the stream processors or the dispatcher would."""
    codec = Codec(None)
    out = producer(settings.connections.kafka_bootstrap_servers)
    out.produce(settings.topic(topic), key=record["account_id"].encode(),
                value=codec.encode(spec(topic).record, record))
    assert out.flush(10) == 0


def resend(sim_url: str, send: dict[str, Any], phone: str) -> None:
    """Hand one SMS send to the provider simulator again, through its real adapter."""

    async def main() -> None:
        registry = Registry(ProviderConfig(simulator_url=sim_url))
        async with registry.client() as http:
            try:
                await registry.adapter("sms").send(http, Delivery(
                    send=send, address=phone, read_url="", receipt_token="planted"))
            finally:
                await registry.aclose()

    asyncio.run(main())

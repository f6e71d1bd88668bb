"""Benchmark of the HTTP edge: dispatcher sends/s against the provider simulator, beside the
same adapter calls from a bare client at the same concurrency; the gateway's acks/s and latency
from a load generator in another process."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from connectors.adapters import Delivery
from connectors.adapters.config import ProviderConfig
from connectors.adapters.registry import Registry
from connectors.serving import free_port
from connectors.settings import ConnectorSettings
from connectors.simulator import Simulator, SimulatorSettings, SimulatorThread
from connectors.tokens import AckToken, Signer
from schemas import Codec
from streams.harness.bench.common import (
    Log,
    bench_kafka,
    fresh_settings,
    keep_logs,
    percentile,
    produce,
    quiet,
)
from streams.harness.processes import start_python, worker_env
from streams.harness.taps import Tap


def sms_send(i: int, tag: str) -> dict[str, Any]:
    """The i-th SMS ChannelSend of a run."""
    account = f"acct-{i % 5000:06d}"
    return {"send_id": f"{tag}-{i}", "message_id": f"{tag}-m{i}", "account_id": account,
            "channel": "SMS", "device_id": None, "route": None, "reason": "PRIMARY",
            "attempt": 0, "importance": "HIGH", "title": "Gate", "body": "Boarding now",
            "read_action": "LINK", "link": "https://air.example/b", "sent_at": 0}


async def bare_calls(url: str, sends: int, in_flight: int) -> float:
    """Seconds for `sends` SMS adapter calls to the simulator from one client, `in_flight` at a
    time: what the dispatcher's provider calls cost without Kafka."""
    where: dict[str, Any] = {"simulator_url": url}
    registry = Registry(ProviderConfig(**where))
    adapter = registry.adapter("sms")
    sem = asyncio.Semaphore(in_flight)
    http = registry.client(in_flight)

    async def one(i: int) -> None:
        async with sem:
            await adapter.send(http, Delivery(sms_send(i, "bare"), "+8613800000000",
                                              "http://gw/r/x", "rt"))

    started = time.monotonic()
    await asyncio.gather(*(one(i) for i in range(sends)))
    elapsed = time.monotonic() - started
    await http.aclose()
    await registry.aclose()
    return elapsed


def dispatcher_run(bootstrap: str, url: str, sends: int, in_flight: int, workdir: Path,
                   log: Log) -> float:
    """Sends/s of one `pushcascade dispatch` over `sends` preloaded SMS sends (outcome times)."""
    settings = fresh_settings(bootstrap, "dispatch")
    codec = Codec()
    profiles = [("account.profiles", f"acct-{i:06d}".encode(), codec.encode("AccountProfile", {
        "account_id": f"acct-{i:06d}", "phone": "+8613800000000", "wechat_openid": None,
        "email": None, "updated_at": 0})) for i in range(5000)]
    produce(settings, profiles)
    records = [("push.sends", s["account_id"].encode(), codec.encode("ChannelSend", s))
               for s in (sms_send(i, "run") for i in range(sends))]
    produce(settings, records)
    env = {**worker_env(settings, dispatch_in_flight=in_flight, dispatch_rate=100000),
           "PUSHCASCADE_PROVIDER_SIMULATOR_URL": url}
    proc = start_python("streams.cli", "dispatch", env=env, workdir=workdir, name="dispatch")
    try:
        with Tap(settings, "push.outcomes", fetch_wait_ms=100) as tap:
            tap.wait_for(lambda rs: len(rs) >= sends, timeout=120 + sends / 50, workers=[proc])
            ats = sorted(r["at"] for r in tap.records)
            statuses = {r["status"] for r in tap.records}
    finally:
        proc.stop()
    if statuses != {"ACCEPTED"}:
        raise RuntimeError(f"dispatch bench: outcomes {statuses}, expected only ACCEPTED")
    log(f"dispatcher: {sends} outcomes in {(ats[-1] - ats[0]) / 1000:.1f}s")
    return sends / max((ats[-1] - ats[0]) / 1000, 1e-3)


LOADGEN = """
import asyncio, json, sys, time, httpx
async def main(url, tokens, concurrency):
    sem, lat = asyncio.Semaphore(concurrency), []
    async with httpx.AsyncClient(limits=httpx.Limits(max_connections=concurrency)) as http:
        async def one(t):
            async with sem:
                t0 = time.monotonic()
                r = await http.post(f"{url}/read/{t}")
                assert r.status_code == 200, r.text
                lat.append(time.monotonic() - t0)
        t0 = time.monotonic()
        await asyncio.gather(*(one(t) for t in tokens))
        print(json.dumps({"seconds": time.monotonic() - t0, "latencies": lat}))
url, concurrency = sys.argv[1], int(sys.argv[2])
asyncio.run(main(url, json.load(sys.stdin), concurrency))
"""


def gateway_run(bootstrap: str, acks: int, concurrency: int, workdir: Path,
                log: Log) -> dict[str, float]:
    """Acks/s and latency of `pushcascade acks-gateway` under a load generator process."""
    settings = fresh_settings(bootstrap, "gateway")
    port = free_port()
    env = worker_env(settings, gateway_port=port)
    proc = start_python("streams.cli", "acks-gateway", env=env, workdir=workdir, name="gateway")
    url = f"http://127.0.0.1:{port}"
    try:
        end = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            proc.check()
            if time.monotonic() > end:
                raise TimeoutError("the gateway did not become ready")
            time.sleep(0.2)
        config = ConnectorSettings.from_env()
        signer = Signer(config.keys, config.signing_key_id, config.ack_token_ttl)
        tokens = [signer.sign(AckToken.for_send("READ", sms_send(i, "gw"))) for i in range(acks)]
        run = subprocess.run([sys.executable, "-c", LOADGEN, url, str(concurrency)],  # noqa: S603
                             input=json.dumps(tokens), capture_output=True, text=True,
                             timeout=600, check=True)
    finally:
        proc.stop()
    result = json.loads(run.stdout)
    lat = [x * 1000 for x in result["latencies"]]
    log(f"gateway: {acks} acks in {result['seconds']:.1f}s")
    return {"acks_per_s": acks / result["seconds"], "p50_ms": percentile(lat, 50),
            "p99_ms": percentile(lat, 99)}


def run_dispatch_bench(sends: int, in_flight: int, acks: int, concurrency: int, var_dir: Path,
                       log: Log = quiet) -> dict[str, Any]:
    """All three measurements in one run, on one broker and one simulator."""
    workdir = var_dir / "dispatch-bench"
    workdir.mkdir(parents=True, exist_ok=True)
    options: dict[str, Any] = {"port": 0, "seed": 1}
    sim = Simulator(SimulatorSettings(**options))
    sim.set_population({"receipt": {"*": 0.0}, "read": {"*": 0.0}})
    with bench_kafka(var_dir, log) as bootstrap, SimulatorThread(sim) as simulator:
        bare = sends / asyncio.run(bare_calls(simulator.url, sends, in_flight))
        log(f"bare client: {bare:,.0f} calls/s")
        dispatched = dispatcher_run(bootstrap, simulator.url, sends, in_flight, workdir, log)
        gateway = gateway_run(bootstrap, acks, concurrency, workdir, log)
    keep_logs(workdir, var_dir)
    return {"sends": sends, "in_flight": in_flight, "bare_calls_per_s": bare,
            "dispatcher_sends_per_s": dispatched, "ratio": dispatched / bare,
            "acks": acks, "gateway_concurrency": concurrency, "gateway": gateway}

"""Benchmark of the HTTP edge: dispatcher sends/s against the provider simulator, beside the
same adapter calls from a bare client at the same concurrency; the gateway's acks/s and latency
from a load generator in another process."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any, cast

from connectors.adapters import Delivery
from connectors.adapters.config import ProviderConfig
from connectors.adapters.registry import Registry
from connectors.simulator import Simulator, SimulatorSettings, SimulatorThread
from schemas import Codec
from streams.harness.bench.common import (
    Log,
    bench_kafka,
    fresh_settings,
    keep_logs,
    produce,
    quiet,
    sms_send,
)
from streams.harness.bench.gateway import python_loadgen
from streams.harness.bench.pipeline import cpu_seconds, cpu_shares
from streams.harness.processes import start_python, worker_env
from streams.harness.taps import Tap


def sms_lines(url: str, count: int, tag: str) -> tuple[str, str]:
    """`count` signed SendSms calls as the SMS adapter makes them (wrk request lines, each a
    distinct send), and the path prefix they go to on the simulator."""
    from urllib.parse import urlencode, urlsplit

    from connectors.adapters.sms import SmsAdapter, params

    where: dict[str, Any] = {"simulator_url": url}
    adapter = cast(SmsAdapter, Registry(ProviderConfig(**where)).adapter("sms"))
    base = urlsplit(adapter.base_url).path.rstrip("/") + "/"
    now = time.time()
    forms = (params(adapter.settings, Delivery(sms_send(i, tag), "+8613800000000",
                                                "http://gw/r/x", "rt"), now, f"n{i}")
             for i in range(count))
    return "".join(f"POST\t{base}\t{urlencode(form)}\n" for form in forms), base


def simulator_wrk(url: str, workdir: Path, seconds: float, connections: int,
                  log: Log) -> dict[str, Any]:
    """The simulator alone under wrk: its control health endpoint (its HTTP ceiling), then
    signed SendSms calls, each sent once (what the dispatcher's calls cost it)."""
    from streams.harness.bench.gateway import run_wrk

    lines, _ = sms_lines(url, int(seconds * 6000), "wrk")
    path = workdir / "sms.txt"
    path.write_text(lines)
    idle = "/_control/health"
    ceiling = run_wrk(url, None, connections, 2, seconds, idle=idle)
    calls = run_wrk(url, path, connections, 2, seconds, mark='"Code":"OK"', idle=idle,
                    headers=("Content-Type: application/x-www-form-urlencoded",))
    log(f"simulator under wrk: health {ceiling['per_s']:,.0f}/s, SendSms "
        f"{calls['recorded'] / calls['seconds']:,.0f}/s accepted")
    return {"health": ceiling, "sms": calls,
            "sms_accepted_per_s": calls["recorded"] / calls["seconds"]}


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
                   log: Log) -> tuple[float, dict[str, float]]:
    """Sends/s of one `pushcascade dispatch` over `sends` preloaded SMS sends (outcome times),
    and the CPU cores of the dispatcher and of this process (the simulator's thread, the tap)
    from its first outcome to its last."""
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
            tap.wait_for(lambda rs: len(rs) >= 1, timeout=120, workers=[proc])
            pids = {"dispatcher": proc.pid, "bench + simulator": os.getpid()}
            began, before = time.monotonic(), {n: cpu_seconds(p) for n, p in pids.items()}
            tap.wait_for(lambda rs: len(rs) >= sends, timeout=120 + sends / 50, workers=[proc])
            cpu = cpu_shares(before, {n: cpu_seconds(p) for n, p in pids.items()},
                             time.monotonic() - began)
            ats = sorted(r["at"] for r in tap.records)
            statuses = {r["status"] for r in tap.records}
    finally:
        proc.stop()
    if statuses != {"ACCEPTED"}:
        raise RuntimeError(f"dispatch bench: outcomes {statuses}, expected only ACCEPTED")
    log(f"dispatcher: {sends} outcomes in {(ats[-1] - ats[0]) / 1000:.1f}s, CPU cores {cpu}")
    return sends / max((ats[-1] - ats[0]) / 1000, 1e-3), cpu


def run_dispatch_bench(sends: int, in_flight: int, acks: int, concurrency: int, var_dir: Path,
                       log: Log = quiet) -> dict[str, Any]:
    """All three measurements in one run, on one broker and one simulator."""
    workdir = var_dir / "dispatch-bench"
    workdir.mkdir(parents=True, exist_ok=True)
    options: dict[str, Any] = {"port": 0, "seed": 1}
    sim = Simulator(SimulatorSettings(**options))
    sim.set_population({"receipt": {"*": 0.0}, "read": {"*": 0.0}})
    with bench_kafka(var_dir, log) as bootstrap, SimulatorThread(sim) as simulator:
        wrk = simulator_wrk(simulator.url, workdir, 10.0, in_flight, log)
        bare = sends / asyncio.run(bare_calls(simulator.url, sends, in_flight))
        log(f"bare client: {bare:,.0f} calls/s")
        dispatched, cpu = dispatcher_run(bootstrap, simulator.url, sends, in_flight, workdir,
                                         log)
        gateway = python_loadgen(fresh_settings(bootstrap, "gateway"), acks, concurrency,
                                 workdir, log)
    keep_logs(workdir, var_dir)
    return {"sends": sends, "in_flight": in_flight, "simulator_wrk": wrk,
            "dispatcher_over_wrk": dispatched / wrk["sms_accepted_per_s"],
            "bare_calls_per_s": bare,
            "dispatcher_sends_per_s": dispatched, "ratio": dispatched / bare,
            "cpu_cores": cpu,
            "acks": acks, "gateway_concurrency": concurrency, "gateway": gateway}

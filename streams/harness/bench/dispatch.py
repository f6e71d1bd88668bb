"""Benchmark of the HTTP edge: the provider simulator (a process of its own) under compiled load
generators (wrk for signed SMS calls, h2load for APNs over HTTP/2); dispatcher sends/s against
it beside the same adapter calls from a bare client at the same concurrency, with each
process's CPU; the gateway's acks/s and latency from a load generator in another process."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import subprocess
import time
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any, cast

import httpx

from connectors.adapters import Delivery
from connectors.adapters.config import ProviderConfig
from connectors.adapters.registry import Registry
from connectors.serving import free_port
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
from streams.harness.processes import Process, start_python, worker_env
from streams.harness.taps import Tap


def simulator_registry(url: str) -> Registry:
    """The adapters, every one pointed at the simulator at url."""
    where: dict[str, Any] = {"simulator_url": url}
    return Registry(ProviderConfig(**where))


def sms_delivery(i: int, tag: str) -> Delivery:
    """The i-th SMS send of a run."""
    return Delivery(sms_send(i, tag), "+8613800000000", "http://gw/r/x", "rt")


def sms_lines(url: str, count: int, tag: str) -> tuple[str, str]:
    """`count` signed SendSms calls as the SMS adapter makes them (wrk request lines, each a
    distinct send), and the path prefix they go to on the simulator."""
    from urllib.parse import urlencode, urlsplit

    from connectors.adapters.sms import SmsAdapter, params

    adapter = cast(SmsAdapter, simulator_registry(url).adapter("sms"))
    base = urlsplit(adapter.base_url).path.rstrip("/") + "/"
    now = time.time()
    forms = (params(adapter.settings, sms_delivery(i, tag), now, f"n{i}") for i in range(count))
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


def apns_delivery(i: int, tag: str) -> Delivery:
    """The i-th APNs send of a run, to a device token of its own."""
    send = {**sms_send(i, tag), "channel": "APP", "route": "APNS", "device_id": f"d{i}"}
    return Delivery(send, f"{i:064x}", "http://gw/r/x", "rt")


def run_h2load(url: str, requests: int, connections: int, streams: int,
               args: tuple[str, ...] = ()) -> dict[str, Any]:
    """h2load (HTTP/2, h2c) on one URL: `requests` in all, `streams` multiplexed on each
    connection; the 2xx answers per second."""
    from streams.harness.bench.gateway import tool

    command = [tool("h2load", "nghttp2-client"), "-n", str(requests), "-c", str(connections),
               "-m", str(streams), "-t", "1", *args, url]
    out = subprocess.run(command, capture_output=True, text=True, check=True,  # noqa: S603
                         timeout=300).stdout
    finished = re.search(r"finished in ([\d.]+)(m?s), [\d.]+ req/s", out)
    codes = re.search(r"status codes: (\d+) 2xx", out)
    if finished is None or codes is None:
        raise RuntimeError(f"h2load printed no figures: {out[-500:]}")
    seconds = float(finished.group(1)) / (1000 if finished.group(2) == "ms" else 1)
    return {"requests": requests, "ok": int(codes.group(1)), "seconds": seconds,
            "per_s": int(codes.group(1)) / seconds, "connections": connections,
            "streams": streams}


def simulator_h2load(url: str, workdir: Path, requests: int, connections: int,
                     streams: int) -> dict[str, Any]:
    """The simulator under h2load: its control health endpoint (its HTTP/2 ceiling), then its
    APNs endpoint with the adapter's own request (headers, provider token, payload)."""
    from connectors.adapters import apns

    adapter = cast(apns.ApnsAdapter, simulator_registry(url).adapter("apns"))
    delivery = apns_delivery(0, "h2load")
    token = adapter.new_token(time.time())
    body = workdir / "apns.json"
    body.write_text(json.dumps(apns.payload(delivery)))
    headers = {**apns.headers_for(adapter.settings, delivery, token),
               "content-type": "application/json"}
    ceiling = run_h2load(f"{url}/_control/health", requests, connections, streams)
    sent = ("-d", str(body), *(a for k, v in headers.items() for a in ("-H", f"{k}: {v}")))
    calls = run_h2load(f"{adapter.base_url}/3/device/{delivery.address}", requests,
                       connections, streams, sent)
    return {**calls, "health": ceiling}


async def bare_calls(url: str, name: str, deliveries: Callable[[int], Delivery], sends: int,
                     in_flight: int) -> float:
    """Calls/s of one adapter to the simulator from a bare client, `in_flight` at a time
    (after a first call has opened the connection and fetched any token): what the
    dispatcher's provider calls cost without Kafka."""
    registry = simulator_registry(url)
    adapter = registry.adapter(name)
    sem = asyncio.Semaphore(in_flight)
    http = registry.client(in_flight)

    async def one(i: int) -> None:
        async with sem:
            await adapter.send(http, deliveries(i))

    await one(-1)
    started = time.monotonic()
    await asyncio.gather(*(one(i) for i in range(sends)))
    elapsed = time.monotonic() - started
    await http.aclose()
    await registry.aclose()
    return sends / elapsed


def dispatcher_run(bootstrap: str, url: str, sends: int, in_flight: int, workdir: Path,
                   log: Log, simulator: int) -> tuple[float, dict[str, float]]:
    """Sends/s of one `pushcascade dispatch` over `sends` preloaded SMS sends (outcome times),
    and the CPU cores of the dispatcher, the simulator (pid) and this process (the tap) from
    its first outcome to its last."""
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
            pids = {"dispatcher": proc.pid, "simulator": simulator, "bench": os.getpid()}
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


@contextlib.contextmanager
def simulator_process(workdir: Path) -> Iterator[tuple[str, Process]]:
    """`pushcascade simulate-providers` in a process of its own (seed 1, no receipts or
    reads): its base URL and the process, once it answers."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = start_python("streams.cli", "simulate-providers", "--port", str(port), "--seed", "1",
                        env=dict(os.environ), workdir=workdir, name="simulator")
    try:
        deadline = time.monotonic() + 60
        while True:
            proc.check()
            try:
                httpx.put(f"{url}/_control/population", timeout=2,
                          json={"receipt": {"*": 0.0}, "read": {"*": 0.0}}).raise_for_status()
                break
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        yield url, proc
    finally:
        proc.stop()


def run_dispatch_bench(sends: int, in_flight: int, acks: int, concurrency: int, var_dir: Path,
                       log: Log = quiet) -> dict[str, Any]:
    """Every measurement in one run, on one broker and one simulator process."""
    workdir = var_dir / "dispatch-bench"
    workdir.mkdir(parents=True, exist_ok=True)
    with bench_kafka(var_dir, log) as bootstrap, simulator_process(workdir) as (url, sim):
        wrk = simulator_wrk(url, workdir, 10.0, in_flight, log)
        bare = asyncio.run(bare_calls(url, "sms", partial(sms_delivery, tag="bare"), sends,
                                      in_flight))
        log(f"bare client: {bare:,.0f} calls/s")
        dispatched, cpu = dispatcher_run(bootstrap, url, sends, in_flight, workdir, log,
                                         sim.pid)
        gateway = python_loadgen(fresh_settings(bootstrap, "gateway"), acks, concurrency,
                                 workdir, log)
        h2 = simulator_h2load(url, workdir, sends, 10, in_flight // 10)
        apns_calls = asyncio.run(bare_calls(url, "apns", partial(apns_delivery, tag="bare"),
                                            sends // 4, in_flight))
        log(f"APNs over HTTP/2: h2load {h2['per_s']:,.0f}/s, the adapter {apns_calls:,.0f}/s")
    keep_logs(workdir, var_dir)
    return {"sends": sends, "in_flight": in_flight, "simulator_wrk": wrk,
            "dispatcher_over_wrk": dispatched / wrk["sms_accepted_per_s"],
            "bare_calls_per_s": bare,
            "dispatcher_sends_per_s": dispatched, "ratio": dispatched / bare,
            "cpu_cores": cpu, "apns_h2load": h2, "apns_calls_per_s": apns_calls,
            "acks": acks, "gateway_concurrency": concurrency, "gateway": gateway}

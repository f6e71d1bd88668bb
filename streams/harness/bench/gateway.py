"""Benchmark of the ack gateway with a compiled load generator (wrk) in another process: read
acks/s and latency beside the same gateway's /healthz (its HTTP ceiling) in the same run, and
beside the Python load generator the earlier figures came from."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from connectors.serving import free_port
from connectors.settings import ConnectorSettings
from connectors.tokens import AckToken, Signer
from streams.harness.bench.common import (
    Log,
    bench_kafka,
    fresh_settings,
    keep_logs,
    percentile,
    quiet,
    sms_send,
)
from streams.harness.processes import Process, embedded_ack_keys, start_python, worker_env
from streams.harness.taps import end_offsets
from streams.settings import Settings

#: The wrk script: prepared requests (signed read tokens, signed vendor calls), each sent once;
#: a JSON line of figures at the end.
SCRIPT = Path(__file__).with_name("replay.lua")


class MissingTool(RuntimeError):
    """A compiled load generator is not installed."""


def tool(name: str, package: str) -> str:
    """A compiled load generator's path, or MissingTool saying how to install it."""
    found = shutil.which(name)
    if found is None:
        raise MissingTool(f"{name} is not installed: `make bench-tools` installs it (Debian "
                          f"package {package}; apt-get install {package})")
    return found


def wrk() -> str:
    """The wrk binary (HTTP/1.1)."""
    return tool("wrk", "wrk")


def run_wrk(url: str, requests: Path | None, connections: int, threads: int, seconds: float,
            limit: int = 0, mark: str = '"recorded":true', idle: str = "/healthz",
            headers: tuple[str, ...] = ()) -> dict[str, Any]:
    """wrk for `seconds`: the prepared requests of a file (lines "METHOD<TAB>PATH<TAB>BODY",
    each sent once, at most `limit` when given, then `idle`), or `idle` only when `requests`
    is None; a 2xx holding `mark` is recorded."""
    args = [wrk(), f"-t{threads}", f"-c{connections}", f"-d{seconds:g}s", "--latency",
            *(f"-H{h}" for h in headers), "-s", str(SCRIPT), url, "--",
            str(requests or "idle"), str(threads), str(limit), mark, idle]
    run = subprocess.run(args, capture_output=True, text=True, check=True,  # noqa: S603
                         timeout=seconds + 120)
    lines = [line for line in run.stdout.splitlines() if line.startswith("{")]
    if not lines:
        raise RuntimeError(f"wrk printed no figures: {run.stdout[-500:]} {run.stderr[-500:]}")
    figures: dict[str, Any] = json.loads(lines[-1])
    figures["per_s"] = figures["requests"] / figures["seconds"]
    return figures


def start_gateway(settings: Settings, workdir: Path, name: str = "gateway") -> tuple[Process, str]:
    """`pushcascade acks-gateway` on a free port, with no per-client limit (one load generator
    is all the clients here), once it answers /readyz; and its URL."""
    port = free_port()
    env = worker_env(settings, gateway_port=port, gateway_client_rate=1e9)
    proc = start_python("streams.cli", "acks-gateway", env=env, workdir=workdir, name=name)
    url = f"http://127.0.0.1:{port}"
    end = time.monotonic() + 60
    while True:
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        proc.check()
        if time.monotonic() > end:
            proc.stop()
            raise TimeoutError("the gateway did not become ready")
        time.sleep(0.2)


def read_tokens(count: int, tag: str) -> list[str]:
    """`count` signed READ tokens of distinct sends, as the gateway's keys sign them (this
    run's keys: PUSHCASCADE_ACK_KEYS, else one made for the run and given to its children)."""
    embedded_ack_keys()
    config = ConnectorSettings.from_env()
    signer = Signer(config.keys, config.signing_key_id, config.ack_token_ttl)
    return [signer.sign(AckToken.for_send("READ", sms_send(i, tag))) for i in range(count)]


def read_lines(tokens: list[str]) -> str:
    """The wrk request lines of read acks: POST /read/<token>, no body."""
    return "".join(f"POST\t/read/{token}\t\n" for token in tokens)


def acks_on_topic(settings: Settings) -> int:
    """Records on push.acks (the gateway is its only writer here)."""
    bootstrap = settings.connections.kafka_bootstrap_servers
    ends = end_offsets(bootstrap, [settings.topic("push.acks")], 30)
    return sum(ends.values())


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


def python_loadgen(settings: Settings, acks: int, concurrency: int, workdir: Path,
                   log: Log) -> dict[str, float]:
    """Acks/s and latency of `pushcascade acks-gateway` under the Python load generator (an
    httpx client process; it measures itself as much as the gateway)."""
    proc, url = start_gateway(settings, workdir, "gateway-py")
    try:
        tokens = read_tokens(acks, "py")
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


def run_gateway_bench(seconds: float, connections: int, threads: int, python_acks: int,
                      var_dir: Path, log: Log = quiet) -> dict[str, Any]:
    """/healthz, then read acks, from wrk against one gateway process; then the Python load
    generator's read acks against a fresh one; all on one broker."""
    workdir = var_dir / "gateway-bench"
    workdir.mkdir(parents=True, exist_ok=True)
    with bench_kafka(var_dir, log) as bootstrap:
        settings = fresh_settings(bootstrap, "gateway")
        # more tokens than the gateway can take in the time (each is sent once)
        tokens = read_tokens(int(seconds * 12_000), "wrk")
        path = workdir / "tokens.txt"
        path.write_text(read_lines(tokens))
        proc, url = start_gateway(settings, workdir)
        try:
            healthz = run_wrk(url, None, connections, threads, seconds)
            log(f"wrk /healthz: {healthz['per_s']:,.0f}/s, p99 {healthz['p99_us'] / 1000:.1f} ms")
            acks = run_wrk(url, path, connections, threads, seconds)
            log(f"wrk read acks: {acks['per_s']:,.0f}/s, p99 {acks['p99_us'] / 1000:.1f} ms")
        finally:
            proc.stop()
        on_topic = acks_on_topic(settings)
        python = python_loadgen(fresh_settings(bootstrap, "gateway-py"), python_acks,
                                connections, workdir, log) if python_acks else {}
    keep_logs(workdir, var_dir)
    return {"seconds": seconds, "connections": connections, "threads": threads,
            "healthz": healthz, "acks": acks, "acks_on_topic": on_topic,
            "acks_over_healthz": acks["per_s"] / healthz["per_s"],
            "python_loadgen": python}

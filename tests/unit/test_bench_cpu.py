"""bench pipeline's CPU per process: read from /proc, shared out over the time measured."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from streams.harness.bench.pipeline import cpu_seconds, cpu_shares


def test_a_busy_process_uses_about_one_core_and_an_idle_one_none() -> None:
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])  # noqa: S603
    idle = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])  # noqa: S603
    try:
        time.sleep(0.3)  # both started
        pids = {"busy": busy.pid, "idle": idle.pid}
        before, started = {n: cpu_seconds(p) for n, p in pids.items()}, time.time()
        time.sleep(1.5)
        after = {n: cpu_seconds(p) for n, p in pids.items()}
        shares = cpu_shares(before, after, time.time() - started)
    finally:
        busy.kill()
        idle.kill()
        busy.wait()
        idle.wait()
    assert 0.3 < shares["busy"] <= 1.1  # a loaded machine may give it less than a core
    assert shares["idle"] < 0.05
    assert cpu_seconds(busy.pid) is None  # gone


def test_cpu_shares_skip_a_process_that_was_gone() -> None:
    assert cpu_shares({"a": 1.0, "b": None}, {"a": 3.0, "b": 2.0}, 4.0) == {"a": 0.5}
    assert cpu_shares({"a": 1.0}, {"a": None}, 4.0) == {}
    assert os.getpid() and cpu_seconds(os.getpid()) > 0

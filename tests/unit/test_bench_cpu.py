"""bench pipeline's CPU per process: read from /proc, shared out over the time measured."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from streams.harness.bench.pipeline import cpu_seconds, cpu_shares

# Burns BURN CPU seconds of its own clock between two lines from the parent, reports what
# it burned, then idles: /proc must see the same seconds however loaded the machine is.
BURNER = """
import sys, time
print("ready", flush=True)
sys.stdin.readline()
start = time.process_time()
while time.process_time() - start < 0.4:
    pass
print(time.process_time() - start, flush=True)
time.sleep(30)
"""


def test_cpu_seconds_see_what_a_process_burned_and_an_idle_one_none() -> None:
    burner = subprocess.Popen([sys.executable, "-c", BURNER], stdin=subprocess.PIPE,  # noqa: S603
                              stdout=subprocess.PIPE, text=True)
    idle = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])  # noqa: S603
    assert burner.stdin is not None and burner.stdout is not None
    try:
        assert burner.stdout.readline().strip() == "ready"
        time.sleep(0.3)  # the idle one past its start-up
        pids = {"burner": burner.pid, "idle": idle.pid}
        before, started = {n: cpu_seconds(p) for n, p in pids.items()}, time.time()
        burner.stdin.write("go\n")
        burner.stdin.flush()
        burned = float(burner.stdout.readline())
        after = {n: cpu_seconds(p) for n, p in pids.items()}
        seconds = time.time() - started
        shares = cpu_shares(before, after, seconds)
    finally:
        for process in (burner, idle):
            process.kill()
            process.wait()
    assert burned >= 0.4
    # clock ticks are 10 ms and the reads around the loop cost a little
    assert abs(shares["burner"] * seconds - burned) < 0.06
    assert 0 < shares["burner"] <= 1.1
    assert shares["idle"] * seconds < 0.02
    assert cpu_seconds(burner.pid) is None  # gone


def test_cpu_shares_skip_a_process_that_was_gone() -> None:
    assert cpu_shares({"a": 1.0, "b": None}, {"a": 3.0, "b": 2.0}, 4.0) == {"a": 0.5}
    assert cpu_shares({"a": 1.0}, {"a": None}, 4.0) == {}
    assert (cpu_seconds(os.getpid()) or 0.0) > 0

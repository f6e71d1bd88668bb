"""The h2load harness of `pushcascade bench dispatch` measures what it claims: every APNs call it
makes is a valid one the simulator accepts, over HTTP/2."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from connectors.simulator import Simulator, SimulatorSettings, SimulatorThread
from streams.harness.bench.dispatch import simulator_h2load

pytestmark = pytest.mark.skipif(shutil.which("h2load") is None,
                                reason="h2load is not installed (make bench-tools)")


def test_every_apns_call_h2load_makes_is_accepted_over_http2(tmp_path: Path) -> None:
    sim = Simulator(SimulatorSettings(port=0, seed=1))
    sim.set_population({"receipt": {"*": 0.0}, "read": {"*": 0.0}})
    with SimulatorThread(sim) as simulator:
        figures = simulator_h2load(simulator.url, tmp_path, 300, connections=3, streams=10)
    assert figures["ok"] == 300 and figures["health"]["ok"] == 300
    assert sim.stats["accept.APNS"] == 300
    assert sum(n for key, n in sim.stats.items() if key.startswith("apns.http/2")) == 300

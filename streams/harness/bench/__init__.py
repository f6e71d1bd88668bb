"""Benchmarks (not tests): the router against a bare Faust agent, Method B's device stage, and a
campaign at real size.

`pushcascade bench router|devices|campaign` runs them; `python -m streams.harness.bench
baseline-worker` starts the baseline agent on its own (environment as for `pushcascade worker`).
"""

from streams.harness.bench.campaign import run_campaign_bench
from streams.harness.bench.devices import run_device_bench
from streams.harness.bench.router import run_router_bench

__all__ = ["run_campaign_bench", "run_device_bench", "run_router_bench"]

"""The soak bench's pure parts: /proc parsing, least-squares slopes, per-process figures."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from streams.harness.bench.soak import (
    Sampler,
    assemble,
    descendants,
    extras_summary,
    fit_slope,
    gauges,
    parse_children,
    parse_status,
    per_hour,
    sample_pid,
    sample_tree,
    series_of,
    summarize,
    threads_of,
)

STATUS = """Name:\tpython
Umask:\t0022
State:\tS (sleeping)
VmPeak:\t  812344 kB
VmHWM:\t  204800 kB
VmRSS:\t  102400 kB
RssAnon:\t   81920 kB
Threads:\t17
"""


def test_parse_status_reads_rss_peak_and_threads_in_mib() -> None:
    assert parse_status(STATUS) == {"VmHWM": 200.0, "VmRSS": 100.0, "Threads": 17.0}


def test_parse_status_of_a_kernel_thread_has_no_rss() -> None:
    assert parse_status("Name:\tkthreadd\nThreads:\t1\n") == {"Threads": 1.0}


def test_parse_children() -> None:
    assert parse_children("12 345 6789 ") == [12, 345, 6789]
    assert parse_children("") == []


def test_slope_of_a_line_is_exact() -> None:
    points = [(x, 3.0 + 0.5 * x) for x in range(0, 100, 5)]
    assert fit_slope(points) == pytest.approx(0.5)


def test_slope_of_a_flat_noisy_series_is_near_zero() -> None:
    points = [(float(x), 100.0 + (1 if x % 2 else -1)) for x in range(1000)]
    assert abs(fit_slope(points) or 0) < 1e-3


def test_slope_needs_two_distinct_times() -> None:
    assert fit_slope([]) is None
    assert fit_slope([(1.0, 2.0)]) is None
    assert fit_slope([(1.0, 2.0), (1.0, 3.0)]) is None


def test_per_hour_scales_seconds() -> None:
    # 1 MiB per minute is 60 MiB per hour
    assert per_hour([(0.0, 10.0), (60.0, 11.0), (120.0, 12.0)]) == pytest.approx(60.0)


def test_summarize_fits_after_the_warmup_only() -> None:
    # steep start-up for 300 s, then 2 MiB/h and one more fd every 6 minutes
    series = [(float(t), (t * 0.1 if t < 300 else 30 + (t - 300) * 2 / 3600), 40 + t // 360)
              for t in range(0, 3600, 5)]
    s = summarize(series, warmup=300)
    assert s["rss_slope_mib_per_h"] == pytest.approx(2.0, abs=0.01)
    assert s["rss_slope_second_half_mib_per_h"] == pytest.approx(2.0, abs=0.01)
    assert s["fd_slope_per_h"] == pytest.approx(10.0, abs=0.5)
    assert s["rss_start_mib"] == 0.0
    assert s["rss_warm_mib"] == 30.0
    assert s["rss_peak_mib"] == s["rss_end_mib"]
    assert (s["fds_start"], s["fds_end"], s["fds_peak"]) == (40, 49, 49)
    assert s["samples"] == 720 and s["samples_after_warmup"] == 660


def test_summarize_of_nothing() -> None:
    assert summarize([], warmup=60) == {"samples": 0}


def test_series_of_skips_samples_without_the_process() -> None:
    rows = [{"t": 0, "rss_mib": {"a": 1.0}, "fds": {"a": 3}},
            {"t": 5, "rss_mib": {}, "fds": {}},
            {"t": 10, "rss_mib": {"a": 2.0}, "fds": {"a": 4}}]
    assert series_of(rows, "a") == [(0, 1.0, 3), (10, 2.0, 4)]


def test_sampling_a_real_process_tree(tmp_path: Path) -> None:
    """This process and a real child: the child is found below us and adds its RSS and fds."""
    # a child holding 64 MiB, so its share stands out of this process's own wobble
    child = subprocess.Popen([sys.executable, "-c",
                              "import time; b = bytearray(64 << 20); time.sleep(30)"])
    try:
        end = time.monotonic() + 10
        while child.pid not in descendants(os.getpid()) and time.monotonic() < end:
            time.sleep(0.05)
        assert child.pid in descendants(os.getpid())
        while (sample_pid(child.pid) or (0,))[0] < 60 and time.monotonic() < end:
            time.sleep(0.05)  # until its 64 MiB are resident
        own, kid = sample_pid(os.getpid()), sample_pid(child.pid)
        tree = sample_tree(os.getpid())
        assert own and kid and tree
        assert own[0] > 1 and own[1] >= 3 and own[2] >= 1
        assert tree[0] >= own[0] + kid[0] * 0.5
        # a child sampled on its own is left out of its parent's figures
        assert child.pid not in descendants(os.getpid(), skip={child.pid})
        alone = sample_tree(os.getpid(), skip={child.pid})
        assert alone and alone[0] < tree[0]
        sampler = Sampler({"me": os.getpid(), "child": child.pid}, interval=0.05)
        sampler.start()
        time.sleep(0.3)
        sampler.stopped.set()
        sampler.join(5)
        assert len(sampler.samples) >= 3
        assert all(s["fds"]["me"] > 0 and s["fds"]["child"] > 0 for s in sampler.samples)
        assert all(s["threads"]["me"] >= 2 for s in sampler.samples)  # the sampler's own
        last = sampler.samples[-1]["rss_mib"]
        assert last["child"] >= 60  # its 64 MiB are its own figure
    finally:
        child.kill()
        child.wait()
    assert sample_pid(child.pid) is None  # gone: no sample, no error


PAGE = """# HELP pushcascade_deadlines_pending Deadlines indexed by this worker
# TYPE pushcascade_deadlines_pending gauge
pushcascade_deadlines_pending{table="messages"} 380.0
pushcascade_deadlines_pending{table="campaigns"} 2.0
# HELP pushcascade_dispatch_in_flight Provider requests in flight
# TYPE pushcascade_dispatch_in_flight gauge
pushcascade_dispatch_in_flight 12.0
# HELP pushcascade_events_total Events
# TYPE pushcascade_events_total counter
pushcascade_events_total{stage="router",event="request"} 5.0
"""


def test_gauges_picks_the_named_metrics_by_their_label() -> None:
    assert gauges(PAGE, ("pushcascade_deadlines_pending", "pushcascade_dispatch_in_flight")) == {
        "pushcascade_deadlines_pending.messages": 380.0,
        "pushcascade_deadlines_pending.campaigns": 2.0,
        "pushcascade_dispatch_in_flight": 12.0}
    assert gauges("", ("x",)) == {}


def test_extras_summary_splits_lag_from_what_is_held() -> None:
    rows = [{"t": 0, "extras": {"lag_sink": 900, "sim_keys": 1}},
            {"t": 60, "extras": {"lag_sink": 5, "sim_keys": 10}},
            {"t": 120, "extras": {"lag_sink": 40, "sim_keys": 20}},
            {"t": 180, "extras": {"lag_sink": 2, "sim_keys": 30}}]
    assert extras_summary(rows, 60, lag=True) == {"sink": {"warm": 5, "end": 2, "max": 40}}
    assert extras_summary(rows, 60, lag=False) == {"sim_keys": {"warm": 10, "end": 30,
                                                                "max": 30}}


def test_threads_of() -> None:
    rows = [{"t": 0, "threads": {"a": 4}}, {"t": 60, "threads": {"a": 9}},
            {"t": 120, "threads": {"a": 7}}, {"t": 180}]
    assert threads_of(rows, "a", 60) == {"threads_start": 4, "threads_warm": 9,
                                         "threads_end": 7, "threads_peak": 9}
    assert threads_of(rows, "b", 60) == {}


def test_assemble_a_run_from_its_samples() -> None:
    rows = [{"t": float(t), "rss_mib": {"w": 100 + t / 3600}, "fds": {"w": 30},
             "threads": {"w": 9}, "extras": {"lag_workers": 1, "held": 5}}
            for t in range(0, 1200, 5)]
    r = assemble(rows, {"warmup_minutes": 5, "pids": {"w": 1, "gone": 2}, "aborted": None})
    assert r["processes"]["w"]["rss_slope_mib_per_h"] == pytest.approx(1.0, abs=0.01)
    assert r["processes"]["w"]["threads_end"] == 9
    assert r["processes"]["gone"] == {"samples": 0}
    assert r["lag"] == {"workers": {"warm": 1, "end": 1, "max": 1}}
    assert r["held"] == {"held": {"warm": 5, "end": 5, "max": 5}}
    assert r["aborted"] is None and len(r["samples"]) == len(rows)

"""The wrk harness of `pushcascade bench gateway` measures what it claims: every read ack it
sends carries a valid signed token, is recorded once, and lands on push.acks, counted
exactly; its /healthz runs touch no ack."""

from __future__ import annotations

import shutil

import pytest

from streams.harness.bench.gateway import (
    acks_on_topic,
    read_lines,
    read_tokens,
    run_wrk,
    start_gateway,
)

pytestmark = pytest.mark.skipif(shutil.which("wrk") is None,
                                reason="wrk is not installed (make bench-tools)")


def test_every_ack_wrk_sends_is_recorded_once_and_on_push_acks(settings, tmp_path):
    tokens = read_tokens(500, "t")
    path = tmp_path / "tokens.txt"
    path.write_text(read_lines(tokens))
    proc, url = start_gateway(settings, tmp_path)
    try:
        health = run_wrk(url, None, connections=4, threads=2, seconds=1)
        assert health["requests"] > 0 and health["healthz"] == health["requests"]
        assert acks_on_topic(settings) == 0
        # 300 of the 500 tokens, then /healthz until the time is up: exactly 300 acks
        figures = run_wrk(url, path, connections=10, threads=2, seconds=3, limit=300)
    finally:
        proc.stop()
    assert figures["sent"] == 300
    assert figures["recorded"] == 300, figures
    assert figures["refused"] == 0 and figures["errors"] == 0, figures
    assert figures["healthz"] == figures["requests"] - 300
    assert acks_on_topic(settings) == 300

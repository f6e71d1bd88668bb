"""`pushcascade demo` runs the closed loop (worker + simulated population) and reports reach."""

from __future__ import annotations

import re

from tests.helpers import run_cli


def test_demo_closed_loop(broker, env, tmp_path):
    env = {**env, "CLICKHOUSE_DSN": f"chdb://{tmp_path / 'chdb'}"}
    result = run_cli("demo", "--users", "8", "--rounds", "3", env=env, timeout=240,
                     cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout + result.stderr
    assert "demo finished" in out
    read, wanted = map(int, re.search(r"read by users who read: (\d+) of (\d+)", out).groups())
    assert wanted > 0 and read >= wanted * 0.8

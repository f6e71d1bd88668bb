"""Every command facing a Kafka or ClickHouse that does not answer says so in one line, names
the setting to check, and exits non-zero within seconds."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from connectors.serving import free_port

pytestmark = pytest.mark.broker

KAFKA_COMMANDS = [["send"], ["tail", "push.sends"], ["topics", "create"], ["worker"],
                  ["dispatch"], ["sink"], ["up"], ["demo"]]
CLICKHOUSE_COMMANDS = [["migrate", "list"], ["migrate", "up"], ["sql", "SELECT 1"],
                       ["priors"], ["report"], ["sink"]]


def run_all(commands: list[list[str]], env: dict[str, str], cwd) -> list[tuple[int, str, float]]:
    """Run the commands at once; (exit code, output, seconds) of each."""
    started = time.monotonic()
    procs = [subprocess.Popen([sys.executable, "-m", "streams.cli", *args], env=env, cwd=cwd,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for args in commands]
    results = []
    for proc in procs:
        out, _ = proc.communicate("{}\n", timeout=60)
        results.append((proc.returncode, out, time.monotonic() - started))
    return results


def test_an_unreachable_kafka_is_one_line_naming_the_setting(env, tmp_path):
    env = {**env, "KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}",
           "CLICKHOUSE_DSN": f"chdb://{tmp_path / 'store'}"}
    for args, (code, out, seconds) in zip(KAFKA_COMMANDS, run_all(KAFKA_COMMANDS, env, tmp_path),
                                           strict=True):
        lines = out.strip().splitlines()
        assert code == 3 and len(lines) == 1, (args, out)
        assert lines[0].startswith("error: Kafka at 127.0.0.1:") and \
            "KAFKA_BOOTSTRAP_SERVERS" in lines[0], (args, out)
        assert seconds < 60, (args, seconds)  # it gives up: bounded (a loaded machine is slow)


def test_an_unreachable_clickhouse_is_one_line_naming_the_setting(env, tmp_path):
    env = {**env, "CLICKHOUSE_DSN": f"http://analyst:secret@127.0.0.1:{free_port()}/db"}
    for args, (code, out, seconds) in zip(
            CLICKHOUSE_COMMANDS, run_all(CLICKHOUSE_COMMANDS, env, tmp_path), strict=True):
        *retries, last = out.strip().splitlines()
        assert code != 0 and last.startswith("error: ClickHouse at http://127.0.0.1:"), (args, out)
        assert "CLICKHOUSE_DSN" in last, (args, out)
        # a long-running service retries a while first, each retry one logged line
        assert all("retrying" in line for line in retries), (args, out)
        assert not retries or args == ["sink"], (args, out)
        assert "secret" not in out
        assert seconds < 60, (args, seconds)  # it gives up: bounded (a loaded machine is slow)


def test_a_store_without_tables_says_to_migrate(env, tmp_path):
    env = {**env, "CLICKHOUSE_DSN": f"chdb://{tmp_path / 'empty'}"}
    for args in (["sql", "SELECT 1"], ["report"], ["priors"]):  # one at a time: one chDB each
        ((code, out, _),) = run_all([args], env, tmp_path)
        assert code != 0 and out.strip().splitlines() == [out.strip()], out
        assert "pushcascade migrate up" in out

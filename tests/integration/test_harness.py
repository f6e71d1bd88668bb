"""The harness: the broker starts, answers and leaves no process behind; child processes stop."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from streams.harness import Process, ProcessExited, answers_api_versions, start_broker


def gone(pid: int, timeout: float = 10.0) -> bool:
    """Wait until a pid is gone (or a zombie nobody reaped); True if it went."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/stat") as stat:
                if stat.read().split()[2] == "Z":
                    return True
        except FileNotFoundError:
            return True
        time.sleep(0.05)
    return False


def test_broker_answers_api_versions_and_stops():
    broker = start_broker()
    assert answers_api_versions("127.0.0.1", broker.port)
    broker.stop()
    assert not broker.process.running()
    assert not answers_api_versions("127.0.0.1", broker.port)


def test_no_broker_survives_a_killed_parent():
    script = ("from streams.harness import start_broker; import time; "
              "b = start_broker(); print(b.process.pid, b.port, flush=True); time.sleep(60)")
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert parent.stdout is not None
    pid, port = (int(x) for x in parent.stdout.readline().split())
    assert answers_api_versions("127.0.0.1", port)
    parent.kill()
    parent.wait()
    assert gone(pid)


def test_no_child_survives_a_killed_parent():
    script = ("from streams.harness import Process; import sys, time; "
              "c = Process([sys.executable, '-c', 'import time; time.sleep(60)']); "
              "print(c.pid, flush=True); time.sleep(60)")
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert parent.stdout is not None
    pid = int(parent.stdout.readline())
    assert not gone(pid, timeout=0.2)
    parent.kill()
    parent.wait()
    assert gone(pid)


def test_stop_kills_a_child_that_ignores_sigterm_after_the_grace(tmp_path):
    script = ("import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
              "print('ready', flush=True); time.sleep(60)")
    child = Process([sys.executable, "-c", script], log_path=tmp_path / "stubborn.log")
    deadline = time.monotonic() + 30
    while "ready" not in child.logs():  # the handler is installed
        assert time.monotonic() < deadline
        time.sleep(0.05)
    started = time.monotonic()
    child.stop(grace=0.5)
    assert child.returncode == -9
    assert time.monotonic() - started < 10


def test_check_raises_with_the_end_of_the_log(tmp_path):
    child = Process([sys.executable, "-c", "print('the last words'); raise SystemExit(3)"],
                    log_path=tmp_path / "short.log", name="short")
    child.popen.wait(30)
    with pytest.raises(ProcessExited, match="short exited with code 3") as failure:
        child.check()
    assert "the last words" in str(failure.value)


def test_a_child_gets_the_environment_it_is_given(tmp_path):
    child = Process([sys.executable, "-c", "import os; print(os.environ['PUSHCASCADE_X'])"],
                    env={**os.environ, "PUSHCASCADE_X": "42"}, log_path=tmp_path / "env.log")
    child.popen.wait(30)
    assert child.logs().split() == ["42"]


def test_chdb_round_trip(chdb):
    chdb.command("CREATE TABLE t (id UInt32, name String) ENGINE = MergeTree ORDER BY id")
    chdb.insert("t", [[1, "one"], [2, "two"]], column_names=["id", "name"])
    assert chdb.query("SELECT name FROM t ORDER BY id").result_rows == [("one",), ("two",)]

"""The embedded stack: the broker starts, answers, and leaves no process behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from streams.embedded import answers_api_versions, start_broker


def test_broker_answers_api_versions_and_stops():
    broker = start_broker()
    assert answers_api_versions("127.0.0.1", broker.port)
    broker.stop()
    assert broker.process.poll() is not None
    assert not answers_api_versions("127.0.0.1", broker.port)


def test_no_broker_survives_a_killed_parent(tmp_path):
    script = ("from streams.embedded import start_broker; import time; "
              "b = start_broker(); print(b.process.pid, b.port, flush=True); time.sleep(60)")
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    pid, port = (int(x) for x in parent.stdout.readline().split())
    assert answers_api_versions("127.0.0.1", port)
    os.kill(parent.pid, signal.SIGKILL)
    parent.wait()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and os.path.exists(f"/proc/{pid}"):
        time.sleep(0.1)
    assert not os.path.exists(f"/proc/{pid}") or _state(pid) == "Z"


def _state(pid: int) -> str:
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().split()[2]


def test_chdb_round_trip(chdb):
    chdb.command("CREATE TABLE t (id UInt32, name String) ENGINE = MergeTree ORDER BY id")
    chdb.insert("t", [[1, "one"], [2, "two"]], column_names=["id", "name"])
    assert chdb.query("SELECT name FROM t ORDER BY id").result_rows == [("one",), ("two",)]

"""Child processes of the harness: workers, benchmark agents and the broker, one wrapper for all."""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import re
import secrets
import signal
import subprocess
import sys
import urllib.request
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from streams.settings import Settings

_PR_SET_PDEATHSIG = 1


class ProcessExited(RuntimeError):
    """A child process ended while it was still needed; the message ends with its log."""


def _die_with(parent: int) -> Callable[[], None]:
    """A preexec_fn: the kernel SIGKILLs the child when `parent` dies (Linux).

    libc is loaded here, in the parent: the child, forked from a process with threads, only
    makes the call."""
    prctl = None
    with contextlib.suppress(OSError, AttributeError):
        prctl = ctypes.CDLL("libc.so.6", use_errno=True).prctl

    def preexec() -> None:
        if prctl is not None:
            prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os._exit(1)

    return preexec


class Process:
    """A child process with its own log file, its own session, and PDEATHSIG set.

    It never outlives the process that started it, a terminal's Ctrl-C does not reach it,
    and stop() ends it by its own pid with a bounded wait (a Faust worker can hang on
    shutdown)."""

    def __init__(self, argv: Sequence[str], env: Mapping[str, str] | None = None,
                 log_path: Path | None = None, name: str | None = None,
                 cwd: Path | None = None) -> None:
        self.argv, self.log_path = list(argv), log_path
        self.name = name or Path(self.argv[0]).name
        log: Any = subprocess.DEVNULL
        if log_path is not None:
            log_path.parent.mkdir(parents=True, exist_ok=True)
            log = open(log_path, "ab")  # noqa: SIM115  (the child owns it)
        try:
            self.popen = subprocess.Popen(  # noqa: S603  (the harness's own children)
                self.argv, env=dict(env) if env is not None else None, stdout=log,
                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
                preexec_fn=_die_with(os.getpid()), cwd=cwd)
        finally:
            if log is not subprocess.DEVNULL:
                log.close()

    @property
    def pid(self) -> int:
        """The child's own pid."""
        return self.popen.pid

    @property
    def returncode(self) -> int | None:
        """The exit code, or None while it runs."""
        return self.popen.poll()

    def running(self) -> bool:
        """True while the process has not exited."""
        return self.popen.poll() is None

    def check(self) -> None:
        """Raise ProcessExited with the end of the log when the process has exited."""
        if self.popen.poll() is not None:
            raise ProcessExited(f"{self.name} exited with code {self.popen.returncode}:\n"
                                f"{self.tail()}")

    def logs(self) -> str:
        """Everything the process printed ('' without a log file)."""
        if self.log_path is None:
            return ""
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def tail(self, lines: int = 30) -> str:
        """The last lines of the log."""
        return "\n".join(self.logs().splitlines()[-lines:]) or "(no log)"

    def warnings(self) -> dict[str, int]:
        """How often each WARNING line (numbers replaced by #) appears in the log, top five."""
        counts: Counter[str] = Counter()
        for line in self.logs().splitlines():
            if "[WARNING]" in line:
                text = line.split("[WARNING]", 1)[1].strip()
                counts[re.sub(r"\d+(\.\d+)?", "#", text)] += 1
        return dict(counts.most_common(5))

    def stop(self, grace: float = 10.0) -> None:
        """SIGTERM, wait at most `grace` seconds, then SIGKILL."""
        if self.popen.poll() is not None:
            return
        self.popen.send_signal(signal.SIGTERM)
        try:
            self.popen.wait(grace)
        except subprocess.TimeoutExpired:
            self.kill()

    def kill(self) -> None:
        """SIGKILL (the crash case) and reap."""
        if self.popen.poll() is None:
            self.popen.kill()
        self.popen.wait()


def start_python(module: str, *args: str, env: Mapping[str, str], workdir: Path,
                 name: str) -> Process:
    """`python -m MODULE ARGS` with PUSHCASCADE_DATA_DIR=workdir/NAME and its log in NAME.log."""
    env = {**env, "PUSHCASCADE_DATA_DIR": str(workdir / name)}
    return Process([sys.executable, "-m", module, *args], env, workdir / f"{name}.log", name)


def start_worker(env: Mapping[str, str], workdir: Path, name: str = "worker",
                 loglevel: str = "warning") -> Process:
    """A `pushcascade worker` (python -m streams.cli worker) with its own data dir and log."""
    return start_python("streams.cli", "worker", "--loglevel", loglevel, env=env,
                        workdir=workdir, name=name)


def embedded_ack_keys() -> str:
    """PUSHCASCADE_ACK_KEYS of this run: the environment's, else a random key made once per run
    and put in os.environ, so this process and every child it starts sign and verify alike."""
    keys = os.environ.get("PUSHCASCADE_ACK_KEYS", "")
    if not keys:
        keys = json.dumps({f"run-{secrets.token_hex(4)}": secrets.token_urlsafe(32)})
        os.environ["PUSHCASCADE_ACK_KEYS"] = keys
    return keys


def worker_env(settings: Settings, **tuning: Any) -> dict[str, str]:
    """The environment of a worker on these settings' broker and topic prefix.

    It starts from os.environ (so PYTHONPATH reaches the child) with this run's signing key
    (embedded_ack_keys); each keyword becomes PUSHCASCADE_<NAME>, e.g. read_deadline_high=3 ->
    PUSHCASCADE_READ_DEADLINE_HIGH=3."""
    embedded_ack_keys()
    env = dict(os.environ)
    env.update({"KAFKA_BOOTSTRAP_SERVERS": settings.connections.kafka_bootstrap_servers,
                "PUSHCASCADE_TOPIC_PREFIX": settings.tuning.topic_prefix})
    env.update({f"PUSHCASCADE_{key.upper()}": str(value) for key, value in tuning.items()})
    return env


def worker_events(port: int, timeout: float = 10.0) -> dict[tuple[str, str], float]:
    """The pushcascade_events_total counters a worker serves on its metrics port."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=timeout) as page:
        text = page.read().decode()
    events: dict[tuple[str, str], float] = {}
    for line in text.splitlines():
        if line.startswith("pushcascade_events_total{"):
            labels = dict(re.findall(r'(\w+)="([^"]*)"', line))
            events[labels["stage"], labels["event"]] = float(line.rsplit(" ", 1)[1])
    return events

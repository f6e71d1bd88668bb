"""Test helpers: run the CLI as users do, read topics back through a real consumer."""

from __future__ import annotations

import subprocess
import sys
import time
from typing import Any

from streams.settings import Settings


def run_cli(*args: str, env: dict[str, str], stdin: str = "", timeout: float = 60,
            cwd: Any = None) -> Any:
    """Run `pushcascade ARGS` in a subprocess; returns the CompletedProcess."""
    return subprocess.run([sys.executable, "-m", "streams.cli", *args], input=stdin, env=env,
                          capture_output=True, text=True, timeout=timeout, cwd=cwd)


def read_topic(settings: Settings, name: str, *, expect: int | None = None,
               timeout: float = 10.0) -> list[dict]:
    """Every record of a topic from the beginning, decoded; stops at `expect` or after timeout."""
    from tests.workers import Tap

    tap = Tap(settings, name)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline and (expect is None or len(tap.records) < expect):
            tap.poll(0.2)
    finally:
        tap.close()
    return tap.records

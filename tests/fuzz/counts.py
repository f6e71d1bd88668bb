"""Counts of the fuzz targets: inputs tried, crashes, slowest input and outcomes, per target.

Each target's test body is wrapped with `@target(name)` (under `@given`): every example it runs
is counted, an exception that escapes it is a crash (the test fails as well), and the body
tags the defined outcome it saw with `outcome(name, label)`. `tests/conftest.py` prints the
table at the end of the session and writes it as JSON to `$FUZZ_COUNTS` when that is set."""

from __future__ import annotations

import functools
import json
import os
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from hypothesis import settings

#: CPU seconds one input may take before it counts as a stall (a crash): CPU time, so that a
#: busy machine does not make one; and wall-clock seconds, for an input that waits forever.
STALL = float(os.environ.get("FUZZ_STALL_SECONDS", "10"))
STALL_WALL = float(os.environ.get("FUZZ_STALL_WALL_SECONDS", "120"))


@dataclass
class Target:
    """What one fuzz target saw."""

    tried: int = 0
    crashes: int = 0
    slowest: float = 0.0
    crash_kinds: Counter[str] = field(default_factory=Counter)
    outcomes: Counter[str] = field(default_factory=Counter)


TARGETS: dict[str, Target] = {}


def examples(default: int) -> int:
    """Examples a target runs: `default` in `make test`, the fuzz profile's under it."""
    if os.environ.get("HYPOTHESIS_PROFILE") == "fuzz":
        return int(settings.default.max_examples)
    return default


def _skipped(exc: BaseException) -> bool:
    """Hypothesis' own control flow (a rejected or overrun example) is not a crash."""
    return type(exc).__module__.startswith("hypothesis")


def target(name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Count every example of the decorated test body as an input of target `name`."""
    seen = TARGETS.setdefault(name, Target())

    def wrap(body: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(body)
        def run(*args: Any, **kwargs: Any) -> Any:
            started, cpu = time.perf_counter(), time.process_time()
            try:
                result = body(*args, **kwargs)
            except BaseException as exc:
                if not _skipped(exc):
                    seen.tried += 1
                    seen.crashes += 1
                    first = " ".join(str(exc).split())[:100]
                    seen.crash_kinds[f"{type(exc).__name__}: {first}"] += 1
                raise
            elapsed, used = time.perf_counter() - started, time.process_time() - cpu
            seen.tried += 1
            seen.slowest = max(seen.slowest, elapsed)
            if used > STALL or elapsed > STALL_WALL:
                seen.crashes += 1
                seen.crash_kinds[f"stall: {used:.1f} s CPU, {elapsed:.1f} s"] += 1
                raise AssertionError(f"{name}: one input took {used:.1f} s of CPU, {elapsed:.1f} "
                                     f"s in all (a stall)")
            return result

        return run

    return wrap


def outcome(name: str, label: str, n: int = 1) -> None:
    """Tag the defined outcome an input of target `name` had (decoded, dead letter, 4xx...)."""
    TARGETS.setdefault(name, Target()).outcomes[label] += n


def merge(rows: list[dict[str, Any]]) -> None:
    """Add another process' table (an xdist worker's) to this one's counts."""
    for row in rows:
        seen = TARGETS.setdefault(row["target"], Target())
        seen.tried += row["inputs"]
        seen.crashes += row["crashes"]
        seen.slowest = max(seen.slowest, row["slowest_ms"] / 1000)
        seen.crash_kinds.update(row["crash_kinds"])
        seen.outcomes.update(row["outcomes"])


def table() -> list[dict[str, Any]]:
    """One row per target that ran: its counts and its outcomes, most frequent first."""
    return [{"target": name, "inputs": t.tried, "crashes": t.crashes,
             "slowest_ms": round(t.slowest * 1000, 1),
             "crash_kinds": dict(t.crash_kinds.most_common(5)),
             "outcomes": dict(t.outcomes.most_common())}
            for name, t in sorted(TARGETS.items()) if t.tried]


def report(write: Callable[[str], None]) -> None:
    """Print the table (and write it as JSON to $FUZZ_COUNTS when set)."""
    rows = table()
    if not rows:
        return
    profile = os.environ.get("HYPOTHESIS_PROFILE", "default")
    write(f"fuzz counts (hypothesis profile {profile}):")
    write(f"  {'target':<28} {'inputs':>8} {'crashes':>7} {'slowest ms':>10}  outcomes")
    for row in rows:
        top = ", ".join(f"{k} {v}" for k, v in list(row["outcomes"].items())[:6])
        write(f"  {row['target']:<28} {row['inputs']:>8} {row['crashes']:>7} "
              f"{row['slowest_ms']:>10}  {top}")
        for kind, n in row["crash_kinds"].items():
            write(f"  {'':<28} crash x{n}: {kind}")
    write(f"  {'total':<28} {sum(r['inputs'] for r in rows):>8} "
          f"{sum(r['crashes'] for r in rows):>7}")
    path = os.environ.get("FUZZ_COUNTS")
    if path:
        with open(path, "w", encoding="utf-8") as out:
            json.dump({"profile": profile, "targets": rows}, out, indent=1)

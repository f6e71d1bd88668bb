"""`python -m streams.harness.bench baseline-worker`: the baseline agent on its own."""

from __future__ import annotations

import sys

from streams.harness.bench.baseline import baseline_worker


def main(argv: list[str]) -> None:
    """Run the command named in argv."""
    if argv != ["baseline-worker"]:
        raise SystemExit("usage: python -m streams.harness.bench baseline-worker")
    baseline_worker()


if __name__ == "__main__":
    main(sys.argv[1:])

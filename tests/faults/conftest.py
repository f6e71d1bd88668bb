"""Fixtures of the fault-injection suite: the whole loop under steady load (stack.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.faults.stack import Stack, started


@pytest.fixture(scope="module")
def stack(broker, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """One running loop shared by the scenarios of a module (they run in file order)."""
    running = started(broker, tmp_path_factory.mktemp("faults"), "faults")
    yield running
    running.close()


@pytest.fixture
def own_stack(broker, tmp_path: Path) -> Iterator[Stack]:
    """A loop of its own, for a scenario that kills, freezes or moves a stream worker."""
    running = started(broker, tmp_path, "faults-w")
    yield running
    running.close()

"""StateTables without a broker: what a handler wrote is visible before the batch is flushed."""

from __future__ import annotations

from typing import Any

import faust

from streams.state import StateTables


def _state() -> StateTables:
    app = faust.App("state-test", broker="kafka://127.0.0.1:1", store="memory://")
    return StateTables(app, ("messages",), 4, outbox=None, embedded=False)  # type: ignore[arg-type]


def test_values_include_writes_not_yet_flushed() -> None:
    # the deadline timer re-indexes a partition from values(): a message written after the
    # partition came back, and before the next flush, must be among them (or its due is lost)
    state = _state()
    state.tables["messages"].data[b"stored"] = {"id": "stored"}
    state.at(1).put("messages", b"new", {"id": "new"})
    state.flushing["messages"][b"leaving"] = (2, {"id": "leaving"})
    assert sorted(v["id"] for v in state.values("messages")) == ["leaving", "new", "stored"]


def test_values_drop_deleted_and_read_the_latest_write() -> None:
    state = _state()
    data: dict[bytes, Any] = state.tables["messages"].data
    data[b"a"], data[b"b"] = {"id": "a", "v": 1}, {"id": "b"}
    state.at(0).put("messages", b"a", {"id": "a", "v": 2})
    state.at(0).delete("messages", b"b")
    assert [(v["id"], v["v"]) for v in state.values("messages")] == [("a", 2)]


def test_a_commit_never_skips_an_offset_that_was_not_handled() -> None:
    from streams.app import hole

    never = lambda offset: False  # noqa: E731  (no gap in the log)
    assert hole([], 10, never) is None
    assert hole([10, 11, 12], 10, never) is None  # the next to read was handled
    assert hole([11, 12], 10, never) == (10, 11)  # 10 was read past: Faust would commit 13
    assert hole([14, 12, 13], 10, never) == (10, 12)
    assert hole([11, 12], None, never) is None  # nothing committed yet: nothing to compare
    assert hole([11, 12], 10, lambda offset: offset == 10) is None  # the log has no record 10
    assert hole([9, 10], 10, never) is None

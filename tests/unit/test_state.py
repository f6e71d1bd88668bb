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

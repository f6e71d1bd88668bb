"""The state journal, pure: one record per partition per batch, recovered only when whole.

A worker's batch for one account partition (every table's writes, the input positions of the
records it handled, the outputs they produced, the partition's stream time) is one journal
record (several chunks when large, the last one completing it). A partition's new owner first
appends a *claim*; the claim's own offset is the owner's epoch, which every batch it writes
carries (offsets only grow, so epochs do, whatever the clocks or the group's generations). A
batch of an older epoch that lands after a claim is fenced: recovery ignores it, and its
writer, which reads back the journal between its own records, finds the claim and discards
the batch before anything of it is stored or sent. No Kafka, Faust or ClickHouse import:
plain records in, batches out.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson

from streams.domain.compact import compact_bytes

#: Largest journal record written (bytes); a larger batch is split into chunks.
CHUNK_BYTES = 512 * 1024
FORMAT = 1

Output = tuple[str, bytes, bytes | None, int | None, list[tuple[str, bytes]] | None]
"""An output record: topic, key, value, partition (None: the key's), headers."""
Write = tuple[str, bytes, dict[str, Any] | None]
"""A table write: table name, key, value (None deletes the key)."""


class JournalError(ValueError):
    """A journal record that cannot be read (written by something else)."""


@dataclass
class Batch:
    """What one batch of one partition changed: its writes, positions, outputs and clock."""

    epoch: int
    seq: int
    writes: list[Write] = field(default_factory=list)
    positions: dict[str, int] = field(default_factory=dict)
    outputs: list[Output] = field(default_factory=list)
    clock: float = 0.0

    def empty(self) -> bool:
        """Whether the batch changes nothing."""
        return not (self.writes or self.positions or self.outputs)


def _bytes(data: bytes) -> str:
    return data.decode("latin-1")


def _unbytes(text: str) -> bytes:
    return text.encode("latin-1")


def dump(value: Any) -> bytes:
    """A journal record or table value as JSON: by orjson (13x the standard library on a table
    value; any JSON reader reads it), by the standard library for what orjson refuses (an
    integer beyond 64 bits). Keys and ids are not written here (streams.domain.compact)."""
    try:
        return orjson.dumps(value)
    except TypeError:
        return compact_bytes(value)


def encode(batch: Batch, limit: int = CHUNK_BYTES) -> list[bytes]:
    """The journal records of a batch: one, or chunks of at most about `limit` bytes whose
    last completes the batch (writes and outputs are split; positions go with the last).
    Each item is serialized once; a record is its items' JSON joined inside its head's."""
    items: list[list[Any]] = [["w", t, _bytes(k), v] for t, k, v in batch.writes]
    items += [["o", topic, _bytes(key), None if value is None else
               base64.b64encode(value).decode(), partition,
               [[h, base64.b64encode(b).decode()] for h, b in headers or ()]]
              for topic, key, value, partition, headers in batch.outputs]
    chunks: list[list[bytes]] = [[]]
    size = 0
    for item in map(dump, items):
        if chunks[-1] and size + len(item) > limit:
            chunks.append([])
            size = 0
        chunks[-1].append(item)
        size += len(item) + 1
    head = b'{"f":%d,"k":"batch","e":%d,"s":%d' % (FORMAT, batch.epoch, batch.seq)
    tail = b',"p":' + dump(batch.positions) + b',"c":' + dump(batch.clock)
    return [b'%s,"i":%d,"n":%d,"items":[%s]%s}' % (head, i, len(chunks), b",".join(chunk),
                                                   tail if i == len(chunks) - 1 else b"")
            for i, chunk in enumerate(chunks)]


def claim(generation: int) -> bytes:
    """The record a partition's new owner appends before it recovers the partition (its
    offset becomes the owner's epoch; the group generation is kept for the reader)."""
    return dump({"f": FORMAT, "k": "claim", "g": generation})


def sent(epoch: int, seq: int) -> bytes:
    """The record saying a batch's outputs were all acknowledged (none to send again)."""
    return dump({"f": FORMAT, "k": "sent", "e": epoch, "s": seq})


def mark() -> bytes:
    """A record that changes nothing (appended to learn a partition's true end)."""
    return dump({"f": FORMAT, "k": "mark"})


def decode(value: bytes | None) -> dict[str, Any] | None:
    """A journal record as a dict, None for an empty value; JournalError when unreadable."""
    if not value:
        return None
    try:
        record = orjson.loads(value)
    except ValueError as exc:
        raise JournalError(f"not a journal record: {exc}") from None
    if not isinstance(record, dict) or record.get("f") != FORMAT:
        raise JournalError("not a journal record of this format")
    return record


def _batch(epoch: int, seq: int, chunks: Iterable[dict[str, Any]]) -> Batch:
    batch = Batch(epoch, seq)
    for record in chunks:
        for item in record["items"]:
            if item[0] == "w":
                batch.writes.append((item[1], _unbytes(item[2]), item[3]))
            else:
                _, topic, key, value, partition, headers = item
                batch.outputs.append((
                    topic, _unbytes(key), None if value is None else base64.b64decode(value),
                    partition, [(h, base64.b64decode(b)) for h, b in headers] or None))
        if "p" in record:
            batch.positions = {t: int(o) for t, o in record["p"].items()}
            batch.clock = float(record["c"])
    return batch


@dataclass
class Fold:
    """Recovery of one partition's journal, record by record in offset order.

    `epoch` is the newest claim seen; a batch of an older epoch after it is fenced. Chunks of a
    batch wait until its last arrives; a batch left incomplete (its writer died) is dropped."""

    epoch: int = -1
    seq: int = -1
    sent: int = -1
    pending: list[dict[str, Any]] = field(default_factory=list)
    fenced: int = 0
    incomplete: int = 0

    def feed(self, value: bytes | None, offset: int) -> Batch | None:
        """Take the record at `offset`; the batch it completes, if that batch is to be
        applied."""
        record = decode(value)
        if record is None or record["k"] == "mark":
            return None
        if record["k"] == "claim":
            self._drop()
            self.epoch = max(self.epoch, offset)
            return None
        epoch = int(record["e"])
        if epoch < self.epoch:
            self.fenced += 1
            return None
        self.epoch = epoch
        if record["k"] == "sent":
            self.sent = max(self.sent, int(record["s"]))
            return None
        key = (epoch, record["s"])
        if self.pending and ((self.pending[0]["e"], self.pending[0]["s"]) != key
                             or record["i"] != len(self.pending)):
            self._drop()
        if record["i"] != len(self.pending):
            self.incomplete += 1  # a chunk whose batch began before a lost chunk
            return None
        self.pending.append(record)
        if record["i"] < record["n"] - 1:
            return None
        chunks, self.pending = self.pending, []
        self.seq = int(record["s"])
        return _batch(epoch, self.seq, chunks)

    def _drop(self) -> None:
        if self.pending:
            self.incomplete += 1
            self.pending = []


def fenced_by(records: Iterable[tuple[int, bytes | None]], epoch: int) -> int | None:
    """The epoch of the first claim or batch newer than `epoch` among (offset, record) pairs,
    if any: the writer of `epoch` no longer owns the partition."""
    for offset, value in records:
        record = decode(value)
        if record is None or record["k"] == "mark":
            continue
        newer = offset if record["k"] == "claim" else int(record["e"])
        if newer > epoch:
            return newer
    return None

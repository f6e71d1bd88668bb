"""Benchmark of the sink: rows/s from a topic of mixed events into chDB, beside a bare
clickhouse-connect insert of the same rows (same batches, same tables) in the same run."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

from connectors.clickhouse.client import client
from connectors.clickhouse.migrate import Migrator
from connectors.clickhouse.sink import Sink
from connectors.clickhouse.tables import TABLES, Row, row
from connectors.settings import ConnectorSettings
from schemas import Codec
from streams.harness.bench.common import Log, bench_kafka, fresh_settings, produce, quiet
from streams.harness.bench.events import mixed_events

EVENTS_PER_MESSAGE = 10.41  # what mixed_events makes, on average


def bare_insert(ch: Any, rows: dict[str, list[Row]], batch: int) -> float:
    """Seconds to insert every table's rows in batches of `batch` through clickhouse-connect."""
    started = time.monotonic()
    for topic, table_rows in rows.items():
        table = TABLES[topic]
        for i in range(0, len(table_rows), batch):
            ch.insert(table.name, table_rows[i:i + batch], column_names=table.all_columns)
    return time.monotonic() - started


def run_sink_bench(events: int, batch: int, var_dir: Path, log: Log = quiet) -> dict[str, Any]:
    """Produce ~`events` mixed events, insert them bare into one database and through the sink
    into another; rows/s of each and their ratio."""
    workdir = var_dir / "sink-bench"
    store = workdir / "chdb"
    if store.exists():
        import shutil

        shutil.rmtree(store)
    codec = Codec()
    records, by_topic = mixed_events(codec, max(1, round(events / EVENTS_PER_MESSAGE)), "bench")
    total = len(records)
    log(f"{total:,} events over {len(by_topic)} topics")
    dsn = f"chdb://{store}"
    Migrator(dsn, "bare").up()
    Migrator(dsn).up()
    with bench_kafka(var_dir, log) as bootstrap:
        settings = fresh_settings(bootstrap, "sink")
        produce(settings, records)
        log("produced")
        rows: dict[str, list[Row]] = {}
        for topic, _, value in records:
            table = TABLES[topic]
            rows.setdefault(topic, []).append(
                row(table, codec.decode(value, topic, table.record), topic, 0, 0))
        bare_s = bare_insert(client(dsn, "bare"), rows, batch)
        log(f"bare insert: {total / bare_s:,.0f} rows/s")
        ch = client(dsn, "pushcascade")
        options: dict[str, Any] = {"sink_batch_rows": batch}
        config = ConnectorSettings(**options)
        sink = Sink(settings, config, ch, codec)
        stop = threading.Event()
        started = time.monotonic()
        thread = threading.Thread(target=sink.run, args=(stop,), daemon=True)
        thread.start()
        while sink.inserted < total:
            if not thread.is_alive():
                raise RuntimeError("the sink stopped")
            time.sleep(0.05)
        sink_s = time.monotonic() - sink.first_at
        joined_s = sink.first_at - started
        stop.set()
        thread.join(30)
        log(f"sink: {total / sink_s:,.0f} rows/s after {joined_s:.1f}s joining its group")
        stored = sum(int(ch.query(f"SELECT count() FROM {t.name} FINAL")  # noqa: S608  (catalog)
                         .result_rows[0][0])
                     for t in TABLES.values())
    return {"events": total, "batch_rows": batch, "bare_rows_per_s": total / bare_s,
            "sink_rows_per_s": total / sink_s, "ratio": bare_s / sink_s, "rows_stored": stored,
            "group_join_s": joined_s,
            "target_ratio": 0.5}

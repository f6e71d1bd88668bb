"""Prometheus metrics: what the stream processors did, every service's records in and out per
topic, their handling time and consumer lag, and the /metrics, /healthz and /readyz server."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import Counter, Gauge, Histogram, make_wsgi_app

log = logging.getLogger(__name__)

EVENTS = Counter("pushcascade_events", "Events handled by the stream processors, by stage and kind",
                 ["stage", "event"])
CHANGELOG = Counter("pushcascade_changelog_records", "State records written to table changelogs",
                    ["table"])
PENDING = Gauge("pushcascade_deadlines_pending",
                "Deadlines of the loaded window (due within about a minute) in this worker",
                ["table"])
OVERDUE = Gauge("pushcascade_deadline_overdue_seconds",
                "How long the earliest indexed deadline has been due (0 when none is)", ["table"])
LARGEST = Gauge("pushcascade_changelog_record_bytes_max", "Largest changelog record written",
                ["table"])
FENCED = Counter("pushcascade_batches_fenced",
                 "Batches discarded because a newer owner had claimed their partition")
RECORDS_IN = Counter("pushcascade_records_in", "Records consumed, by service and topic",
                     ["service", "topic"])
RECORDS_OUT = Counter("pushcascade_records_out", "Records produced, by service and topic",
                      ["service", "topic"])
PROCESSING = Histogram("pushcascade_processing_seconds",
                       "Time to handle one consumed record, by service and topic",
                       ["service", "topic"], buckets=(.00001, .00005, .0001, .0005, .001, .005,
                                                      .01, .05, .1, .5, 1, 5))
LAG = Gauge("pushcascade_consumer_lag", "Records a service's consumer group is behind the high "
            "watermark, per partition", ["service", "topic", "partition"])


class Flow:
    """One service's records in and out per topic and the time it takes to handle them (the
    labelled children are cached: a record costs a dict lookup and an increment)."""

    def __init__(self, service: str) -> None:
        self.service = service
        self._in: dict[str, Any] = {}
        self._out: dict[str, Any] = {}
        self._took: dict[str, Any] = {}
        self._lagging: set[tuple[str, int]] = set()

    def received(self, topic: str, n: int = 1) -> None:
        """n records consumed from topic."""
        child = self._in.get(topic) or self._in.setdefault(
            topic, RECORDS_IN.labels(self.service, topic))
        child.inc(n)

    def sent(self, topic: str, n: int = 1) -> None:
        """n records produced to topic."""
        child = self._out.get(topic) or self._out.setdefault(
            topic, RECORDS_OUT.labels(self.service, topic))
        child.inc(n)

    def took(self, topic: str, seconds: float) -> None:
        """One record of topic was handled in this many seconds."""
        child = self._took.get(topic) or self._took.setdefault(
            topic, PROCESSING.labels(self.service, topic))
        child.observe(seconds)

    def lags(self, behind: dict[tuple[str, int], int]) -> None:
        """How far the service's group is behind on each partition it holds now (partitions
        it no longer holds leave the gauge, so it also shows who owns what)."""
        for topic, partition in self._lagging - set(behind):
            LAG.remove(self.service, topic, str(partition))
        for (topic, partition), records in behind.items():
            LAG.labels(self.service, topic, str(partition)).set(max(0, records))
        self._lagging = set(behind)


def confluent_lag(flow: Flow, consumer: Any) -> None:
    """Report a confluent-kafka consumer's lag per assigned partition: its position against the
    high watermark its last fetch reported (the embedded broker's ListOffsets is short)."""
    try:
        behind = {}
        for tp in consumer.position(consumer.assignment()):
            _, high = consumer.get_watermark_offsets(tp, cached=True)
            if high >= 0 and tp.offset >= 0:
                behind[(tp.topic, tp.partition)] = high - tp.offset
        flow.lags(behind)
    except Exception as exc:  # a metric must never stop the service
        log.debug("%s: lag not measured: %s", flow.service, exc)


class Counts:
    """Counts events of one stage (router, devices, campaigns) into pushcascade_events_total."""

    def __init__(self, stage: str) -> None:
        self.stage = stage

    def add(self, event: str, n: float = 1) -> None:
        """Count n events of this kind."""
        if n:
            EVENTS.labels(self.stage, event).inc(n)

    def get(self, event: str) -> float:
        """The count so far (for tests and logs)."""
        return float(EVENTS.labels(self.stage, event)._value.get())


def serve(port: int, ready: Callable[[], bool] | None = None) -> None:
    """Serve /metrics, /healthz (the process answers) and /readyz (200 once `ready()` holds,
    else 503) on this port, in a thread (0 = don't)."""
    if not port:
        return
    metrics = make_wsgi_app()

    def app(environ: dict[str, Any], start: Callable[..., Any]) -> list[bytes]:
        path = environ.get("PATH_INFO", "")
        if path in ("/healthz", "/readyz"):
            ok = path == "/healthz" or ready is None or _safely(ready)
            start("200 OK" if ok else "503 Service Unavailable",
                  [("Content-Type", "text/plain")])
            return [b"ok\n" if ok else b"not ready\n"]
        return list(metrics(environ, start))

    server = make_server("", port, app, ThreadingWSGIServer, handler_class=_Quiet)
    threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()


def _safely(ready: Callable[[], bool]) -> bool:
    try:
        return bool(ready())
    except Exception:  # a probe must answer, whatever state the service is in
        return False


class ThreadingWSGIServer(ThreadingMixIn, WSGIServer):
    """One thread per request, so a slow scrape never blocks a probe."""

    daemon_threads = True


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002  (no access log)
        pass

"""Prometheus metrics of the stream processors: one labelled counter of what happened."""

from __future__ import annotations

import threading
from collections.abc import Callable
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import Counter, Gauge, make_wsgi_app

EVENTS = Counter("pushcascade_events", "Events handled by the stream processors, by stage and kind",
                 ["stage", "event"])
CHANGELOG = Counter("pushcascade_changelog_records", "State records written to table changelogs",
                    ["table"])
PENDING = Gauge("pushcascade_deadlines_pending", "Deadlines indexed by this worker", ["table"])
OVERDUE = Gauge("pushcascade_deadline_overdue_seconds",
                "How long the earliest indexed deadline has been due (0 when none is)", ["table"])
LARGEST = Gauge("pushcascade_changelog_record_bytes_max", "Largest changelog record written",
                ["table"])


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

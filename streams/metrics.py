"""Prometheus metrics of the stream processors: one labelled counter of what happened."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, start_http_server

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


def serve(port: int) -> None:
    """Expose /metrics on this port (0 = don't)."""
    if port:
        start_http_server(port)

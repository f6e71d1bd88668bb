"""Prometheus metrics of the dispatcher and the ack gateway."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

DISPATCHED = Counter("pushcascade_dispatch_outcomes", "Sends with a recorded outcome",
                     ["provider", "status"])
LATENCY = Histogram("pushcascade_dispatch_seconds", "From first provider call to outcome",
                    ["provider"], buckets=(.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30))
IN_FLIGHT = Gauge("pushcascade_dispatch_in_flight", "Provider requests in flight")
RETRIES = Counter("pushcascade_dispatch_retries", "Provider calls repeated after a retryable "
                  "error", ["provider"])
REPEATS = Counter("pushcascade_dispatch_repeats", "Sends skipped: their send_id was done or "
                  "in flight")
BREAKER = Gauge("pushcascade_dispatch_circuit", "Circuit state per provider: 0 closed, "
                "1 half-open, 2 open", ["provider"])
DEAD_LETTERS = Counter("pushcascade_dispatch_dead_letters", "Undecodable sends sent to push.dlq")
ACKS = Counter("pushcascade_gateway_acks", "Acks the gateway wrote, by kind", ["kind"])
REFUSED = Counter("pushcascade_gateway_refused", "Requests the gateway refused, by reason",
                  ["reason"])

"""Prometheus metrics of the dispatcher, the ack gateway and the sink."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

DISPATCHED = Counter("pushcascade_dispatch_outcomes", "Sends with a recorded outcome",
                     ["provider", "status"])
LATENCY = Histogram("pushcascade_dispatch_seconds", "From first provider call to outcome",
                    ["provider"], buckets=(.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30))
IN_FLIGHT = Gauge("pushcascade_dispatch_in_flight", "Provider requests in flight")
RETRIES = Counter("pushcascade_dispatch_retries", "Provider calls repeated after a retryable "
                  "error", ["provider"])
UNKNOWN = Counter("pushcascade_dispatch_unknown", "Provider calls cut off without an answer "
                  "after the request may have reached the provider (a read timeout): not "
                  "repeated unless the vendor drops repeats of the idempotency key",
                  ["provider"])
REPEATS = Counter("pushcascade_dispatch_repeats", "Sends skipped: their send_id was done or "
                  "in flight")
BREAKER = Gauge("pushcascade_dispatch_circuit", "Circuit state per provider: 0 closed, "
                "1 half-open, 2 open", ["provider"])
DEAD_LETTERS = Counter("pushcascade_dispatch_dead_letters", "Undecodable sends sent to push.dlq")
ACKS = Counter("pushcascade_gateway_acks", "Acks the gateway wrote, by kind", ["kind"])
ACK_WRITE = Histogram("pushcascade_gateway_ack_write_seconds", "From an ack's stamp to the "
                      "broker's acknowledgement of it (PUSHCASCADE_INPUT_SLACK must cover it)",
                      buckets=(.005, .01, .025, .05, .1, .15, .25, .5, 1, 2.5, 5))
REFUSED = Counter("pushcascade_gateway_refused", "Requests the gateway refused, by reason",
                  ["reason"])
SINK_ROWS = Counter("pushcascade_sink_rows", "Rows the sink inserted into ClickHouse", ["table"])
SINK_INSERT = Histogram("pushcascade_sink_insert_seconds", "Duration of one successful insert",
                        ["table"], buckets=(.01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10))
SINK_FAILURES = Counter("pushcascade_sink_insert_failures", "Inserts that failed (retried)")
SINK_PAUSED = Gauge("pushcascade_sink_paused", "1 while the sink waits for ClickHouse")

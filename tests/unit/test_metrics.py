"""The shared service metrics: records in and out, handling time, lag per held partition."""

from __future__ import annotations

from prometheus_client import REGISTRY

from streams.metrics import Flow


def sample(name: str, **labels: str) -> float | None:
    """A sample's value in the default registry (None when the series does not exist)."""
    return REGISTRY.get_sample_value(name, labels)


def test_records_in_and_out_and_handling_time_are_counted_per_service_and_topic():
    flow = Flow("unit-a")
    flow.received("t.push.requests", 3)
    flow.received("t.push.requests")
    flow.sent("t.push.sends", 2)
    flow.took("t.push.requests", 0.002)
    assert sample("pushcascade_records_in_total", service="unit-a",
                  topic="t.push.requests") == 4
    assert sample("pushcascade_records_out_total", service="unit-a", topic="t.push.sends") == 2
    assert sample("pushcascade_processing_seconds_count", service="unit-a",
                  topic="t.push.requests") == 1
    assert sample("pushcascade_processing_seconds_bucket", service="unit-a",
                  topic="t.push.requests", le="0.001") == 0
    assert sample("pushcascade_processing_seconds_bucket", service="unit-a",
                  topic="t.push.requests", le="0.005") == 1


def test_the_lag_gauge_holds_only_the_partitions_the_service_holds_now():
    flow = Flow("unit-b")
    flow.lags({("t.push.requests", 0): 5, ("t.push.requests", 1): 2})
    assert sample("pushcascade_consumer_lag", service="unit-b", topic="t.push.requests",
                  partition="0") == 5
    flow.lags({("t.push.requests", 1): -3})  # partition 0 went to another worker
    assert sample("pushcascade_consumer_lag", service="unit-b", topic="t.push.requests",
                  partition="0") is None
    assert sample("pushcascade_consumer_lag", service="unit-b", topic="t.push.requests",
                  partition="1") == 0  # never negative

"""The harness: embedded broker, worker processes, topic taps and simulated devices.

Dev tooling, not stream processing: tests, benchmarks (`streams.harness.bench`) and
`pushcascade up` / `demo` run the pipeline through it.
"""

from streams.harness.broker import (
    Broker,
    answers_api_versions,
    free_port,
    kafka,
    stack,
    start_broker,
)
from streams.harness.devices import DeviceSimulator, Population, User, population
from streams.harness.processes import (
    Process,
    ProcessExited,
    embedded_ack_keys,
    start_python,
    start_worker,
    worker_env,
    worker_events,
)
from streams.harness.taps import (
    WORKER_INPUTS,
    Ends,
    Tap,
    changelog_tap,
    committed,
    drain,
    end_offsets,
    group_id,
    latest,
    producer_for,
    table_state,
    wait_accounts,
    wait_committed,
    wait_devices,
    wait_idle,
)

__all__ = [
    "WORKER_INPUTS", "Broker", "DeviceSimulator", "Ends", "Population", "Process",
    "ProcessExited", "Tap", "User", "answers_api_versions", "changelog_tap", "committed",
    "drain", "embedded_ack_keys", "end_offsets", "free_port", "group_id", "kafka", "latest",
    "population", "producer_for", "stack",
    "start_broker", "start_python", "start_worker", "table_state", "wait_accounts",
    "wait_committed", "wait_devices", "wait_idle", "worker_env", "worker_events",
]

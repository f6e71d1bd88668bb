"""Method B end to end through the real broker: route fallback, probing, campaigns, crashes."""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass

from connectors.producer import RecordProducer
from streams.domain.routes import DeviceRoutes, success_rate
from streams.harness import (
    DeviceSimulator,
    Process,
    Tap,
    changelog_tap,
    latest,
    wait_devices,
    wait_idle,
    worker_env,
)
from tests.helpers import device, request

ROUTES = ["XIAOMI", "JPUSH", "GETUI"]  # Xiaomi devices: original XIAOMI, alternatives JPUSH, GETUI
PROBE_TIMEOUT = 30  # a probe answered late is still answered: only silence counts as lost
AMPLE = 12          # a receipt deadline the simulated devices answer well within
FAST_PROBES = {"probe_count_first": 4, "probe_count_again": 2, "probe_device_per_hour": 100000,
               "probe_global_per_second": 10000, "probe_timeout": PROBE_TIMEOUT,
               "new_account_pushes": 0}


def app_only(settings, accounts_devices: dict[str, list[str]]) -> RecordProducer:
    """Register APP-only accounts (no addresses), so every push goes to their devices."""
    producer = RecordProducer(settings.connections.kafka_bootstrap_servers,
                              topic_prefix=settings.tuning.topic_prefix)
    for account, devices in accounts_devices.items():
        for d in devices:
            producer.send("device.registry", device(account, d, ROUTES))
    producer.flush()
    return producer


def device_state(tap: Tap, device_id: str) -> DeviceRoutes | None:
    """The latest state of a device, from the devices table changelog."""
    tap.poll(0.2)
    raw = latest(tap, "device_id").get(device_id)
    return DeviceRoutes.from_dict(raw) if raw else None


def probe_rule(pattern: dict[str, list[bool]]):
    """Answer probe n on a route with pattern[route][n % len]; never answer the original route."""
    seen: defaultdict[tuple[str, str], int] = defaultdict(int)

    def rule(send) -> bool:
        if send["reason"] != "PROBE":
            return False
        n = seen[send["device_id"], send["route"]]
        seen[send["device_id"], send["route"]] += 1
        answers = pattern.get(send["route"], [False])
        return answers[n % len(answers)]

    return rule


def keep_probing(producer, account: str, device_id: str, until: Callable[[], bool],
                 timeout: float = 60.0) -> None:
    """Re-register the device (a device event plans the probes that are due) until `until()`."""
    end = time.monotonic() + timeout
    while not until():
        assert time.monotonic() < end, "probing did not finish"
        producer.send("device.registry", device(account, device_id, ROUTES))
        producer.flush()
        time.sleep(0.5)


def device_sends(sends: list[dict], message_id: str) -> list[tuple[str, str, str, int]]:
    """(device, route, reason, attempt) of a message's device-level sends."""
    return [(r["device_id"], r["route"], r["reason"], r["attempt"]) for r in sends
            if r["message_id"] == message_id and r["device_id"]]


def test_silent_original_route_falls_back_once_on_the_best_measured_route(
        settings, workers, devices):
    env = worker_env(settings, receipt_deadline=3, **FAST_PROBES)
    producer = app_only(settings, {"b-1": ["b-1-d"]})
    # JPUSH answers 2 probes of 4 (rate 0.5), GETUI 3 of 4 (0.75): GETUI must be chosen.
    sim = devices(probe_rule({"JPUSH": [True, False], "GETUI": [True, True, True, False]}))
    worker = workers(env)
    with changelog_tap(settings, "devices") as states:

        def measured() -> bool:
            dev = device_state(states, "b-1-d")
            return dev is not None and all(
                r in dev.stats and success_rate(dev.stats[r], 4) is not None
                for r in ("JPUSH", "GETUI"))

        keep_probing(producer, "b-1", "b-1-d", measured, timeout=PROBE_TIMEOUT + 60)
        dev = device_state(states, "b-1-d")
    assert dev is not None
    assert dev.original == "XIAOMI" and dev.alternatives == ["JPUSH", "GETUI"]
    assert success_rate(dev.stats["JPUSH"], 4) == 0.5
    assert success_rate(dev.stats["GETUI"], 4) == 0.75
    producer.send("push.requests", request("b-1-m", "b-1"))
    producer.flush()
    sim.wait_for(lambda rs: ("b-1-d", "GETUI", "FALLBACK_ROUTE", 1) in device_sends(rs, "b-1-m"),
                 timeout=60)
    sim.wait_quiet(workers=[worker])
    sends = sim.records()
    assert device_sends(sends, "b-1-m") == [
        ("b-1-d", "XIAOMI", "ORIGINAL_ROUTE", 0), ("b-1-d", "GETUI", "FALLBACK_ROUTE", 1)]
    original, fallback = (r for r in sends if r["message_id"] == "b-1-m" and r["device_id"])
    assert fallback["sent_at"] - original["sent_at"] >= 3000


def test_receipt_on_the_original_route_means_no_fallback(settings, workers, devices):
    env = worker_env(settings, receipt_deadline=AMPLE, **FAST_PROBES)
    producer = app_only(settings, {"b-2": ["b-2-d", "b-2-x"]})
    sim = devices(lambda s: s["reason"] == "ORIGINAL_ROUTE" and s["device_id"] == "b-2-d")
    worker = workers(env)
    wait_devices(settings, ["b-2-d", "b-2-x"], workers=[worker])
    # b-2-x never answers and is pushed after b-2-d: once it has fallen back, b-2-d's receipt
    # deadline has passed too, and its deadline event came first on the partition
    producer.send("push.requests", dict(request("b-2-m", "b-2"), device_ids=["b-2-d"]))
    producer.send("push.requests", dict(request("b-2-c", "b-2"), device_ids=["b-2-x"]))
    producer.flush()
    sim.wait_for(lambda rs: any(r["message_id"] == "b-2-c" and r["reason"] == "FALLBACK_ROUTE"
                                for r in rs), timeout=AMPLE + 60)
    sim.wait_quiet(workers=[worker])
    sends = sim.records()
    assert device_sends(sends, "b-2-m") == [("b-2-d", "XIAOMI", "ORIGINAL_ROUTE", 0)]
    assert [r["send_id"] for r in sim.answered if r["message_id"] == "b-2-m"] == [
        r["send_id"] for r in sends if r["message_id"] == "b-2-m" and r["device_id"]]
    assert device_sends(sends, "b-2-c") == [
        ("b-2-x", "XIAOMI", "ORIGINAL_ROUTE", 0), ("b-2-x", "JPUSH", "FALLBACK_ROUTE", 1)]


def test_reprobe_below_threshold_replaces_the_target_route(settings, workers, devices, taps):
    env = worker_env(settings, probe_interval=1, min_route_success=0.8, **FAST_PROBES)
    producer = app_only(settings, {"b-3": ["b-3-d"]})
    sim = devices(lambda send: send["reason"] == "PROBE")  # every probe on every route answered
    workers(env)
    changes = taps("device.route-changes")
    keep_probing(producer, "b-3", "b-3-d", lambda: bool(changes.poll(0.1) or changes.records))
    # both routes answer everything: equal rates, JPUSH first by registration order
    assert [(c["to_route"], c["reason"]) for c in changes.records] == [("JPUSH", "INITIAL")]
    with changelog_tap(settings, "devices") as states:

        def two_rounds_passed() -> bool:
            dev = device_state(states, "b-3-d")
            jpush = dev.stats["JPUSH"] if dev else None
            # 4 first-window probes, then at least two closed re-probe rounds of 2
            return jpush is not None and jpush.probes_total >= 8 and jpush.reprobe_sent == 0

        keep_probing(producer, "b-3", "b-3-d", two_rounds_passed)
        dev = device_state(states, "b-3-d")
    assert dev is not None and dev.target == ["JPUSH"]
    assert dev.stats["JPUSH"].reprobe_rate == 1.0
    assert len(changes.drain()) == 1  # re-probes passed: no change
    sim.rule = lambda send: send["reason"] == "PROBE" and send["route"] == "GETUI"
    keep_probing(producer, "b-3", "b-3-d",
                 lambda: bool(changes.poll(0.1)) or len(changes.records) >= 2,
                 timeout=PROBE_TIMEOUT + 60)
    assert [(c["from_route"], c["to_route"], c["reason"]) for c in changes.records] == [
        (None, "JPUSH", "INITIAL"), ("JPUSH", "GETUI", "REPROBE_BELOW_MIN")]


def wait_deadline_timer(producer: RecordProducer, escalations: Tap, account: str,
                        worker: Process) -> None:
    """Wait until the worker's deadline timer has built its index: a LOW push (read deadline
    ~0, PUSHCASCADE_READ_DEADLINE_LOW) to an APP-only account has escalated.

    A campaign pushed before that first build gets individual receipt deadlines from it (see
    test_campaign_devices_get_no_individual_fallback_after_a_restart)."""
    producer.send("push.requests", request(f"{account}-m", account, "LOW"))
    producer.flush()
    escalations.wait_for(lambda rs: any(r["account_id"] == account for r in rs),
                         workers=[worker])


@dataclass
class Campaign:
    """A campaign pushed to 10 APP-only accounts with one device each."""

    env: dict[str, str]
    worker: Process
    devices: DeviceSimulator
    accounts: dict[str, list[str]]

    def device_sends(self) -> list[dict]:
        """The device-level sends to the campaign's devices so far."""
        return [r for r in self.devices.records()
                if r["device_id"] and r["account_id"] in self.accounts]


def start_campaign(settings, workers, devices, taps, campaign: str, answering: int) -> Campaign:
    """Start a worker, wait until its deadline timer runs, push a campaign to 10 devices;
    `answering` of them answer on their original route."""
    env = worker_env(settings, receipt_deadline=AMPLE, campaign_fallback_ratio=0.5,
                     read_deadline_low=0.001, **FAST_PROBES)
    accounts = {f"{campaign}-a{i}": [f"{campaign}-d{i}"] for i in range(10)}
    producer = app_only(settings, {**accounts, f"{campaign}-warm": [f"{campaign}-warm-d"]})
    answer = {f"{campaign}-d{i}" for i in range(answering)}
    sim = devices(lambda s: s["reason"] == "ORIGINAL_ROUTE" and s["device_id"] in answer)
    worker = workers(env, "first")
    wait_devices(settings, [d for ds in accounts.values() for d in ds], workers=[worker])
    wait_deadline_timer(producer, taps("push.escalations"), f"{campaign}-warm", worker)
    for account in accounts:
        producer.send("push.requests", dict(request(f"{account}-m", account),
                                            campaign_id=campaign))
    producer.flush()
    return Campaign(env, worker, sim, accounts)


def run_campaign(settings, workers, devices, taps, campaign: str,
                 answering: int) -> tuple[list, list]:
    """A campaign to 10 devices, `answering` of which answer: its decisions and device sends."""
    c = start_campaign(settings, workers, devices, taps, campaign, answering)
    decisions = taps("campaign.decisions")
    decisions.wait_for(lambda rs: len(rs) >= 1, timeout=AMPLE + 60, workers=[c.worker])
    c.devices.wait_quiet(workers=[c.worker])
    return decisions.drain(), c.device_sends()


def test_campaign_above_the_ratio_resends_nothing(settings, workers, devices, taps):
    decisions, sends = run_campaign(settings, workers, devices, taps, "c8", answering=8)
    assert [(d["targeted"], d["acked"], d["ratio"], d["fallback"]) for d in decisions] == [
        (10, 8, 0.8, False)]
    assert Counter(r["reason"] for r in sends if r["reason"] != "PROBE") == {"ORIGINAL_ROUTE": 10}


def test_campaign_below_the_ratio_falls_back_for_exactly_the_silent_devices(
        settings, workers, devices, taps):
    decisions, sends = run_campaign(settings, workers, devices, taps, "c3", answering=3)
    assert [(d["targeted"], d["acked"], d["fallback"]) for d in decisions] == [(10, 3, True)]
    fallback = [r for r in sends if r["reason"] == "FALLBACK_ROUTE"]
    assert sorted(r["device_id"] for r in fallback) == [f"c3-d{i}" for i in range(3, 10)]
    assert {r["route"] for r in fallback} == {"JPUSH"}  # unmeasured: prior, registration order


def test_campaign_devices_get_no_individual_fallback_after_a_restart(
        settings, workers, devices, taps):
    c = start_campaign(settings, workers, devices, taps, "cr", answering=8)
    c.devices.wait_for(lambda _: sum(r["reason"] == "ORIGINAL_ROUTE"
                                     for r in c.device_sends()) == 10)
    wait_idle(settings, workers=[c.worker])  # targets and receipts committed
    c.worker.kill()
    second = workers(c.env, "second")
    decisions = taps("campaign.decisions")
    decisions.wait_for(lambda rs: len(rs) >= 1, timeout=AMPLE + 60, workers=[second])
    c.devices.wait_quiet(workers=[second])
    assert [(d["targeted"], d["acked"], d["fallback"]) for d in decisions.drain()] == [
        (10, 8, False)]
    assert [r for r in c.device_sends() if r["reason"] == "FALLBACK_ROUTE"] == []


def test_sigkill_with_receipt_deadlines_pending_fires_each_once(settings, workers, devices):
    deadline = 15
    env = worker_env(settings, receipt_deadline=deadline, **FAST_PROBES)
    accounts = {f"k-a{i}": [f"k-d{i}"] for i in range(6)}
    producer = app_only(settings, accounts)
    sim = devices(lambda s: False)
    first = workers(env, "first")
    wait_devices(settings, [d for ds in accounts.values() for d in ds], workers=[first])
    for account in accounts:
        producer.send("push.requests", request(f"{account}-m", account))
    producer.flush()
    originals = sim.wait_for(lambda rs: sum(r["reason"] == "ORIGINAL_ROUTE" for r in rs) == 6)
    wait_idle(settings, workers=[first])  # committed: the restart does not send them again
    first_due = min(r["sent_at"] for r in originals if r["device_id"]) + deadline * 1000
    assert time.time() * 1000 < first_due, "too slow: a deadline came due before the kill"
    first.kill()
    second = workers(env, "second")
    sim.wait_for(lambda rs: sum(r["reason"] == "FALLBACK_ROUTE" for r in rs) >= 6,
                 timeout=deadline + 60)
    sim.wait_quiet(workers=[second])
    by_reason = Counter((r["device_id"], r["reason"]) for r in sim.records()
                        if r["reason"] != "PROBE" and r["device_id"])
    assert by_reason == {**{(f"k-d{i}", "ORIGINAL_ROUTE"): 1 for i in range(6)},
                         **{(f"k-d{i}", "FALLBACK_ROUTE"): 1 for i in range(6)}}

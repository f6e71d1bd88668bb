"""Method B end to end through the real broker: route fallback, probing, campaigns, crashes."""

from __future__ import annotations

import time
from collections import Counter, defaultdict

from connectors.producer import RecordProducer
from streams.domain.routes import DeviceRoutes, success_rate
from streams.harness import DeviceSimulator, Tap, changelog_tap, start_worker, worker_env
from tests.helpers import device, request

ROUTES = ["XIAOMI", "JPUSH", "GETUI"]  # Xiaomi devices: original XIAOMI, alternatives JPUSH, GETUI
FAST_PROBES = {"probe_count_first": 4, "probe_count_again": 2, "probe_device_per_hour": 100000,
               "probe_global_per_second": 10000, "probe_timeout": 1, "new_account_pushes": 0}


def app_only(settings, accounts_devices: dict[str, list[str]]) -> RecordProducer:
    """Register APP-only accounts (no addresses), so every push goes to their devices."""
    producer = RecordProducer(settings.connections.kafka_bootstrap_servers,
                              topic_prefix=settings.tuning.topic_prefix)
    for account, devices in accounts_devices.items():
        for d in devices:
            producer.send("device.registry", device(account, d, ROUTES))
    producer.flush()
    return producer


def wait_devices(settings, device_ids) -> None:
    """Wait until the router's devices table holds every one of these devices."""
    tap = changelog_tap(settings, "devices")
    tap.wait_for(lambda rs: {r["device_id"] for r in rs if r} >= set(device_ids), timeout=60)
    tap.close()


def device_states(tap: Tap) -> dict[str, DeviceRoutes]:
    """The latest state of each device, from the devices table changelog."""
    tap.poll(0.2)
    return {r["device_id"]: DeviceRoutes.from_dict(r) for r in tap.records if r}


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


def keep_probing(producer, account, device_id, until, timeout=40.0):
    """Re-register the device (which plans due probes) until `until()` is true."""
    end = time.monotonic() + timeout
    while not until():
        assert time.monotonic() < end, "probing did not finish"
        producer.send("device.registry", device(account, device_id, ROUTES))
        producer.flush()
        time.sleep(0.5)


def test_silent_original_route_falls_back_once_on_the_best_measured_route(settings, tmp_path):
    env = worker_env(settings, receipt_deadline=3, **FAST_PROBES)
    producer = app_only(settings, {"b-1": ["b-1-d"]})
    # JPUSH answers 2 probes of 4 (rate 0.5), GETUI 3 of 4 (0.75): GETUI must be chosen.
    sim = DeviceSimulator(settings, probe_rule({"JPUSH": [True, False],
                                                "GETUI": [True, True, True, False]}))
    worker = start_worker(env, tmp_path, loglevel="info")
    try:
        states = changelog_tap(settings, "devices")

        def measured() -> bool:
            dev = device_states(states).get("b-1-d")
            return dev is not None and all(
                success_rate(dev.stats[r], 4) is not None for r in ("JPUSH", "GETUI"))

        keep_probing(producer, "b-1", "b-1-d", measured)
        dev = device_states(states)["b-1-d"]
        assert dev.original == "XIAOMI" and dev.alternatives == ["JPUSH", "GETUI"]
        assert success_rate(dev.stats["JPUSH"], 4) == 0.5
        assert success_rate(dev.stats["GETUI"], 4) == 0.75
        producer.send("push.requests", request("b-1-m", "b-1"))
        producer.flush()
        sends = sim.wait_for(lambda rs: any(r["message_id"] == "b-1-m"
                                            and r["reason"] == "FALLBACK_ROUTE" for r in rs),
                             timeout=20)
        mine = [r for r in sends if r["message_id"] == "b-1-m" and r["device_id"]]
        assert [(r["route"], r["reason"], r["attempt"]) for r in mine] == [
            ("XIAOMI", "ORIGINAL_ROUTE", 0), ("GETUI", "FALLBACK_ROUTE", 1)]
        original, fallback = mine
        assert fallback["sent_at"] - original["sent_at"] >= 3000
        time.sleep(2)
        assert len([r for r in sim.records() if r["message_id"] == "b-1-m"
                    and r["reason"] == "FALLBACK_ROUTE"]) == 1
    finally:
        worker.stop()
        sim.stop()


def test_receipt_on_the_original_route_means_no_fallback(settings, tmp_path):
    env = worker_env(settings, receipt_deadline=2, **FAST_PROBES)
    producer = app_only(settings, {"b-2": ["b-2-d"]})
    sim = DeviceSimulator(settings, lambda s: s["reason"] == "ORIGINAL_ROUTE")
    worker = start_worker(env, tmp_path, loglevel="info")
    try:
        wait_devices(settings, ["b-2-d"])
        producer.send("push.requests", request("b-2-m", "b-2"))
        producer.flush()
        sim.wait_for(lambda rs: any(r["message_id"] == "b-2-m" for r in rs))
        time.sleep(5)
        assert [r["reason"] for r in sim.records()
                if r["message_id"] == "b-2-m" and r["device_id"]] == ["ORIGINAL_ROUTE"]
    finally:
        worker.stop()
        sim.stop()


def test_reprobe_below_threshold_replaces_the_target_route(settings, tmp_path):
    env = worker_env(settings, probe_interval=1, min_route_success=0.8, **FAST_PROBES)
    producer = app_only(settings, {"b-3": ["b-3-d"]})
    getui_ok = {"on": True}

    def rule(send) -> bool:
        if send["reason"] != "PROBE":
            return False
        return send["route"] == "JPUSH" or (send["route"] == "GETUI" and getui_ok["on"])

    sim = DeviceSimulator(settings, rule)
    worker = start_worker(env, tmp_path, loglevel="info")
    changes = Tap(settings, "device.route-changes")
    try:
        keep_probing(producer, "b-3", "b-3-d",
                     lambda: changes.poll(0.1) or bool(changes.records))
        # both routes answer everything: equal rates, JPUSH first by registration order
        assert [(c["to_route"], c["reason"]) for c in changes.records] == [("JPUSH", "INITIAL")]
        getui_ok["on"] = False  # irrelevant to JPUSH: the target re-probes stay above 0.8
        time.sleep(3)
        keep_probing(producer, "b-3", "b-3-d", lambda: changes.poll(0.1) or len(
            [r for r in sim.records() if r["reason"] == "PROBE" and r["route"] == "JPUSH"]) >= 8)
        assert len(changes.records) == 1  # re-probes passed: no change
        sim.rule = lambda send: send["reason"] == "PROBE" and send["route"] == "GETUI"
        keep_probing(producer, "b-3", "b-3-d",
                     lambda: changes.poll(0.1) or len(changes.records) >= 2)
        change = changes.records[1]
        assert (change["from_route"], change["to_route"], change["reason"]) == (
            "JPUSH", "GETUI", "REPROBE_BELOW_MIN")
    finally:
        worker.stop()
        sim.stop()
        changes.close()


def run_campaign(settings, tmp_path, campaign: str, answering: int) -> tuple[list, list]:
    """10 devices get a campaign push; `answering` of them answer on the original route."""
    env = worker_env(settings, receipt_deadline=3, campaign_fallback_ratio=0.5,
                     **FAST_PROBES)
    accounts = {f"{campaign}-a{i}": [f"{campaign}-d{i}"] for i in range(10)}
    producer = app_only(settings, accounts)
    answer = {f"{campaign}-d{i}" for i in range(answering)}
    sim = DeviceSimulator(settings, lambda s: s["reason"] == "ORIGINAL_ROUTE"
                          and s["device_id"] in answer)
    decisions = Tap(settings, "campaign.decisions")
    worker = start_worker(env, tmp_path, loglevel="info")
    try:
        wait_devices(settings, [d for ds in accounts.values() for d in ds])
        for account in accounts:
            producer.send("push.requests", dict(request(f"{account}-m", account),
                                                campaign_id=campaign))
        producer.flush()
        decisions.wait_for(lambda rs: len(rs) >= 1, timeout=40)
        time.sleep(2)
        decisions.poll(0.5)
        return decisions.records, [r for r in sim.records() if r["device_id"]]
    finally:
        worker.stop()
        sim.stop()
        decisions.close()


def test_campaign_above_the_ratio_resends_nothing(settings, tmp_path):
    decisions, sends = run_campaign(settings, tmp_path, "c8", answering=8)
    assert [(d["targeted"], d["acked"], d["ratio"], d["fallback"]) for d in decisions] == [
        (10, 8, 0.8, False)]
    assert Counter(r["reason"] for r in sends if r["reason"] != "PROBE") == {"ORIGINAL_ROUTE": 10}


def test_campaign_below_the_ratio_falls_back_for_exactly_the_silent_devices(settings, tmp_path):
    decisions, sends = run_campaign(settings, tmp_path, "c3", answering=3)
    assert [(d["targeted"], d["acked"], d["fallback"]) for d in decisions] == [(10, 3, True)]
    fallback = [r for r in sends if r["reason"] == "FALLBACK_ROUTE"]
    assert sorted(r["device_id"] for r in fallback) == [f"c3-d{i}" for i in range(3, 10)]
    assert {r["route"] for r in fallback} == {"JPUSH"}  # unmeasured: prior, registration order


def test_sigkill_with_receipt_deadlines_pending_fires_each_once(settings, tmp_path):
    env = worker_env(settings, receipt_deadline=8, **FAST_PROBES)
    accounts = {f"k-a{i}": [f"k-d{i}"] for i in range(6)}
    producer = app_only(settings, accounts)
    sim = DeviceSimulator(settings, lambda s: False)
    first = start_worker(env, tmp_path, "first", loglevel="info")
    try:
        wait_devices(settings, [d for ds in accounts.values() for d in ds])
        for account in accounts:
            producer.send("push.requests", request(f"{account}-m", account))
        producer.flush()
        sim.wait_for(lambda rs: len([r for r in rs if r["reason"] == "ORIGINAL_ROUTE"]) == 6)
        time.sleep(1.5)
        first.kill()
        second = start_worker(env, tmp_path, "second", loglevel="info")
        try:
            sim.wait_for(lambda rs: len([r for r in rs if r["reason"] == "FALLBACK_ROUTE"]) >= 6,
                         timeout=60)
            time.sleep(3)
            fallback = Counter(r["device_id"] for r in sim.records()
                               if r["reason"] == "FALLBACK_ROUTE")
            assert fallback == {f"k-d{i}": 1 for i in range(6)}
        finally:
            second.stop()
    finally:
        first.kill()
        sim.stop()

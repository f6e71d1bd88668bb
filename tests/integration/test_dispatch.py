"""The dispatcher and the ack gateway through the real broker and the provider simulator."""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import socket
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from confluent_kafka import TopicPartition

from connectors.serving import free_port
from connectors.settings import ConnectorSettings
from connectors.simulator import Simulator, SimulatorSettings, SimulatorThread
from connectors.tokens import AckToken, Signer
from schemas import Codec
from streams.harness import Process, Tap, producer_for, start_python, worker_env
from streams.kafka import consumer, producer
from streams.settings import Settings
from tests.helpers import now_ms

CODEC = Codec()
ROUTES = ("HUAWEI", "XIAOMI", "APNS", "FCM")


@pytest.fixture
def simulator() -> Iterator[SimulatorThread]:
    """The provider simulator on a free port: accepts everything, receipts and reads off."""
    sim = Simulator(SimulatorSettings(port=0, seed=3))
    sim.set_population({"receipt": {"*": 0.0}, "read": {"*": 0.0}})
    with SimulatorThread(sim) as running:
        yield running


def env_for(settings: Settings, simulator: SimulatorThread, **extra: Any) -> dict[str, str]:
    """A connector's environment: this test's broker and topics, the simulator as providers."""
    return {**worker_env(settings, **extra), "PUSHCASCADE_PROVIDER_SIMULATOR_URL": simulator.url}


def addresses(settings: Settings, accounts: list[str]) -> None:
    """A profile (SMS, WECHAT, EMAIL) and two devices with push tokens for each account."""
    with producer_for(settings) as p:
        for a in accounts:
            p.send("account.profiles", {"account_id": a, "phone": "+8613800000000",
                                        "wechat_openid": f"o-{a}", "email": f"{a}@example.com",
                                        "updated_at": now_ms()})
            for i, route in enumerate(("HUAWEI", "APNS")):
                p.send("device.registry", {
                    "device_id": f"{a}-d{i}", "account_id": a, "manufacturer": "HUAWEI",
                    "model": "P60", "routes": [route], "push_tokens": {route: f"tok-{a}-{i}"},
                    "registered_at": now_ms()})


def send(account: str, message: str, channel: str, device: str | None = None,
         route: str | None = None) -> dict[str, Any]:
    """A ChannelSend as the router writes it."""
    return {"send_id": f"{account}/{message}/{channel}/{device}", "message_id": message,
            "account_id": account, "channel": channel, "device_id": device, "route": route,
            "reason": "FANOUT", "attempt": 0, "importance": "HIGH", "title": "Gate 12",
            "body": "Boarding now", "read_action": "LINK", "link": "https://air.example/b",
            "sent_at": now_ms()}


def write_sends(settings: Settings, sends: list[dict[str, Any]], raw: list[bytes] = ()) -> None:
    """Produce ChannelSends (and raw undecodable values) to push.sends, keyed by account."""
    p = producer(settings.connections.kafka_bootstrap_servers)
    for s in sends:
        p.produce(settings.topic("push.sends"), key=s["account_id"].encode(),
                  value=CODEC.encode("ChannelSend", s))
    for value in raw:
        p.produce(settings.topic("push.sends"), key=b"broken", value=value)
    assert p.flush(30) == 0


def start_dispatcher(env: dict[str, str], workdir: Path, name: str) -> Process:
    """`pushcascade dispatch` as a child process."""
    return start_python("streams.cli", "dispatch", env=env, workdir=workdir, name=name)


#: Channels whose vendor drops a repeat of the same idempotency key (WeChat's client_msg_id):
#: an interrupted send to them is re-sent under its key instead of being given up.
KEYED_CHANNELS = {"WECHAT"}


def exactly_once(outcomes: Tap, sim: Simulator, sends: list[dict[str, Any]],
                 wanted: set[str]) -> dict[str, int]:
    """Check every wanted send has exactly one outcome and reached a provider at most once
    (for a keyed vendor: was accepted at most once); the figures of the run."""
    per_send = Counter(r["send_id"] for r in outcomes.records)
    assert set(per_send) == wanted, (wanted - set(per_send), set(per_send) - wanted)
    assert max(per_send.values()) == 1, [
        (r["send_id"], r["status"], r["error_code"], r["attempts"], r["at"])
        for r in outcomes.records if per_send[r["send_id"]] > 1][:12]
    channel = {s["send_id"]: s["channel"] for s in sends}
    keyed = {sid for sid in wanted if channel.get(sid) in KEYED_CHANNELS}
    seen, accepted_by_sim = sim.seen, sim.accepted
    assert all(seen[sid] <= 1 for sid in wanted - keyed), {
        s: n for s, n in seen.items() if n > 1 and s not in keyed}
    assert all(accepted_by_sim[sid] <= 1 for sid in keyed), {
        s: n for s, n in accepted_by_sim.items() if n > 1}
    accepted = [r for r in outcomes.records if r["status"] == "ACCEPTED"]
    assert all(accepted_by_sim[r["send_id"]] == 1 for r in accepted)
    interrupted = [r for r in outcomes.records if r["error_code"] == "interrupted"]
    # a keyed vendor's interrupted send is re-sent under its key, never left unknown
    assert not [r for r in interrupted if r["send_id"] in keyed], interrupted
    return {"sends": len(wanted), "outcomes": len(outcomes.records),
            "duplicate outcomes": sum(n - 1 for n in per_send.values()),
            "provider saw twice": sum(1 for sid in wanted - keyed if seen[sid] > 1),
            "accepted": len(accepted), "interrupted": len(interrupted),
            "interrupted that reached the provider": sum(
                1 for r in interrupted if seen[r["send_id"]] >= 1),
            "keyed re-sends (vendor dropped the repeat)": sum(
                1 for sid in keyed if seen[sid] > 1)}


def test_each_send_reaches_its_provider_at_most_once_with_one_outcome_across_sigkills(
        settings, simulator, tmp_path):
    accounts = [f"acct-{i}" for i in range(40)]
    addresses(settings, accounts)
    sends = [s for a in accounts for m in ("m1", "m2", "m3") for s in (
        send(a, m, "SMS"), send(a, m, "WECHAT"), send(a, m, "EMAIL"),
        send(a, m, "APP", f"{a}-d0", "HUAWEI"), send(a, m, "APP", f"{a}-d1", "APNS"))]
    unknown_route = [send(a, "m9", "APP", f"{a}-d0", "NOKIA") for a in accounts[:3]]
    unknown_account = [send("nobody", "m1", "SMS")]
    repeats = random.Random(5).sample(sends, 60)  # the router emitted these twice
    write_sends(settings, sends + unknown_route + unknown_account + repeats,
                raw=[b"\x00\x00\x00\x00\x06garbage"])
    for target in ("SMS", "WECHAT", "HUAWEI", "APNS"):  # keep work in flight for the kills
        simulator.sim.set_behaviour(target, {"latency_ms": 60})
    outcomes = Tap(settings, "push.outcomes")
    env = env_for(settings, simulator, dispatch_in_flight=20)
    wanted = {s["send_id"] for s in sends + unknown_route + unknown_account}
    chooser, kills = random.Random(), 0
    for round_ in range(6):
        dispatcher = start_dispatcher(env, tmp_path, f"dispatch-{round_}")
        try:
            if round_ < 5:  # kill mid-stream, at a random moment once it dispatches again
                seen = len(outcomes.records)
                outcomes.wait_for(lambda rs, n=seen: len(rs) >= n + 10, timeout=90,
                                  workers=[dispatcher])
                time.sleep(chooser.uniform(0, 0.6))
                dispatcher.kill()
                kills += 1
            else:
                outcomes.wait_for(lambda rs: {r["send_id"] for r in rs} >= wanted, timeout=120,
                                  workers=[dispatcher])
        finally:
            dispatcher.stop()
    outcomes.poll(1.0)
    figures = exactly_once(outcomes, simulator.sim, sends, wanted)
    by_id = {r["send_id"]: r for r in outcomes.records}
    assert figures["accepted"] + figures["interrupted"] == len(sends)
    assert {by_id[s["send_id"]]["error_code"] for s in unknown_route} == {"unknown_target"}
    assert by_id[unknown_account[0]["send_id"]]["error_code"] == "unknown_address"
    assert {by_id[s["send_id"]]["status"] for s in unknown_route + unknown_account} == {
        "REJECTED"}
    dlq = Tap(settings, "push.dlq")
    dlq.wait_for(lambda rs: len(rs) >= 1, timeout=30)
    assert dlq.records[0]["topic"] == settings.topic("push.sends")
    print(f"{kills} SIGKILLs: " + ", ".join(f"{k} {v}" for k, v in figures.items()))


def test_a_dispatcher_frozen_past_its_session_acts_for_nothing_its_successor_took(
        settings, simulator, tmp_path):
    accounts = [f"frz-{i}" for i in range(30)]
    addresses(settings, accounts)
    sends = [send(a, m, ch) for a in accounts for m in ("m1", "m2", "m3", "m4")
             for ch in ("SMS", "WECHAT", "EMAIL")]
    for target in ("SMS", "WECHAT", "EMAIL"):  # calls in flight when it freezes
        simulator.sim.set_behaviour(target, {"latency_ms": 400})
    env = env_for(settings, simulator, dispatch_in_flight=30)
    outcomes = Tap(settings, "push.outcomes")
    first = start_dispatcher(env, tmp_path, "dispatch-1")
    second = None
    try:
        write_sends(settings, sends)
        outcomes.wait_for(lambda rs: len(rs) >= 30, timeout=90, workers=[first])
        time.sleep(random.uniform(0, 0.4))
        os.kill(first.pid, signal.SIGSTOP)
        frozen_at = len(outcomes.records)
        second = start_dispatcher(env, tmp_path, "dispatch-2")
        wanted = {s["send_id"] for s in sends}
        outcomes.wait_for(lambda rs: {r["send_id"] for r in rs} >= wanted, timeout=120,
                          workers=[second])
        assert owned(second) == {0, 1, 2, 3}
        os.kill(first.pid, signal.SIGCONT)  # it wakes with answers to calls made long ago
        time.sleep(10)  # time to act on them, rejoin, and be given partitions again
        outcomes.poll(1.0)
        first.check()
        second.check()
    finally:
        if first.running():
            os.kill(first.pid, signal.SIGCONT)
        first.stop()
        if second is not None:
            second.stop()
    figures = exactly_once(outcomes, simulator.sim, sends, wanted)
    assert figures["interrupted"] > 0  # it did freeze with calls in flight
    print(f"frozen after {frozen_at} outcomes: " + ", ".join(
        f"{k} {v}" for k, v in figures.items()))


def test_a_send_whose_call_raises_gets_an_outcome_and_its_partition_keeps_committing(
        settings, simulator, tmp_path):
    with producer_for(settings) as p:  # a push token no URL can carry (httpx.InvalidURL)
        p.send("device.registry", {
            "device_id": "raise-bad", "account_id": "raise", "manufacturer": "APPLE",
            "model": "iPhone", "routes": ["APNS"], "push_tokens": {"APNS": "tok\x01en"},
            "registered_at": now_ms()})
    addresses(settings, ["raise"])
    bad = send("raise", "m0", "APP", "raise-bad", "APNS")
    good = [send("raise", f"m{i}", "SMS") for i in range(1, 21)]
    write_sends(settings, [bad, *good])
    dispatcher = start_dispatcher(env_for(settings, simulator), tmp_path, "dispatch")
    try:
        outcomes = Tap(settings, "push.outcomes")
        outcomes.wait_for(lambda rs: len(rs) >= 21, timeout=60, workers=[dispatcher])
        group = consumer(settings.connections.kafka_bootstrap_servers,
                         f"{settings.tuning.topic_prefix}pushcascade-dispatch")
        topic = settings.topic("push.sends")
        end = time.monotonic() + 30
        while True:  # the partition's commit passes every send, the one that raised included
            committed = group.committed([TopicPartition(topic, p) for p in range(4)],
                                        timeout=10)
            if sum(max(tp.offset, 0) for tp in committed) >= 21:
                break
            assert time.monotonic() < end, committed
            time.sleep(0.5)
        group.close()
    finally:
        dispatcher.stop()
    by_id = {r["send_id"]: r for r in outcomes.records}
    assert len(outcomes.records) == 21
    assert (by_id[bad["send_id"]]["status"], by_id[bad["send_id"]]["error_code"]) == (
        "FAILED", "error:InvalidURL")
    assert {by_id[s["send_id"]]["status"] for s in good} == {"ACCEPTED"}


def test_a_provider_down_for_30_s_holds_its_sends_and_the_others_keep_flowing(
        settings, simulator, tmp_path):
    accounts = [f"out-{i}" for i in range(20)]
    addresses(settings, accounts)
    outage_end = time.time() + 30
    simulator.sim.set_behaviour("HUAWEI", {"outage_until": outage_end, "retry_after": 1})
    dispatcher = start_dispatcher(env_for(settings, simulator, breaker_failures=5,
                                          breaker_reset=3), tmp_path, "dispatch")
    try:
        huawei = [send(a, "m1", "APP", f"{a}-d0", "HUAWEI") for a in accounts]
        sms = [send(a, "m1", "SMS") for a in accounts]
        write_sends(settings, huawei + sms)
        outcomes = Tap(settings, "push.outcomes")
        outcomes.wait_for(lambda rs: {r["send_id"] for r in rs} >= {s["send_id"] for s in sms},
                          timeout=25, workers=[dispatcher])
        assert time.time() < outage_end  # the others flowed while HUAWEI was down
        assert not [r for r in outcomes.records if r["route"] == "HUAWEI"]
        outcomes.wait_for(lambda rs: {r["send_id"] for r in rs} >= {
            s["send_id"] for s in huawei}, timeout=60, workers=[dispatcher])
    finally:
        dispatcher.stop()
    statuses = Counter((r["channel"], r["status"]) for r in outcomes.records)
    assert statuses == {("APP", "ACCEPTED"): 20, ("SMS", "ACCEPTED"): 20}
    assert min(r["at"] for r in outcomes.records if r["route"] == "HUAWEI") >= outage_end * 1000
    assert sum(simulator.sim.accepted[s["send_id"]] for s in huawei) == 20


@pytest.fixture
def gateway_urls(settings, simulator, tmp_path) -> Iterator[tuple[str, str]]:
    """`pushcascade acks-gateway` on free ports; yields its public and private base URLs."""
    port, admin = free_port(), free_port()
    proc = start_python("streams.cli", "acks-gateway",
                        env=env_for(settings, simulator, gateway_port=port,
                                    gateway_admin_port=admin, gateway_read_timeout=2),
                        workdir=tmp_path, name="gateway")
    url = f"http://127.0.0.1:{port}"
    end = time.monotonic() + 60
    while True:
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        proc.check()
        assert time.monotonic() < end, "the gateway did not become ready"
        time.sleep(0.2)
    yield url, f"http://127.0.0.1:{admin}"
    proc.stop()


@pytest.fixture
def gateway(gateway_urls) -> str:
    """The gateway's public base URL."""
    return gateway_urls[0]


def test_a_read_link_clicked_twice_is_one_read_and_forged_tokens_are_refused(settings, gateway):
    config = ConnectorSettings()
    signer = Signer(config.keys, config.signing_key_id, config.ack_token_ttl)
    the_send = send("acct-r", "m1", "APP", "acct-r-d0", "HUAWEI")
    token = signer.sign(AckToken.for_send("READ", the_send))
    for _ in range(2):
        answer = httpx.post(f"{gateway}/r/{token}", follow_redirects=False, timeout=15)
        assert answer.status_code == 303
        assert answer.headers["location"] == "https://air.example/b"
    acks = Tap(settings, "push.acks")
    acks.wait_for(lambda rs: len(rs) >= 1, timeout=30)
    acks.poll(2.0)
    assert [(a["kind"], a["send_id"], a["route"]) for a in acks.records] == [
        ("READ", the_send["send_id"], "HUAWEI")]
    forged = Signer({config.signing_key_id: "x" * 40}, config.signing_key_id, 60).sign(
        AckToken.for_send("READ", the_send))
    answer = httpx.get(f"{gateway}/r/{forged}", timeout=15)
    assert answer.status_code == 403 and answer.json()["error"] == "bad_token"
    for kid in ("dev", config.signing_key_id):  # the once built-in development key
        dev = Signer({kid: "pushcascade-development-ack-key-change-me-0001"}, kid, 60)
        answer = httpx.get(f"{gateway}/r/{dev.sign(AckToken.for_send('READ', the_send))}",
                           follow_redirects=False, timeout=15)
        assert answer.status_code == 403 and answer.json()["error"] == "bad_token"
    receipt = signer.sign(AckToken.for_send("RECEIPT", the_send))
    assert httpx.post(f"{gateway}/read/{receipt}", timeout=15).status_code == 403
    assert httpx.post(f"{gateway}/callbacks/nokia", content=b"{}", timeout=15).status_code == 404
    assert httpx.post(f"{gateway}/callbacks/huawei", content=b"not json",
                      timeout=15).status_code == 400
    assert httpx.post(f"{gateway}/callbacks/huawei", content=b"x" * 70000,
                      timeout=15).status_code == 413
    acks.poll(1.0)
    assert len(acks.records) == 1


def test_link_scanners_and_previews_record_no_read(settings, gateway):
    """HEAD and GET on a tracked link (what mail scanners and SMS previews do) record nothing;
    the page's button, a POST, records the one READ."""
    config = ConnectorSettings()
    signer = Signer(config.keys, config.signing_key_id, config.ack_token_ttl)
    the_send = send("acct-s", "m1", "EMAIL")
    token = signer.sign(AckToken.for_send("READ", the_send))
    url = f"{gateway}/r/{token}"
    for _ in range(3):
        assert httpx.head(url, timeout=15).status_code == 200
        page = httpx.get(url, follow_redirects=True, timeout=15)
        assert page.status_code == 200 and "method=post" in page.text
        assert "https://air.example/b" not in page.text  # a scanner learns no destination
        assert "default-src 'none'" in page.headers["content-security-policy"]
    acks = Tap(settings, "push.acks")
    acks.poll(3.0)
    assert acks.records == []
    assert httpx.post(url, follow_redirects=False, timeout=15).status_code == 303
    acks.wait_for(lambda rs: len(rs) >= 1, timeout=30)
    assert [(a["kind"], a["send_id"]) for a in acks.records] == [("READ", the_send["send_id"])]
    script = {**send("acct-s", "m2", "EMAIL"), "link": "javascript:alert(document.cookie)"}
    answer = httpx.post(f"{gateway}/r/{signer.sign(AckToken.for_send('READ', script))}",
                        follow_redirects=False, timeout=15)
    assert answer.status_code == 200 and "location" not in answer.headers  # no open redirect


def test_the_public_port_serves_no_metrics_openapi_or_broker_details(gateway_urls):
    public, private = gateway_urls
    for path in ("/metrics", "/openapi.json"):
        assert httpx.get(f"{public}{path}", timeout=15).status_code == 404, path
    assert httpx.get(f"{public}/readyz", timeout=15).json() == {"status": "ready"}
    assert "pushcascade_gateway_refused_total" in httpx.get(f"{private}/metrics", timeout=15).text
    paths = httpx.get(f"{private}/openapi.json", timeout=15).json()["paths"]
    assert {"/callbacks/{provider}", "/r/{token}", "/read/{token}"} <= set(paths)


def test_a_receipt_repeated_replayed_or_posted_on_another_provider_is_recorded_once(
        settings, gateway):
    config = ConnectorSettings()
    signer = Signer(config.keys, config.signing_key_id, config.ack_token_ttl)
    the_send = send("acct-p", "m1", "APP", "acct-p-d0", "HUAWEI")
    token = signer.sign(AckToken.for_send("RECEIPT", the_send))
    body = json.dumps({"statuses": [{"biTag": token, "status": 0}] * 28}).encode()
    first = httpx.post(f"{gateway}/callbacks/huawei", content=body, timeout=15)
    assert first.status_code == 200 and first.json()["recorded"] == 1
    again = httpx.post(f"{gateway}/callbacks/huawei", content=body, timeout=15)
    assert again.status_code == 200 and again.json()["recorded"] == 0
    fcm = json.dumps({"receipts": [{"receipt_token": token}]}).encode()
    elsewhere = httpx.post(f"{gateway}/callbacks/fcm", content=fcm, timeout=15)
    assert elsewhere.status_code == 403  # a HUAWEI receipt is not FCM's to report
    acks = Tap(settings, "push.acks")
    acks.wait_for(lambda rs: len(rs) >= 1, timeout=30)
    acks.poll(2.0)
    assert [(a["kind"], a["send_id"]) for a in acks.records] == [
        ("RECEIPT", the_send["send_id"])]


def test_a_slow_client_is_cut_off_and_a_token_opened_too_often_is_refused(gateway):
    """Read timeout (here 2 s): a request that never finishes does not hold its connection."""
    host, port = gateway.removeprefix("http://").split(":")
    for first in (b"GET /healthz HTTP/1.1\r\nHost: x\r\n",  # and nothing more
                  b"",  # a connection that never says anything
                  b"POST /callbacks/huawei HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{"):
        with socket.create_connection((host, int(port)), timeout=15) as slow:
            slow.sendall(first)
            started, answer = time.monotonic(), b""
            while chunk := slow.recv(4096):
                answer += chunk
            assert time.monotonic() - started < 10, first
            assert answer.startswith(b"HTTP/1.1 408") if b"POST" in first else not answer
    config = ConnectorSettings()
    signer = Signer(config.keys, config.signing_key_id, config.ack_token_ttl)
    url = f"{gateway}/r/{signer.sign(AckToken.for_send('READ', send('acct-t', 'm1', 'SMS')))}"
    codes = [httpx.get(url, timeout=15).status_code for _ in range(12)]
    assert codes[:10] == [200] * 10 and codes[10:] == [429, 429]


def test_the_closed_loop_through_http_learns_the_read_channel_and_escalates(
        settings, workers, tmp_path):
    port = free_port()
    gateway_url = f"http://127.0.0.1:{port}"
    sim = Simulator(SimulatorSettings(port=0, seed=11, gateway_url=gateway_url))
    sim.set_population({"receipt": {"*": 1.0}, "read": {"WECHAT": 1.0, "*": 0.0},
                        "receipt_delay_ms": [5, 50], "read_delay_ms": [50, 200]})
    with SimulatorThread(sim) as simulator:
        env = {**env_for(settings, simulator, new_account_pushes=1, read_deadline_high=4,
                         gateway_port=port), "PUSHCASCADE_GATEWAY_URL": gateway_url}
        gateway = start_python("streams.cli", "acks-gateway", env=env, workdir=tmp_path,
                               name="gateway")
        dispatcher = start_dispatcher(env, tmp_path, "dispatch")
        router = workers(env)
        procs = [gateway, dispatcher, router]
        try:
            with producer_for(settings) as p:
                p.send("account.profiles", {"account_id": "loop", "phone": "+8613800000001",
                                            "wechat_openid": "o-loop", "email": None,
                                            "updated_at": now_ms()})
                p.send("device.registry", {"device_id": "loop-d", "account_id": "loop",
                                           "manufacturer": "HUAWEI", "model": "P60",
                                           "routes": ["HUAWEI"],
                                           "push_tokens": {"HUAWEI": "tok-loop"},
                                           "registered_at": now_ms()})
            sends, acks = Tap(settings, "push.sends"), Tap(settings, "push.acks")
            outcomes = Tap(settings, "push.outcomes")

            def push(message_id: str) -> None:
                with producer_for(settings) as p:
                    p.send("push.requests", {
                        "message_id": message_id, "account_id": "loop", "importance": "HIGH",
                        "title": "Gate", "body": "Boarding", "read_action": "LINK",
                        "link": "https://air.example/b", "created_at": now_ms()})

            push("m1")  # a new account: fan-out; the person reads WECHAT, the phone receipts
            acks.wait_for(lambda rs: {(a["message_id"], a["kind"], a["channel"]) for a in rs}
                          >= {("m1", "READ", "WECHAT"), ("m1", "RECEIPT", "APP")},
                          timeout=90, workers=procs)
            push("m2")  # learned: the primary is the channel that was read
            sends.wait_for(lambda rs: any(s["message_id"] == "m2" for s in rs), timeout=60,
                           workers=procs)
            assert [(s["channel"], s["reason"]) for s in sends.records
                    if s["message_id"] == "m2" and s["device_id"] is None] == [
                ("WECHAT", "PRIMARY")]
            sim.set_population({"receipt": {"*": 1.0}, "read": {"*": 0.0}})
            push("m3")  # nobody reads it: escalated after the read deadline
            sends.wait_for(lambda rs: any(s["message_id"] == "m3" and s["reason"] == "ESCALATION"
                                          for s in rs), timeout=60, workers=procs)
            sends.poll(1.0)
            # what a provider carries of the escalation: the channel's send, or for APP the
            # sends to each device beside the message-level record
            carried = {s["send_id"] for s in sends.records if s["message_id"] == "m3"
                       and s["reason"] != "PRIMARY" and (s["device_id"] or s["channel"] != "APP")}
            assert carried
            outcomes.wait_for(lambda rs: {o["send_id"] for o in rs} >= carried, timeout=60,
                              workers=procs)
            assert {o["status"] for o in outcomes.records if o["send_id"] in carried} == {
                "ACCEPTED"}
            assert all(simulator.sim.accepted[sid] == 1 for sid in carried)
        finally:
            dispatcher.stop()
            gateway.stop()


def test_permanent_errors_are_rejected_at_once_and_a_slow_provider_is_not_called_twice(
        settings, simulator, tmp_path):
    addresses(settings, ["bad-1", "bad-2", "bad-3"])
    simulator.sim.set_behaviour("SMS", {"accept": 0.0, "error": "isv.MOBILE_NUMBER_ILLEGAL"})
    simulator.sim.set_behaviour("WECHAT", {"latency_ms": 3000})
    simulator.sim.set_behaviour("EMAIL", {"latency_ms": 3000})
    env = {**env_for(settings, simulator, dispatch_hold=2),
           "PUSHCASCADE_PROVIDER_TIMEOUT": "0.5"}
    dispatcher = start_dispatcher(env, tmp_path, "dispatch")
    try:
        sms, wechat = send("bad-1", "m1", "SMS"), send("bad-2", "m1", "WECHAT")
        email = send("bad-3", "m1", "EMAIL")
        write_sends(settings, [sms, wechat, email])
        outcomes = Tap(settings, "push.outcomes")
        outcomes.wait_for(lambda rs: len(rs) >= 3, timeout=60, workers=[dispatcher])
    finally:
        dispatcher.stop()
    by_id = {r["send_id"]: r for r in outcomes.records}
    assert (by_id[sms["send_id"]]["status"], by_id[sms["send_id"]]["error_code"],
            by_id[sms["send_id"]]["attempts"]) == ("REJECTED", "isv.MOBILE_NUMBER_ILLEGAL", 1)
    # a timed-out call may have reached the provider: its outcome is unknown (`interrupted`,
    # a RECEIPT makes it delivered); e-mail (no idempotency key) is never called again,
    # WeChat (it drops a repeat of client_msg_id) is, until the hold
    unknown = by_id[email["send_id"]]
    assert (unknown["status"], unknown["error_code"], unknown["attempts"]) == (
        "FAILED", "interrupted", 1), unknown
    assert simulator.sim.seen[email["send_id"]] == 1
    keyed = by_id[wechat["send_id"]]
    assert (keyed["status"], keyed["error_code"]) == ("FAILED", "interrupted"), keyed
    assert keyed["attempts"] >= 2 and simulator.sim.seen[wechat["send_id"]] >= 2, keyed


def test_a_slow_providers_calls_that_open_its_circuit_are_not_made_again(
        settings, simulator, tmp_path):
    # the breaker raises its own error *from* the timeout that trips it (and from a half-open
    # trial's): such a call may have reached the provider and must not be repeated
    accounts = [f"trip-{i}" for i in range(8)]
    addresses(settings, accounts)
    simulator.sim.set_behaviour("EMAIL", {"latency_ms": 3000})
    env = {**env_for(settings, simulator, dispatch_hold=5, breaker_failures=2,
                     breaker_reset=1),
           "PUSHCASCADE_PROVIDER_TIMEOUT": "0.5"}
    dispatcher = start_dispatcher(env, tmp_path, "dispatch")
    try:
        sends = [send(a, "m1", "EMAIL") for a in accounts]
        write_sends(settings, sends)
        outcomes = Tap(settings, "push.outcomes")
        outcomes.wait_for(lambda rs: len(rs) >= len(sends), timeout=60, workers=[dispatcher])
    finally:
        dispatcher.stop()
    by_id = {r["send_id"]: r for r in outcomes.records}
    seen = {s["send_id"]: simulator.sim.seen[s["send_id"]] for s in sends}
    assert max(seen.values()) == 1, seen  # no send's provider called twice
    made = [by_id[sid] for sid, calls in seen.items() if calls]
    assert len(made) >= 3  # the two that opened the circuit and at least one half-open trial
    for outcome in made:  # every call made timed out: the provider may have the send
        assert (outcome["status"], outcome["error_code"]) == ("FAILED", "interrupted"), outcome
    for sid, calls in seen.items():  # the rest were refused by the open circuit, never made
        if not calls:
            assert by_id[sid]["error_code"] == "circuit_open", by_id[sid]


def test_the_gateway_answers_503_while_the_broker_is_unreachable(settings, simulator, tmp_path):
    port = free_port()
    env = {**env_for(settings, simulator, gateway_port=port),
           "KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}"}  # nothing listens there
    proc = start_python("streams.cli", "acks-gateway", env=env, workdir=tmp_path,
                        name="gateway")
    url = f"http://127.0.0.1:{port}"
    try:
        end = time.monotonic() + 60
        while True:
            try:
                ready = httpx.get(f"{url}/readyz", timeout=10)
                break
            except httpx.HTTPError:
                proc.check()
                assert time.monotonic() < end
                time.sleep(0.2)
        assert ready.status_code == 503 and ready.json() == {"status": "not ready"}
        config = ConnectorSettings()
        token = Signer(config.keys, config.signing_key_id, 60).sign(
            AckToken.for_send("READ", send("acct-x", "m1", "SMS")))
        answer = httpx.post(f"{url}/read/{token}", timeout=30)
        assert answer.status_code == 503 and answer.json()["error"] == "broker_unavailable"
    finally:
        proc.stop()


def test_two_dispatchers_in_one_group_share_the_sends_each_once(settings, simulator, tmp_path):
    accounts = [f"pair-{i}" for i in range(40)]
    addresses(settings, accounts)
    sends = [send(a, m, ch) for a in accounts for m in ("m1", "m2") for ch in ("SMS", "WECHAT")]
    simulator.sim.set_behaviour("SMS", {"latency_ms": 20})
    env = env_for(settings, simulator, dispatch_in_flight=10)
    first = start_dispatcher(env, tmp_path, "dispatch-1")
    second = start_dispatcher(env, tmp_path, "dispatch-2")
    try:
        end = time.monotonic() + 90
        while (shares := [owned(p) for p in (first, second)]) and not (
                all(shares) and shares[0] | shares[1] == {0, 1, 2, 3}
                and not shares[0] & shares[1]):
            first.check()
            second.check()
            assert time.monotonic() < end, f"the partitions were not shared: {shares}"
            time.sleep(0.3)
        write_sends(settings, sends)
        outcomes = Tap(settings, "push.outcomes")
        outcomes.wait_for(lambda rs: {r["send_id"] for r in rs} >= {s["send_id"] for s in sends},
                          timeout=120, workers=[first, second])
    finally:
        first.stop()
        second.stop()
    outcomes.poll(1.0)
    assert Counter(r["send_id"] for r in outcomes.records) == dict.fromkeys(
        (s["send_id"] for s in sends), 1)
    assert all(simulator.sim.seen[s["send_id"]] == 1 for s in sends)


def owned(dispatcher: Process) -> set[int]:
    """The partitions of push.sends a dispatcher was last assigned (from its log)."""
    lines = [ln for ln in dispatcher.logs().splitlines() if "sends done" in ln]
    if not lines:
        return set()
    listed = lines[-1].split("partitions [", 1)[1].split("]", 1)[0]
    return {int(p) for p in listed.split(",") if p.strip()}


def test_the_gateway_records_a_send_at_every_cap_and_refuses_oversized_input_with_4xx(
        settings, gateway):
    from connectors.tokens import MAX_LENGTH
    from schemas import validation as v

    config = ConnectorSettings()
    signer = Signer(config.keys, config.signing_key_id, config.ack_token_ttl)
    emoji = "😀"
    at_caps = {**send(emoji * (v.ID_BYTES // 4), emoji * (v.ID_BYTES // 4), "APP",
                      emoji * (v.ID_BYTES // 4), "HUAWEI"),
               "send_id": emoji * (v.ID_BYTES // 4),
               "link": "https://air.example/" + "l" * (v.LINK_BYTES - 20)}
    assert len(at_caps["link"]) == v.LINK_BYTES
    token = signer.sign(AckToken.for_send("READ", at_caps))
    answer = httpx.post(f"{gateway}/r/{token}", follow_redirects=False, timeout=15)
    assert answer.status_code == 303 and answer.headers["location"] == at_caps["link"]
    over = send("acct-o", "m" * (v.ID_BYTES + 1), "APP", "acct-o-d0", "HUAWEI")
    answer = httpx.post(f"{gateway}/read/{signer.sign(AckToken.for_send('READ', over))}",
                        timeout=15)
    assert answer.status_code == 422 and answer.json()["error"] == "over_cap"
    assert answer.json()["message"] == (
        f"Ack.message_id: {v.ID_BYTES + 1} bytes (UTF-8), over the cap of {v.ID_BYTES} bytes")
    answer = httpx.get(f"{gateway}/r/{'a' * (MAX_LENGTH + 1)}", timeout=15)
    assert answer.status_code == 414 and answer.json()["error"] == "too_large"
    assert f"over {MAX_LENGTH} characters" in answer.json()["message"]
    acks = Tap(settings, "push.acks")
    acks.wait_for(lambda rs: len(rs) >= 1, timeout=30)
    acks.poll(2.0)
    assert [a["message_id"] for a in acks.records] == [at_caps["message_id"]]


def test_a_fenced_producer_is_replaced_and_its_unwritten_outcome_written_by_the_new_one(
        settings):
    # a freeze past the producer's message timeout once left the dispatcher with a producer
    # the broker fenced (PRODUCER_FENCED on every record): it retried each outcome at once,
    # forever, and committed nothing. The producer is replaced, its records written again.
    from confluent_kafka import KafkaError

    from connectors.adapters.config import ProviderConfig
    from connectors.adapters.registry import Registry
    from connectors.dispatcher import Dispatcher, outcome

    dispatcher = Dispatcher(settings, ConnectorSettings(), Registry(ProviderConfig()))
    dispatcher.owns = lambda *_, **__: True  # type: ignore[method-assign]  (no group here)
    the_send = send("acct-f", "m-f", "SMS")
    outcomes = Tap(settings, "push.outcomes")

    async def main() -> None:
        dispatcher.loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        poller = asyncio.create_task(dispatcher._poll_producer(stop))
        fenced = dispatcher.producer
        dispatcher._record(outcome(the_send, "sms", "ACCEPTED", 1, 0.1), 0, 0)  # queued...
        dispatcher._renew(fenced, KafkaError(KafkaError.PRODUCER_FENCED))  # ...and purged
        dispatcher._renew(fenced, KafkaError(KafkaError.PRODUCER_FENCED))  # once only
        assert dispatcher.producer is not fenced and dispatcher.retired == [fenced]
        end = time.monotonic() + 30
        while the_send["send_id"] not in dispatcher.done or dispatcher.retired:
            assert time.monotonic() < end, "the outcome was not written by the new producer"
            await asyncio.sleep(0.05)
        poller.cancel()

    asyncio.run(main())
    records = outcomes.wait_for(lambda rs: rs, timeout=30)
    assert [r["send_id"] for r in records] == [the_send["send_id"]]
    dispatcher.producer.flush(5)


def test_the_gateway_replaces_a_fenced_producer_and_writes_the_next_ack(settings):
    from confluent_kafka import KafkaError

    from connectors.gateway import AckWriter

    writer = AckWriter(settings, Codec())
    ack = AckToken.for_send("READ", send("acct-g", "m-g", "SMS")).ack(time.time())

    async def main() -> None:
        await writer.start()
        fenced = writer.producer
        writer._renew(fenced, KafkaError(KafkaError.PRODUCER_FENCED))
        assert writer.producer is not fenced
        await writer.write([ack])  # through the new producer, acknowledged by the broker
        await writer.stop()

    asyncio.run(main())
    acks = Tap(settings, "push.acks").wait_for(lambda rs: rs, timeout=30)
    assert [a["send_id"] for a in acks] == [ack["send_id"]]

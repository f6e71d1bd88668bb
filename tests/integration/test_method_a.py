"""Method A end to end through the real broker: fan-out, learning, deadlines, override."""

from __future__ import annotations

import pytest

from connectors.producer import RecordProducer
from streams.harness import Tap, changelog_tap, free_port, start_worker, worker_env
from tests.helpers import now_ms, read_ack, register, request

N = 2           # PUSHCASCADE_NEW_ACCOUNT_PUSHES for this module
DEADLINE = 3.0  # PUSHCASCADE_READ_DEADLINE_HIGH for this module
GRACE = 2.0     # PUSHCASCADE_REACH_GRACE: how long a request waits for a channel


@pytest.fixture(scope="module")
def pipeline(broker, tmp_path_factory):
    """One router worker shared by this module's tests (each test uses its own accounts)."""
    import uuid

    from streams.settings import Settings
    from streams.topics import create_topics

    settings = Settings(kafka_bootstrap_servers=broker.bootstrap,
                        topic_prefix=f"a{uuid.uuid4().hex[:8]}.", new_account_pushes=N,
                        read_deadline_high=DEADLINE)
    create_topics(settings, broker.bootstrap)
    port = free_port()
    env = worker_env(settings, new_account_pushes=N, read_deadline_high=DEADLINE,
                     read_deadline_low=3600, metrics_port=port, reach_grace=GRACE)
    worker = start_worker(env, tmp_path_factory.mktemp("method-a"), loglevel="info")
    worker.metrics_port = port
    producer = RecordProducer(broker.bootstrap, topic_prefix=settings.tuning.topic_prefix)
    taps = {name: Tap(settings, name) for name in
            ("push.sends", "push.escalations", "push.results", "account.lifecycle", "push.dlq")}
    yield settings, producer, taps, worker
    worker.stop()
    for tap in taps.values():
        tap.close()
    print(worker.logs()[-3000:])


def ready(settings, producer, account: str, **channels) -> None:
    """Register an account and wait until the router's state shows its devices and addresses."""
    register(producer, account, **channels)
    state = changelog_tap(settings, "accounts")
    state.wait_for(lambda rs: any(r and r["account_id"] == account and r["devices"]
                                  and r["addresses"] for r in rs))
    state.close()


def wait_sent(taps, message_id):
    """Wait for the account-level send of a message; returns every send seen so far."""
    return taps["push.sends"].wait_for(lambda rs: any(
        r["message_id"] == message_id and r["device_id"] is None for r in rs))


def sends_of(taps, message_id):
    """The account-level sends of a message (Method A's decisions; device sends carry a device)."""
    return taps["push.sends"].where(message_id=message_id, device_id=None)


def test_new_account_gets_every_channel_for_n_pushes_then_one(pipeline):
    settings, producer, taps, _ = pipeline
    ready(settings, producer, "new-1")
    for i in range(N + 2):
        producer.send("push.requests", request(f"new-1-m{i}", "new-1"))
    producer.flush()
    sends = taps["push.sends"]
    sends.wait_for(lambda rs: len([r for r in rs if r["account_id"] == "new-1"
                                   and r["device_id"] is None]) >= 3 * N + 2)
    sends.poll(1.0)
    for i in range(N):
        got = sends_of(taps, f"new-1-m{i}")
        assert sorted(r["channel"] for r in got) == ["APP", "SMS", "WECHAT"]
        assert {r["reason"] for r in got} == {"FANOUT"}
    for i in range(N, N + 2):
        got = sends_of(taps, f"new-1-m{i}")
        assert [(r["channel"], r["reason"]) for r in got] == [("APP", "PRIMARY")]
    lifecycle = taps["account.lifecycle"].wait_for(
        lambda rs: any(r["account_id"] == "new-1" for r in rs))
    assert [(r["lifecycle"], r["pushes"]) for r in lifecycle if r["account_id"] == "new-1"] == [
        ("ESTABLISHED", N)]


def test_account_that_reads_on_wechat_gets_wechat_then_escalates_once(pipeline):
    settings, producer, taps, _ = pipeline
    ready(settings, producer, "wx-1")
    for i in range(N):  # the fan-out pushes: the user reads each first on WECHAT, later on APP
        producer.send("push.requests", request(f"wx-1-f{i}", "wx-1"))
    producer.flush()
    taps["push.sends"].wait_for(
        lambda rs: len([r for r in rs if r["account_id"] == "wx-1" and r["device_id"] is None])
        >= 3 * N)
    for i in range(N):
        producer.send("push.acks", read_ack(f"wx-1-f{i}", "wx-1", "WECHAT"))
        producer.send("push.acks", read_ack(f"wx-1-f{i}", "wx-1", "WECHAT"))  # duplicate
    producer.send("push.acks", read_ack("wx-1-f0", "wx-1", "APP"))
    producer.flush()
    taps["push.results"].wait_for(lambda rs: len(
        [r for r in rs if r["account_id"] == "wx-1" and r["status"] == "READ"]) == N)
    # WECHAT: feedback 2, first 2 -> 2 + 2*2 = 6; APP: feedback 1 -> 1. Primary WECHAT, then APP.
    producer.send("push.requests", request("wx-1-m", "wx-1"))
    producer.flush()
    sent = wait_sent(taps, "wx-1-m")
    assert [(r["channel"], r["reason"]) for r in sent
            if r["message_id"] == "wx-1-m" and r["device_id"] is None] == [("WECHAT", "PRIMARY")]
    escalations = taps["push.escalations"].wait_for(
        lambda rs: any(r["message_id"] == "wx-1-m" for r in rs), timeout=DEADLINE + 10)
    esc = [r for r in escalations if r["message_id"] == "wx-1-m"]
    assert [(e["from_channel"], e["to_channel"]) for e in esc] == [("WECHAT", "APP")]
    seen_at = taps["push.escalations"].seen_at[escalations.index(esc[0])]
    assert 0 <= esc[0]["fired_at"] - esc[0]["deadline_at"] < 1000
    assert seen_at * 1000 - esc[0]["deadline_at"] < 1000
    taps["push.sends"].wait_for(
        lambda rs: any(r["message_id"] == "wx-1-m" and r["reason"] == "ESCALATION" for r in rs))
    taps["push.escalations"].poll(DEADLINE)
    assert len(taps["push.escalations"].where(message_id="wx-1-m")) == 1
    esc_sends = [r for r in sends_of(taps, "wx-1-m") if r["reason"] == "ESCALATION"]
    assert [(r["channel"], r["attempt"]) for r in esc_sends] == [("APP", 1)]


def test_read_in_time_cancels_the_escalation(pipeline):
    settings, producer, taps, _ = pipeline
    ready(settings, producer, "rd-1")
    for i in range(N):
        producer.send("push.requests", request(f"rd-1-f{i}", "rd-1"))
    producer.send("push.requests", request("rd-1-m", "rd-1"))
    producer.flush()
    wait_sent(taps, "rd-1-m")
    producer.send("push.acks", read_ack("rd-1-m", "rd-1", "APP"))
    producer.flush()
    taps["push.escalations"].poll(DEADLINE + 2)
    assert taps["push.escalations"].where(message_id="rd-1-m") == []
    assert len(sends_of(taps, "rd-1-m")) == 1


def test_override_wins_and_clearing_restores_learned_channels(pipeline):
    settings, producer, taps, _ = pipeline
    ready(settings, producer, "ov-1")
    for i in range(N):
        producer.send("push.requests", request(f"ov-1-f{i}", "ov-1"))
    producer.send("account.settings", {"account_id": "ov-1", "primary": "SMS",
                                       "secondary": "WECHAT", "updated_at": now_ms()})
    producer.flush()
    state = changelog_tap(settings, "accounts")
    state.wait_for(lambda rs: any(r and r["account_id"] == "ov-1" and r["primary"] == "SMS"
                                  for r in rs))
    producer.send("push.requests", request("ov-1-m1", "ov-1"))
    producer.flush()
    wait_sent(taps, "ov-1-m1")
    assert [r["channel"] for r in sends_of(taps, "ov-1-m1")] == ["SMS"]
    esc = taps["push.escalations"].wait_for(
        lambda rs: any(r["message_id"] == "ov-1-m1" for r in rs), timeout=DEADLINE + 10)
    assert [(e["from_channel"], e["to_channel"]) for e in esc
            if e["message_id"] == "ov-1-m1"] == [("SMS", "WECHAT")]
    producer.send("account.settings", {"account_id": "ov-1", "primary": None, "secondary": None,
                                       "updated_at": now_ms()})
    producer.flush()
    state.wait_for(lambda rs: [r["primary"] for r in rs if r and r["account_id"] == "ov-1"][-1]
                   is None)
    state.close()
    producer.send("push.requests", request("ov-1-m2", "ov-1"))
    producer.flush()
    wait_sent(taps, "ov-1-m2")
    assert [r["channel"] for r in sends_of(taps, "ov-1-m2")] == ["APP"]


def test_unreachable_account_gets_a_clear_outcome(pipeline):
    settings, producer, taps, _ = pipeline
    producer.send("push.requests", request("nobody-m", "nobody"))
    producer.flush()
    results = taps["push.results"].wait_for(
        lambda rs: any(r["message_id"] == "nobody-m" for r in rs), timeout=GRACE + 30)
    assert [r["status"] for r in results if r["message_id"] == "nobody-m"] == ["UNREACHABLE"]
    assert sends_of(taps, "nobody-m") == []


def test_bad_input_goes_to_the_dlq_and_the_agent_keeps_going(pipeline):
    settings, producer, taps, worker = pipeline
    from streams.kafka import producer as raw_producer

    raw = raw_producer(settings.connections.kafka_bootstrap_servers)
    raw.produce(settings.topic("push.requests"), key=b"bad-1", value=b"\x00\x00\x00\x00\x63xx")
    raw.produce(settings.topic("push.requests"), key=b"bad-1", value=b"not avro at all")
    from schemas import Codec

    wrong = Codec().encode("AccountSettings", {"account_id": "bad-1", "primary": None,
                                               "secondary": None, "updated_at": 1})
    raw.produce(settings.topic("push.requests"), key=b"bad-1", value=wrong)
    raw.flush()
    producer.send("push.acks", read_ack("ghost-m", "ghost-account", "APP"))
    producer.flush()
    dlq = taps["push.dlq"].wait_for(lambda rs: len(rs) >= 4)
    errors = " | ".join(r["error"] for r in dlq)
    assert "unknown schema id 99" in errors
    assert "magic" in errors
    assert "AccountSettings" in errors and "PushRequest" in errors  # wrong record type
    assert "unknown account 'ghost-account'" in errors
    assert {r["topic"] for r in dlq} == {settings.topic("push.requests"),
                                         settings.topic("push.acks")}
    assert any(r["value"] == b"not avro at all" for r in dlq)
    ready(settings, producer, "after-bad")
    producer.send("push.requests", request("after-bad-m", "after-bad"))
    producer.flush()
    wait_sent(taps, "after-bad-m")
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{worker.metrics_port}/metrics") as page:
        metrics = page.read().decode()
    line = next(x for x in metrics.splitlines()
                if x.startswith("pushcascade_events_total") and 'event="dead_letter"' in x)
    assert float(line.split()[-1]) >= 3

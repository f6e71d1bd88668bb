"""Method A end to end through the real broker: fan-out, learning, deadlines, override."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import pytest

from connectors.producer import RecordProducer
from streams.harness import (
    Process,
    Tap,
    drain,
    free_port,
    start_worker,
    table_state,
    wait_accounts,
    wait_idle,
    worker_env,
    worker_events,
)
from streams.settings import Settings
from streams.topics import create_topics
from tests.helpers import now_ms, read_ack, register, request

N = 2            # PUSHCASCADE_NEW_ACCOUNT_PUSHES for this module
DEADLINE = 3.0   # read deadline of HIGH pushes: the escalations these tests wait for
AMPLE = 15.0     # read deadline of URGENT pushes: time enough to read before it, however slow
GRACE = 2.0      # PUSHCASCADE_REACH_GRACE: how long a request waits for a channel
OUTPUTS = ("push.sends", "push.escalations", "push.results", "account.lifecycle", "push.dlq")


@dataclass
class Pipeline:
    """One router worker, a producer and taps on its outputs."""

    settings: Settings
    producer: RecordProducer
    taps: dict[str, Tap]
    worker: Process
    metrics_port: int

    def settle(self) -> None:
        """Wait until the worker has processed and committed every input; read every output."""
        wait_idle(self.settings, workers=[self.worker])
        drain(list(self.taps.values()))


@pytest.fixture(scope="module")
def pipeline(broker, tmp_path_factory):
    """One router worker shared by this module's tests (each test uses its own accounts)."""
    settings = Settings(kafka_bootstrap_servers=broker.bootstrap,
                        topic_prefix=f"a{uuid.uuid4().hex[:8]}.")
    create_topics(settings, broker.bootstrap)
    port = free_port()
    env = worker_env(settings, new_account_pushes=N, read_deadline_high=DEADLINE,
                     read_deadline_urgent=AMPLE, read_deadline_low=3600, metrics_port=port,
                     reach_grace=GRACE)
    worker = start_worker(env, tmp_path_factory.mktemp("method-a"), loglevel="info")
    producer = RecordProducer(broker.bootstrap, topic_prefix=settings.tuning.topic_prefix)
    taps = {name: Tap(settings, name) for name in OUTPUTS}
    yield Pipeline(settings, producer, taps, worker, port)
    worker.stop()
    for tap in taps.values():
        tap.close()
    print(worker.tail(60))


def ready(p: Pipeline, account: str, **channels) -> None:
    """Register an account and wait until the router's state shows its devices and addresses."""
    register(p.producer, account, **channels)
    wait_accounts(p.settings, [account], workers=[p.worker])


def push(p: Pipeline, *requests: dict) -> None:
    """Produce push requests."""
    for req in requests:
        p.producer.send("push.requests", req)
    p.producer.flush()


def wait_sent(p: Pipeline, message_id: str) -> list[dict]:
    """Wait for the account-level send of a message; returns every send seen so far."""
    return p.taps["push.sends"].wait_for(lambda rs: any(
        r["message_id"] == message_id and r["device_id"] is None for r in rs),
        workers=[p.worker])


def sends_of(p: Pipeline, message_id: str) -> list[dict]:
    """The account-level sends of a message (Method A's decisions; device sends carry a device)."""
    return p.taps["push.sends"].where(message_id=message_id, device_id=None)


def escalations_of(p: Pipeline, message_id: str) -> list[tuple[str, str]]:
    """(from, to) of each escalation of a message."""
    return [(e["from_channel"], e["to_channel"])
            for e in p.taps["push.escalations"].where(message_id=message_id)]


def test_new_account_gets_every_channel_for_n_pushes_then_one(pipeline):
    p = pipeline
    ready(p, "new-1")
    push(p, *(request(f"new-1-m{i}", "new-1") for i in range(N + 2)))
    p.settle()
    for i in range(N):
        got = sends_of(p, f"new-1-m{i}")
        assert sorted(r["channel"] for r in got) == ["APP", "SMS", "WECHAT"]
        assert {r["reason"] for r in got} == {"FANOUT"}
    for i in range(N, N + 2):
        assert [(r["channel"], r["reason"]) for r in sends_of(p, f"new-1-m{i}")] == [
            ("APP", "PRIMARY")]
    assert [(r["lifecycle"], r["pushes"])
            for r in p.taps["account.lifecycle"].where(account_id="new-1")] == [
        ("ESTABLISHED", N)]


def test_account_that_reads_on_wechat_gets_wechat_then_escalates_once(pipeline):
    p = pipeline
    ready(p, "wx-1")
    push(p, *(request(f"wx-1-f{i}", "wx-1") for i in range(N)))
    p.settle()  # the fan-out messages exist before their acks come (acks are another topic)
    for i in range(N):  # the user reads each fan-out push first on WECHAT, one later on APP
        p.producer.send("push.acks", read_ack(f"wx-1-f{i}", "wx-1", "WECHAT"))
        p.producer.send("push.acks", read_ack(f"wx-1-f{i}", "wx-1", "WECHAT"))  # duplicate
    p.producer.send("push.acks", read_ack("wx-1-f0", "wx-1", "APP"))
    p.producer.flush()
    p.settle()
    assert sorted((r["message_id"], r["channel"])
                  for r in p.taps["push.results"].where(account_id="wx-1", status="READ")) == [
        (f"wx-1-f{i}", "WECHAT") for i in range(N)]
    # WECHAT: feedback 2, first 2 -> 2 + 2*2 = 6; APP: feedback 1 -> 1. Primary WECHAT, then APP.
    push(p, request("wx-1-m", "wx-1"))
    wait_sent(p, "wx-1-m")
    assert [(r["channel"], r["reason"]) for r in sends_of(p, "wx-1-m")] == [
        ("WECHAT", "PRIMARY")]
    p.taps["push.escalations"].wait_for(lambda rs: any(r["message_id"] == "wx-1-m" for r in rs),
                                        timeout=DEADLINE + 60, workers=[p.worker])
    p.taps["push.sends"].wait_for(lambda rs: any(
        r["message_id"] == "wx-1-m" and r["reason"] == "ESCALATION" for r in rs))
    p.settle()
    assert escalations_of(p, "wx-1-m") == [("WECHAT", "APP")]
    (escalation,) = p.taps["push.escalations"].where(message_id="wx-1-m")
    assert escalation["fired_at"] >= escalation["deadline_at"]
    assert [(r["channel"], r["reason"], r["attempt"]) for r in sends_of(p, "wx-1-m")] == [
        ("WECHAT", "PRIMARY", 0), ("APP", "ESCALATION", 1)]


def test_read_in_time_cancels_the_escalation(pipeline):
    p = pipeline
    ready(p, "rd-1")
    push(p, *(request(f"rd-1-f{i}", "rd-1") for i in range(N)))
    # rd-1-m is read in time; rd-1-c, sent after it, is not: once rd-1-c has escalated,
    # rd-1-m's deadline has passed too, and its deadline events came first on the partition
    push(p, request("rd-1-m", "rd-1", "URGENT"), request("rd-1-c", "rd-1", "URGENT"))
    wait_sent(p, "rd-1-c")
    p.producer.send("push.acks", read_ack("rd-1-m", "rd-1", "APP"))
    p.producer.flush()
    p.taps["push.results"].wait_for(lambda rs: any(r["message_id"] == "rd-1-m" for r in rs),
                                    workers=[p.worker])
    (read,) = p.taps["push.results"].where(message_id="rd-1-m")
    (sent,) = sends_of(p, "rd-1-m")
    assert read["status"] == "READ" and read["at"] < sent["sent_at"] + AMPLE * 1000
    p.taps["push.escalations"].wait_for(lambda rs: any(r["message_id"] == "rd-1-c" for r in rs),
                                        timeout=AMPLE + 60, workers=[p.worker])
    p.settle()
    assert escalations_of(p, "rd-1-m") == []
    assert [(r["channel"], r["reason"]) for r in sends_of(p, "rd-1-m")] == [("APP", "PRIMARY")]
    assert escalations_of(p, "rd-1-c") == [("APP", "WECHAT")]


def test_override_wins_and_clearing_restores_learned_channels(pipeline):
    p = pipeline
    ready(p, "ov-1")
    push(p, *(request(f"ov-1-f{i}", "ov-1") for i in range(N)))
    p.producer.send("account.settings", {"account_id": "ov-1", "primary": "SMS",
                                         "secondary": "WECHAT", "updated_at": now_ms()})
    p.producer.flush()
    p.settle()
    state = table_state(p.settings, "accounts", "account_id")["ov-1"]
    assert (state["primary"], state["secondary"]) == ("SMS", "WECHAT")
    push(p, request("ov-1-m1", "ov-1"))
    wait_sent(p, "ov-1-m1")
    assert [r["channel"] for r in sends_of(p, "ov-1-m1")] == ["SMS"]
    p.taps["push.escalations"].wait_for(lambda rs: any(r["message_id"] == "ov-1-m1" for r in rs),
                                        timeout=DEADLINE + 60, workers=[p.worker])
    assert escalations_of(p, "ov-1-m1") == [("SMS", "WECHAT")]
    p.producer.send("account.settings", {"account_id": "ov-1", "primary": None,
                                         "secondary": None, "updated_at": now_ms()})
    p.producer.flush()
    p.settle()
    state = table_state(p.settings, "accounts", "account_id")["ov-1"]
    assert (state["primary"], state["secondary"]) == (None, None)
    push(p, request("ov-1-m2", "ov-1"))
    wait_sent(p, "ov-1-m2")
    assert [r["channel"] for r in sends_of(p, "ov-1-m2")] == ["APP"]


def test_unreachable_account_gets_a_clear_outcome(pipeline):
    p = pipeline
    push(p, request("nobody-m", "nobody"))
    p.taps["push.results"].wait_for(lambda rs: any(r["message_id"] == "nobody-m" for r in rs),
                                    timeout=GRACE + 60, workers=[p.worker])
    p.settle()
    assert [r["status"] for r in p.taps["push.results"].where(message_id="nobody-m")] == [
        "UNREACHABLE"]
    assert p.taps["push.sends"].where(message_id="nobody-m") == []


def test_bad_input_goes_to_the_dlq_and_the_agent_keeps_going(pipeline):
    p = pipeline
    from schemas import Codec
    from streams.kafka import producer as raw_producer

    settings = p.settings
    raw = raw_producer(settings.connections.kafka_bootstrap_servers)
    raw.produce(settings.topic("push.requests"), key=b"bad-1", value=b"\x00\x00\x00\x00\x63xx")
    raw.produce(settings.topic("push.requests"), key=b"bad-1", value=b"not avro at all")
    wrong = Codec().encode("AccountSettings", {"account_id": "bad-1", "primary": None,
                                               "secondary": None, "updated_at": 1})
    raw.produce(settings.topic("push.requests"), key=b"bad-1", value=wrong)
    raw.flush()
    p.producer.send("push.acks", read_ack("ghost-m", "ghost-account", "APP"))
    p.producer.flush()
    p.settle()
    dlq = [r for r in p.taps["push.dlq"].records if r["key"] in (b"bad-1", b"ghost-account")]
    assert len(dlq) == 4
    by_value = {r["value"]: r for r in dlq}
    assert "unknown schema id 99" in by_value[b"\x00\x00\x00\x00\x63xx"]["error"]
    assert "magic" in by_value[b"not avro at all"]["error"]
    assert "expected PushRequest, got AccountSettings" in by_value[wrong]["error"]
    ghost = [r for r in dlq if r["key"] == b"ghost-account"]
    assert [r["topic"] for r in ghost] == [settings.topic("push.acks")]
    assert "unknown account 'ghost-account'" in ghost[0]["error"]
    assert {r["topic"] for r in dlq if r["key"] == b"bad-1"} == {settings.topic("push.requests")}
    ready(p, "after-bad")
    push(p, request("after-bad-m", "after-bad"))
    wait_sent(p, "after-bad-m")
    events = worker_events(p.metrics_port)
    assert events["router", "dead_letter"] == len(p.taps["push.dlq"].records)

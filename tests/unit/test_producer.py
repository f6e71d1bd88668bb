"""Tests of the producer SDK without a broker: what it needs, where it writes, what it refuses."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from connectors.producer import PushProducer, RecordProducer
from schemas import RecordError

REQUEST = {"message_id": "m-1", "account_id": "acct-1", "importance": "HIGH", "title": "Hello",
           "body": "World", "read_action": "LINK", "campaign_id": None, "device_ids": [],
           "created_at": 1700000000123}
NOWHERE = "127.0.0.1:1"  # librdkafka connects lazily: nothing is produced in these tests


def test_the_sdk_imports_the_contract_and_no_worker_module() -> None:
    code = ("import json, sys, connectors.producer; "
            "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] == 'streams')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == []


def test_bootstrap_and_topic_prefix_come_from_the_environment_when_not_given(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", NOWHERE)
    monkeypatch.setenv("PUSHCASCADE_TOPIC_PREFIX", "env.")
    assert RecordProducer().topic_prefix == "env."
    assert RecordProducer(topic_prefix="").topic_prefix == ""


def test_no_bootstrap_anywhere_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KAFKA_BOOTSTRAP_SERVERS", raising=False)
    with pytest.raises(ValueError, match="KAFKA_BOOTSTRAP_SERVERS"):
        RecordProducer()


def test_validate_returns_the_contract_key_and_names_a_bad_field() -> None:
    producer = PushProducer(NOWHERE, topic_prefix="")
    key, normalized = producer.validate("push.requests", REQUEST)
    assert key == "acct-1" and normalized["device_ids"] == []
    with pytest.raises(RecordError, match="importance"):
        producer.validate("push.requests", dict(REQUEST, importance="SUPER"))
    with pytest.raises(RecordError, match="account_id"):
        producer.validate("push.requests", dict(REQUEST, account_id=" "))
    with pytest.raises(ValueError, match="push.requests"):
        producer.validate("push.sends", REQUEST)


def test_the_sdk_refuses_a_record_over_a_cap_naming_the_field_and_the_cap() -> None:
    producer = PushProducer(NOWHERE, topic_prefix="")
    big = dict(REQUEST, body="中" * 170_000)  # 510 kB: what got a worker stuck (issue 17)
    with pytest.raises(RecordError, match=r"PushRequest\.body: 510000 bytes .*cap of 2048"):
        producer.push(big)
    with pytest.raises(RecordError, match=r"PushRequest\.created_at: .*1 day"):
        producer.validate("push.requests", dict(REQUEST, created_at=1_800_000_000_000),
                          now=1_700_000_000.0)
    profile = {"account_id": "acct-1", "phone": "+86" + "1" * 40, "updated_at": 1700000000000}
    with pytest.raises(RecordError, match=r"AccountProfile\.phone: over the cap") as info:
        producer.validate("account.profiles", profile)
    assert "111" not in str(info.value)

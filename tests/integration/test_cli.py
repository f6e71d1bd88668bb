"""The foundation through the command line, against the real embedded broker."""

from __future__ import annotations

import json

from schemas import CATALOG
from streams.kafka import admin
from tests.helpers import read_topic, run_cli

REQUEST = {"message_id": "m-1", "account_id": "acct-1", "importance": "HIGH", "title": "Hello",
           "body": "World", "read_action": "LINK", "link": "https://shop.example/spring",
           "campaign_id": "spring", "device_ids": ["d1"],
           "created_at": 1700000000123}


def test_topics_create_is_idempotent(settings_factory, broker, env):
    settings = settings_factory()
    env = {**env, "PUSHCASCADE_TOPIC_PREFIX": "cli-" + settings.tuning.topic_prefix}
    first = run_cli("topics", "create", env=env)
    assert first.returncode == 0, first.stderr
    assert f"{len(CATALOG)} topics created, 0 already present" in first.stdout
    md = admin(broker.bootstrap).list_topics(timeout=10).topics
    for spec in CATALOG:
        name = env["PUSHCASCADE_TOPIC_PREFIX"] + spec.name
        assert len(md[name].partitions) == settings.tuning.partitions
    second = run_cli("topics", "create", env=env)
    assert second.returncode == 0
    assert f"nothing to do: all {len(CATALOG)} topics already present" in second.stdout


def test_send_invalid_request_names_the_field_and_sends_nothing(settings, env):
    bad = dict(REQUEST, importance="SUPER")
    lines = json.dumps(REQUEST) + "\n" + json.dumps(bad) + "\n"
    result = run_cli("send", env=env, stdin=lines)
    assert result.returncode != 0
    assert "line 2" in result.stderr and "importance" in result.stderr
    missing = {k: v for k, v in REQUEST.items() if k != "account_id"}
    result = run_cli("send", env=env, stdin=json.dumps(missing))
    assert result.returncode != 0 and "account_id" in result.stderr
    assert read_topic(settings, "push.requests") == []


def test_send_refuses_a_record_over_a_cap_with_one_line_naming_field_and_cap(settings, env):
    big = dict(REQUEST, message_id="m-2", body="中" * 170_000)  # 510 kB, issue 17
    result = run_cli("send", env=env, stdin=json.dumps(REQUEST) + "\n" + json.dumps(big) + "\n")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: line 2: PushRequest.body: 510000 bytes (UTF-8), over the cap of 2048 bytes"]
    email = "x" * 250 + "@example.com"
    profile = {"account_id": "acct-1", "email": email, "updated_at": 1700000000000}
    result = run_cli("send", "--topic", "account.profiles", env=env, stdin=json.dumps(profile))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: line 1: AccountProfile.email: over the cap of 254 bytes"]
    assert read_topic(settings, "push.requests") == []
    assert read_topic(settings, "account.profiles") == []


def test_send_then_tail_gives_the_same_json(settings, env):
    result = run_cli("send", env=env, stdin=json.dumps(REQUEST) + "\n")
    assert result.returncode == 0, result.stderr
    tail = run_cli("tail", "push.requests", "--from-beginning", "--max", "1", "--timeout", "10",
                   env=env)
    assert tail.returncode == 0, tail.stderr
    assert json.loads(tail.stdout) == REQUEST


def test_send_to_every_writable_topic_is_keyed_as_the_contract_says(settings, env):
    from streams.cli.demo import sample_records

    for topic, record in sample_records(1700000000000).items():
        result = run_cli("send", "--topic", topic, env=env, stdin=json.dumps(record))
        assert result.returncode == 0, result.stderr
        assert read_topic(settings, topic, expect=1) == [record]


def test_empty_identifier_is_rejected(settings, env):
    result = run_cli("send", env=env, stdin=json.dumps(dict(REQUEST, message_id=" ")))
    assert result.returncode != 0 and "message_id" in result.stderr


def test_bad_setting_fails_fast_naming_the_variable(env):
    result = run_cli("topics", "list", env={**env, "PUSHCASCADE_SCORE_K1": "heavy"})
    assert result.returncode == 2
    assert "PUSHCASCADE_SCORE_K1" in result.stderr


def test_lag_is_what_each_group_committed_against_the_partition_ends(settings, env):
    """Records produced to push.sends, part of them committed by the dispatcher's group: the
    lag per partition is what the test produced there minus what it committed."""
    from confluent_kafka import TopicPartition

    from schemas import Codec
    from streams.harness.bench.common import produce
    from streams.harness.bench.events import mixed_events
    from streams.kafka import consumer

    records, _ = mixed_events(Codec(), 40, tag="lag")
    ends: dict[tuple[str, int], int] = {}
    produce(settings, records, ends)
    sends = {tp: end for tp, end in ends.items() if tp[0] == settings.topic("push.sends")}
    done = {tp: end // 3 for tp, end in sends.items()}
    group = consumer(settings.connections.kafka_bootstrap_servers,
                     settings.tuning.topic_prefix + "pushcascade-dispatch")
    group.commit(offsets=[TopicPartition(t, p, o) for (t, p), o in done.items()],
                 asynchronous=False)
    group.close()
    result = run_cli("lag", "--json", env=env, timeout=60)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    got = {(r["group"], r["topic"], r["partition"]): r["lag"] for r in report["partitions"]}
    for (topic, partition), end in sends.items():
        assert got[("dispatcher", "push.sends", partition)] == end - done[(topic, partition)]
        assert got[("sink", "push.sends", partition)] == end  # nothing committed
    assert report["groups"]["dispatcher"] == sum(sends.values()) - sum(done.values())
    assert report["groups"]["sink"] == len(records)
    table = run_cli("lag", "--group", "dispatcher", env=env, timeout=60)
    assert table.returncode == 0 and "dispatcher:" in table.stdout and "sink:" not in table.stdout


def test_dlq_replay_sends_letters_back_to_their_topics_and_a_dry_run_sends_nothing(
        settings, env):
    from schemas import Codec
    from streams.harness.bench.common import produce
    from tests.helpers import request

    codec = Codec()
    originals = [codec.encode("PushRequest", request(f"r-{i}", "acct-r")) for i in range(2)]

    def letter(source: str, value: bytes | None) -> tuple[str, bytes, bytes]:
        return ("push.dlq", b"acct-r", codec.encode("DeadLetter", {
            "key": b"acct-r", "value": value, "topic": settings.topic(source), "partition": 0,
            "offset": 7, "error": f"{settings.topic(source)}: unknown schema id 1 (test)",
            "failed_at": 1_800_000_000_000}))

    big = codec.encode("PushRequest", {**request("r-big", "acct-r"), "body": "x" * 3000})
    produce(settings, [letter("push.requests", v) for v in [*originals, big]]
            + [letter("account.profiles", None), letter("push.acks", b"\x00junk")])
    dry = run_cli("dlq", "replay", "--dry-run", env=env, timeout=60)
    assert dry.returncode == 0, dry.stderr
    assert "would replay 3 records" in dry.stdout and "value dropped" in dry.stdout
    assert "not replayable: 1 (over a cap" in dry.stdout  # the router would refuse it again
    assert read_topic(settings, "push.requests") == []
    done = run_cli("dlq", "replay", "--topic", "push.requests", env=env, timeout=60)
    assert done.returncode == 0 and "replayed 2 records" in done.stdout, done.stderr
    replayed = read_topic(settings, "push.requests", expect=2)
    assert sorted(r["message_id"] for r in replayed) == ["r-0", "r-1"]
    assert read_topic(settings, "push.acks") == []

"""Unit tests of the simulator's pure policy: verdicts, behaviours and the population."""

from __future__ import annotations

import json
import statistics

import pytest
from hypothesis import given
from hypothesis import strategies as st

from connectors.simulator.behaviour import Behaviour, Population, decide, unit
from connectors.simulator.core import load_document


def test_an_outage_answers_every_send_until_it_ends() -> None:
    down = Behaviour().updated({"outage_s": 30, "retry_after": 4}, now=1000.0)
    assert down.outage_until == 1030.0
    assert decide(down, 0, "HUAWEI", "s-1", 1, now=1029.0).outcome == "outage"
    assert decide(down, 0, "HUAWEI", "s-1", 1, now=1029.0).retry_after == 4
    assert decide(down, 0, "HUAWEI", "s-1", 1, now=1030.0).outcome == "accept"


@given(seed=st.integers(), send_id=st.text(max_size=20), seen=st.integers(1, 5))
def test_certain_acceptance_and_certain_rejection(seed: int, send_id: str, seen: int) -> None:
    assert decide(Behaviour(accept=1.0), seed, "FCM", send_id, seen, 0).outcome == "accept"
    rejected = decide(Behaviour(accept=0.0, error="UNREGISTERED"), seed, "FCM", send_id, seen, 0)
    assert (rejected.outcome, rejected.code) == ("reject", "UNREGISTERED")


def test_the_acceptance_rate_is_honoured_and_deterministic_for_a_seed() -> None:
    half = Behaviour(accept=0.3)
    verdicts = [decide(half, 5, "SMS", f"s-{i}", 1, 0).outcome for i in range(4000)]
    assert 0.26 < verdicts.count("accept") / 4000 < 0.34
    assert verdicts == [decide(half, 5, "SMS", f"s-{i}", 1, 0).outcome for i in range(4000)]
    assert verdicts != [decide(half, 6, "SMS", f"s-{i}", 1, 0).outcome for i in range(4000)]


def test_a_retry_of_the_same_send_draws_again() -> None:
    half = Behaviour(accept=0.5)
    draws = {decide(half, 1, "VIVO", "s-1", seen, 0).outcome for seen in range(1, 40)}
    assert draws == {"accept", "reject"}


@given(parts=st.lists(st.text(max_size=8), max_size=4), seed=st.integers())
def test_unit_is_within_zero_and_one(parts: list[str], seed: int) -> None:
    assert 0.0 <= unit(seed, *parts) < 1.0


@pytest.mark.parametrize(("changes", "message"), [
    ({"accept": 1.5}, "accept"), ({"latency_ms": -1}, "negative"),
    ({"colour": "red"}, "colour")])
def test_a_bad_behaviour_change_names_the_problem(changes: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Behaviour().updated(changes, now=0)


POPULATION = {
    "receipt": {"*": 1.0, "FCM": 0.0},
    "read": {"APP": 1.0, "SMS": 0.0},
    "receipt_delay_ms": [10, 20],
    "read_delay_ms": [100, 200],
    "accounts": {"acct-sms": {"read": {"SMS": 1.0}, "addresses": ["+8613800000009"]}},
    "devices": {"dev-dead": {"receipt": {"HUAWEI": 0.0}}},
}


def react(pop: Population, send_id: str, target: str, channel: str, account: str | None = None,
          device: str | None = None, address: str = "x") -> tuple[float | None, float | None]:
    r = pop.react(3, send_id, target, channel, account, device, address)
    return r.receipt_after, r.read_after


def test_the_population_answers_by_route_channel_account_and_device() -> None:
    pop = Population.from_dict(POPULATION)
    receipt, read = react(pop, "s-1", "HUAWEI", "APP", "acct-1", "dev-1")
    assert receipt is not None and 0.010 <= receipt <= 0.020
    assert read is not None and receipt + 0.100 <= read <= receipt + 0.200
    assert react(pop, "s-2", "FCM", "APP", "acct-1", "dev-1") == (None, None)  # never arrives
    assert react(pop, "s-3", "HUAWEI", "APP", "acct-1", "dev-dead") == (None, None)
    assert react(pop, "s-4", "SMS", "SMS", None, None, "+8613800000001")[1] is None
    assert react(pop, "s-5", "SMS", "SMS", None, None, "+8613800000009")[1] is not None


@given(send_id=st.text(max_size=16))
def test_the_same_send_gets_the_same_reaction(send_id: str) -> None:
    pop = Population.from_dict({"receipt": {"*": 0.5}, "read": {"*": 0.5}})
    assert react(pop, send_id, "OPPO", "APP") == react(pop, send_id, "OPPO", "APP")


@pytest.mark.parametrize(("document", "message"), [
    ({"read": {"SMS": 1.5}}, r"read\.SMS"),
    ({"receipt_delay_ms": [20, 10]}, "receipt_delay_ms"),
    ({"devices": {"d": {"read": {}}}}, r"devices\.d"),
    ({"accounts": {"a": {"addresses": "+86"}}}, r"accounts\.a\.addresses"),
    ({"people": []}, "people"),
])
def test_a_bad_population_file_names_the_field(document: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Population.from_dict(document)


def test_a_population_file_may_be_json_or_yaml(tmp_path) -> None:
    (tmp_path / "p.json").write_text(json.dumps(POPULATION))
    (tmp_path / "p.yaml").write_text(
        "receipt: {'*': 1.0, FCM: 0.0}\nread: {APP: 1.0, SMS: 0.0}\n"
        "receipt_delay_ms: [10, 20]\nread_delay_ms: [100, 200]\n"
        "accounts:\n  acct-sms: {read: {SMS: 1.0}, addresses: ['+8613800000009']}\n"
        "devices:\n  dev-dead: {receipt: {HUAWEI: 0.0}}\n")
    from_json = Population.from_dict(load_document(str(tmp_path / "p.json")))
    from_yaml = Population.from_dict(load_document(str(tmp_path / "p.yaml")))
    assert from_json == from_yaml


def test_an_account_changes_its_mind_at_a_time_and_reads_at_its_own_pace() -> None:
    pop = Population.from_dict({"receipt": {"*": 1.0}, "accounts": {"acct-mover": {
        "read": {"WECHAT": 1.0}, "read_delay_ms": [5000, 5000], "addresses": ["o-mover"],
        "later": {"at": 2000.0, "read": {"SMS": 1.0}}}}})
    before = pop.react(1, "s-1", "WECHAT", "WECHAT", None, None, "o-mover", now=1999.0)
    assert before.read_after is not None and before.read_after >= 5.0
    assert pop.react(1, "s-2", "SMS", "SMS", None, None, "o-mover", now=1999.0).read_after is None
    after = pop.react(1, "s-3", "SMS", "SMS", None, None, "o-mover", now=2000.0)
    assert after.read_after is not None
    assert pop.react(1, "s-4", "WECHAT", "WECHAT", "acct-mover", None, "?",
                     now=2500.0).read_after is None


def test_a_route_outage_delivers_nothing_while_it_lasts() -> None:
    pop = Population.from_dict({"receipt": {"*": 1.0}, "read": {"*": 1.0},
                                "outages": [{"target": "jpush", "from": 100, "until": 160}]})
    during = [pop.react(1, f"s-{i}", "JPUSH", "APP", "a", "d", "t", now=130.0) for i in range(20)]
    assert all(r.receipt_after is None and r.read_after is None for r in during)
    assert pop.react(1, "s-0", "JPUSH", "APP", "a", "d", "t", now=160.0).receipt_after is not None
    assert pop.react(1, "s-0", "GETUI", "APP", "a", "d", "t", now=130.0).receipt_after is not None


@pytest.mark.parametrize(("document", "message"), [
    ({"accounts": {"a": {"later": {"at": "soon", "read": {}}}}}, "accounts.a.later"),
    ({"accounts": {"a": {"read_delay_ms": [5, 1]}}}, "accounts.a.read_delay_ms"),
    ({"outages": [{"target": "FCM", "from": 10, "until": 5}]}, r"outages\[0\]"),
    ({"devices": {"d": {"later": {}}}}, "devices.d may hold only")])
def test_a_bad_change_or_outage_names_the_field(document: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Population.from_dict(document)


def _read_delays(pop: Population, channel: str, n: int, now: float = 0.0,
                 seed: int = 3) -> list[float]:
    out = []
    for i in range(n):
        r = pop.react(seed, f"s-{i}", channel, channel, "acct", None, "x", now=now)
        assert r.read_after is not None and r.receipt_after == 0.0
        out.append(r.read_after)
    return out


def test_read_delays_follow_each_channels_distribution_and_are_deterministic() -> None:
    pop = Population.from_dict({"receipt": {"*": 1.0}, "receipt_delay_ms": [0, 0],
                                "read_delay_ms": [7000, 7000], "accounts": {"acct": {
        "read": {"*": 1.0}, "read_delay_ms": {"APP": {"median": 1000, "p90": 3000},
                                              "SMS": [500, 2000]},
        "later": {"at": 100.0, "read": {"*": 1.0},
                  "read_delay_ms": {"*": {"median": 9000, "p90": 12000}}}}}})
    app = _read_delays(pop, "APP", 4000)
    assert statistics.median(app) == pytest.approx(1.0, rel=0.06)
    assert statistics.quantiles(app, n=10)[-1] == pytest.approx(3.0, rel=0.08)
    assert app == _read_delays(pop, "APP", 4000)  # the same seed, the same delays
    assert app != _read_delays(pop, "APP", 4000, seed=4)
    sms = _read_delays(pop, "SMS", 4000)
    assert min(sms) >= 0.5 and max(sms) <= 2.0
    assert statistics.mean(sms) == pytest.approx(1.25, rel=0.03)
    assert set(_read_delays(pop, "WECHAT", 10)) == {7.0}  # neither listed nor *: the default
    later = _read_delays(pop, "SMS", 4000, now=100.0)  # after the change of mind, its own
    assert statistics.median(later) == pytest.approx(9.0, rel=0.06)
    assert statistics.quantiles(later, n=10)[-1] == pytest.approx(12.0, rel=0.08)


def test_a_uniform_read_delay_draws_as_it_always_did() -> None:
    pop = Population.from_dict({"receipt": {"*": 1.0}, "read": {"*": 1.0},
                                "receipt_delay_ms": [0, 0], "read_delay_ms": [100, 300]})
    for i in range(50):
        r = pop.react(9, f"s-{i}", "SMS", "SMS", None, None, "x")
        assert r.read_after == (100 + 200 * unit(9, "read-delay", f"s-{i}")) / 1000


@pytest.mark.parametrize(("document", "message"), [
    ({"read_delay_ms": {"median": 2000, "p90": 1000}}, "read_delay_ms must be"),
    ({"accounts": {"a": {"read_delay_ms": {"SMS": {"median": 0, "p90": 1}}}}},
     r"accounts\.a\.read_delay_ms\.SMS"),
    ({"accounts": {"a": {"later": {"at": 1, "read": {}, "read_delay_ms": [3, 1]}}}},
     r"accounts\.a\.later\.read_delay_ms"),
    ({"accounts": {"a": {"later": {"at": 1, "read": {}, "colour": 1}}}}, r"accounts\.a\.later")])
def test_a_bad_read_delay_names_the_field(document: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Population.from_dict(document)

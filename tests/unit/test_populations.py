"""The population file's fields beyond the default population's: times as shares of the run,
channels an account has, fractional phones, model shares, route rules, read-delay
distributions, the request mix; and the shipped populations."""

from __future__ import annotations

import hashlib
import json
import statistics
from collections import Counter
from typing import Any

import pytest
import yaml

from connectors.simulator.behaviour import Population
from streams.harness.crowd import Crowd, PopulationError, Spec, shipped

BASE: dict[str, Any] = {"seed": 3, "accounts": 10, "manufacturers": {"Huawei": 1.0},
                        "segments": [{"name": "all", "share": 1.0, "read": {"WECHAT": 0.9}}]}


def crowd(**changes: Any) -> Crowd:
    return Crowd(Spec.model_validate({**BASE, **changes}))


@pytest.mark.parametrize("name", shipped())
def test_every_shipped_population_loads_and_the_simulator_takes_it(name: str) -> None:
    people = Crowd.load(name)
    assert len(people.members) == people.spec.accounts
    document = people.document(start=1000.0, duration=60.0)
    pop = Population.from_dict(document)
    assert set(pop.accounts) == {m.account_id for m in people.members}
    assert all(1000.0 <= start <= end <= 1060.0 for _, start, end in pop.outages)


def test_the_populations_the_demo_ships() -> None:
    assert set(shipped()) >= {"default", "mixed", "slow-readers", "never-readers", "drift",
                              "broken-routes", "large"}
    mixed = Crowd.load("mixed")
    assert len(mixed.members) == 400
    assert 1.4 < statistics.mean(len(m.phones) for m in mixed.members) < 1.6
    share = Counter(m.segment.name for m in mixed.members)
    assert 0.06 < share["slow readers"] / 400 < 0.14 and share["never read"] > 0
    assert {m.changed_at(100.0) for m in mixed.members} == {None, 50.0}
    assert len(Crowd.load("large").members) >= 2000
    drift = Crowd.load("drift")
    assert len({m.changed_at(100.0) for m in drift.members} - {None}) >= 3


def test_a_name_or_a_file_and_an_unknown_name_lists_the_shipped(tmp_path) -> None:
    path = tmp_path / "people.yaml"
    path.write_text(yaml.safe_dump({**BASE, "accounts": 3}))
    assert len(Crowd.load(path).members) == len(Crowd.load(str(path)).members) == 3
    assert Crowd.load("default").spec == Crowd.load().spec
    with pytest.raises(PopulationError, match=r"nobody.*shipped: .*broken-routes.*mixed"):
        Crowd.load("nobody")


LATER = {"name": "m", "share": 1.0, "read": {"WECHAT": 0.9}}


@pytest.mark.parametrize(("changes", "field"), [
    ({"segments": [{**LATER, "later": {"after": 0.4, "after_s": 3, "read": {}}}]},
     r"segments\.0\.later: .*after"),
    ({"segments": [{**LATER, "later": {"read": {}}}]}, r"segments\.0\.later"),
    ({"segments": [{**LATER, "later": {"after": 1.5, "read": {}}}]},
     r"segments\.0\.later\.after"),
    ({"outages": [{"route": "JPUSH", "from": 0.6, "until": 0.4}]}, r"outages\.0: .*until"),
    ({"outages": [{"route": "JPUSH", "until": 0.4}]}, r"outages\.0: .*from"),
    ({"outages": [{"route": "JPUSH", "from": 0.1, "until": 0.4, "until_s": 9}]}, "until"),
    ({"segments": [{**LATER, "read_delay_s": {"FAX": [1, 2]}}]}, r"segments\.0.*FAX"),
    ({"segments": [{**LATER, "read_delay_s": {"median": 2, "p90": 1}}]},
     r"segments\.0\.read_delay_s.*p90"),
    ({"segments": [{**LATER, "read_delay_s": [2, 1]}]}, r"segments\.0\.read_delay_s"),
    ({"routes": {"rules": [{"route": "HMS", "receipt": 0.5}]}}, r"routes: .*rules.*HMS"),
    ({"routes": {"rules": [{"route": "JPUSH", "model": "P60", "receipt": 0.5}]}},
     r"routes\.rules\.0: .*model"),
    ({"routes": {"rules": [{"route": "JPUSH", "receipt": 2}]}}, r"routes\.rules\.0\.receipt"),
    ({"channels": {"FAX": 1}}, "channels: FAX"),
    ({"channels": {"SMS": 1.5}}, r"channels\.SMS"),
    ({"phones_per_account": -1}, "phones_per_account"),
    ({"phones_per_account": 1.5, "devices_per_account": [1, 2]}, "phones_per_account"),
    ({"models": {"Huawei": {"P60": -1}}}, r"models\.Huawei"),
    ({"requests": {"importance": {"HIGH": 0.5, "LOW": 0.4}}}, r"requests: .*importance.*0\.9"),
    ({"requests": {"importance": {"CRITICAL": 1}}}, "CRITICAL"),
    ({"requests": {"campaigns": {"share": 2}}}, r"requests\.campaigns\.share"),
    ({"requests": {"campaigns": {"share": 0.1, "count": 0}}}, r"requests\.campaigns\.count"),
])
def test_a_bad_new_field_is_named(tmp_path, changes: dict[str, Any], field: str) -> None:
    path = tmp_path / "people.yaml"
    path.write_text(yaml.safe_dump({**BASE, **changes}))
    with pytest.raises(PopulationError, match=field):
        Crowd.load(path)


def test_shares_of_the_run_resolve_against_its_duration() -> None:
    people = crowd(segments=[
        {"name": "movers", "share": 0.5, "read": {"WECHAT": 0.9},
         "later": {"after": 0.4, "read": {"SMS": 0.9}}},
        {"name": "by the clock", "share": 0.5, "read": {"WECHAT": 0.9},
         "later": {"after_s": 30, "read": {"SMS": 0.9}}}],
        outages=[{"route": "JPUSH", "from": 0.45, "until": 0.6},
                 {"route": "GETUI", "from_s": 5, "until": 0.5}], accounts=40)
    mover = next(m for m in people.members if m.segment.name == "movers")
    clock = next(m for m in people.members if m.segment.name == "by the clock")
    for duration in (100.0, 50.0):
        doc = people.document(start=1000.0, duration=duration)
        assert doc["accounts"][mover.account_id]["later"]["at"] == 1000.0 + 0.4 * duration
        assert doc["accounts"][clock.account_id]["later"]["at"] == 1030.0
        assert doc["outages"] == [
            {"target": "JPUSH", "from": 1000.0 + 0.45 * duration,
             "until": 1000.0 + 0.6 * duration},
            {"target": "GETUI", "from": 1005.0, "until": 1000.0 + 0.5 * duration}]
        assert mover.changed_at(duration) == 0.4 * duration and clock.changed_at(duration) == 30
    assert mover.true_primary(39.9, 100.0) == "WECHAT"
    assert mover.true_primary(40.0, 100.0) == "SMS"
    # without a duration: the one the crowd was last played for (50 s)
    assert people.duration == 50.0 and mover.true_primary(20.0) == "SMS"
    assert mover.true_primary(19.9) == "WECHAT"
    assert crowd().members[0].changed_at(100.0) is None and crowd().members[0].stable


def test_fractional_phones_average_out() -> None:
    counts = [len(m.phones) for m in crowd(accounts=4000, phones_per_account=1.4).members]
    assert set(counts) == {1, 2}
    assert statistics.mean(counts) == pytest.approx(1.4, abs=0.03)
    assert {len(m.phones) for m in crowd(accounts=50, phones_per_account=0).members} == {0}
    assert {len(m.phones) for m in crowd(accounts=50, phones_per_account=2).members} == {2}
    phoneless = crowd(phones_per_account=0, segments=[
        {"name": "a", "share": 1.0, "read": {"APP": 0.9, "SMS": 0.2}}])
    assert phoneless.members[0].true_primary(0) == "SMS"  # no phone, no app


def test_model_shares_and_the_list_form() -> None:
    people = crowd(accounts=3000, phones_per_account=1,
                   models={"Huawei": {"P60": 0.8, "Mate 50": 0.2}})
    models = Counter(p.model for m in people.members for p in m.phones)
    assert set(models) == {"P60", "Mate 50"}
    assert models["P60"] / 3000 == pytest.approx(0.8, abs=0.03)
    listed = crowd(accounts=3000, phones_per_account=1, models={"Huawei": ["P60", "Mate 50"]})
    models = Counter(p.model for m in listed.members for p in m.phones)
    assert models["P60"] / 3000 == pytest.approx(0.5, abs=0.03)


def test_accounts_have_each_channel_by_its_share_and_read_only_where_they_have_it() -> None:
    people = crowd(accounts=4000, channels={"WECHAT": 0.8, "SMS": 0.97, "EMAIL": 0.3},
                   segments=[{"name": "a", "share": 1.0, "read": {"WECHAT": 0.9, "SMS": 0.5}}])
    for channel, share in (("WECHAT", 0.8), ("SMS", 0.97), ("EMAIL", 0.3)):
        have = sum(channel in m.channels for m in people.members) / 4000
        assert have == pytest.approx(share, abs=0.025), channel
    profiles = {r["account_id"]: r for t, r in people.registrations(0)
                if t == "account.profiles"}
    doc = people.document(0.0, 100.0)
    for m in people.members:
        profile = profiles[m.account_id]
        assert (profile["wechat_openid"] is None) == ("WECHAT" not in m.channels)
        assert (profile["phone"] is None) == ("SMS" not in m.channels)
        assert (profile["email"] is None) == ("EMAIL" not in m.channels)
        assert (m.openid in doc["accounts"][m.account_id]["addresses"]) == m.has("WECHAT")
        expected = ("WECHAT" if m.has("WECHAT") else "SMS" if m.has("SMS") else None)
        assert m.true_primary(0) == expected
    assert any(m.true_primary(0) == "SMS" for m in people.members)
    # without `channels`: every account has WeChat and SMS and no e-mail, as before there were
    default = Crowd.load()
    assert {m.channels for m in default.members} == {frozenset({"WECHAT", "SMS"})}


def test_the_most_specific_route_rule_wins() -> None:
    people = crowd(accounts=400, manufacturers={"Xiaomi": 0.5, "Huawei": 0.5},
                   models={"Xiaomi": ["Mi 13", "Redmi Note 12"]},
                   routes={"others": {"JPUSH": 0.85, "GETUI": 0.75},
                           "broken": [{"manufacturer": "Xiaomi", "model": "Redmi Note 12",
                                       "receipt": 0.05}],
                           "rules": [  # the most specific first: its place does not matter
                               {"route": "JPUSH", "manufacturer": "Xiaomi",
                                "model": "Redmi Note 12", "receipt": 0.3},
                               {"route": "JPUSH", "manufacturer": "xiaomi", "receipt": 0.4},
                               {"route": "JPUSH", "receipt": 0.6},
                               {"route": "GETUI", "manufacturer": "Huawei", "receipt": 0.2},
                               {"route": "GETUI", "manufacturer": "Huawei", "receipt": 0.1}]})
    seen = set()
    for phone in (p for m in people.members for p in m.phones):
        kind = (phone.manufacturer, phone.model)
        seen.add(kind)
        expected = {("Xiaomi", "Redmi Note 12"): {"XIAOMI": 0.05, "JPUSH": 0.3, "GETUI": 0.75},
                    ("Xiaomi", "Mi 13"): {"XIAOMI": 0.95, "JPUSH": 0.4, "GETUI": 0.75},
                    ("Huawei", "Huawei phone"): {"HUAWEI": 0.95, "JPUSH": 0.6, "GETUI": 0.1}}
        assert phone.receipt == expected[kind], kind  # the later of equals wins
        assert phone.best_alternative == ("GETUI" if phone.manufacturer == "Xiaomi"
                                          else "JPUSH")
    assert len(seen) == 3


def test_the_importance_mix_and_campaigns_of_the_requests() -> None:
    mix = {"LOW": 0.1, "NORMAL": 0.5, "HIGH": 0.3, "URGENT": 0.1}
    people = crowd(accounts=50, requests={"importance": mix,
                                          "campaigns": {"share": 0.2, "count": 4}})
    total = 20000
    requests = [people.request(n, 123, total) for n in range(total)]
    importance = Counter(r["importance"] for r in requests)
    for name, share in mix.items():
        assert importance[name] / total == pytest.approx(share, abs=0.015), name
    campaigns = [r["campaign_id"] for r in requests]
    assert sum(c is not None for c in campaigns) / total == pytest.approx(0.2, abs=0.015)
    assert {c for c in campaigns if c} == {"promo-1", "promo-2", "promo-3", "promo-4"}
    for n, c in enumerate(campaigns):  # each campaign in its quarter of the run
        assert c is None or c == f"promo-{n * 4 // total + 1}"
    first = requests[51]
    assert (first["message_id"], first["account_id"], first["created_at"],
            first["body"]) == ("acct-00001-m1", "acct-00001", 123, "update 1")
    assert requests == [people.request(n, 123, total) for n in range(total)]  # same seed
    other = Crowd(people.spec.model_copy(update={"seed": 4}))
    assert [r["importance"] for r in requests[:200]] != [
        other.request(n, 123, total)["importance"] for n in range(200)]


def test_without_a_request_mix_the_demo_sends_what_it_always_did() -> None:
    people = crowd(accounts=25)
    requests = [people.request(n, 5) for n in range(100)]
    assert [r["importance"] for r in requests] == [
        "HIGH" if n % 4 == 0 else "NORMAL" for n in range(100)]
    assert [r["campaign_id"] for r in requests] == [
        f"promo-{n // 25}" if n >= 25 and n % 25 % 10 == 0 else None for n in range(100)]
    assert requests[27] == {
        "message_id": "acct-00002-m1", "account_id": "acct-00002", "importance": "NORMAL",
        "title": "Your parcel", "body": "update 1", "read_action": "LINK",
        "link": "https://shop.example/parcel", "campaign_id": None, "device_ids": [],
        "created_at": 5}


def test_read_delays_per_channel_reach_the_simulator_in_milliseconds() -> None:
    people = crowd(segments=[{
        "name": "a", "share": 1.0, "read": {"APP": 0.9, "SMS": 0.5},
        "read_delay_s": {"APP": {"median": 1.0, "p90": 3.0}, "SMS": [0.5, 2.0]},
        "later": {"after": 0.5, "read": {"SMS": 0.9}, "read_delay_s": {"median": 9, "p90": 12}}}])
    entry = people.document(0.0, 10.0)["accounts"]["acct-00000"]
    assert entry["read_delay_ms"] == {"APP": {"median": 1000.0, "p90": 3000.0},
                                      "SMS": [500.0, 2000.0]}
    assert entry["later"]["read_delay_ms"] == {"median": 9000.0, "p90": 12000.0}
    Population.from_dict(people.document(0.0, 10.0))


def test_the_default_population_draws_the_people_it_drew_before_the_new_fields() -> None:
    # the digest of the people drawn by the code before phones_per_account, model shares and
    # channels (commit ca765f2): the new draws do not shift the old ones
    people = Crowd.load()
    drawn = json.dumps([(m.account_id, m.segment.name,
                         [(p.manufacturer, p.model, p.receipt) for p in m.phones])
                        for m in people.members])
    assert hashlib.sha256(drawn.encode()).hexdigest() == (
        "a2d8c1b34d9fe6d1888c7708f4de361e4a7449f4444ee34c3f17d5267b4436c3")


def test_the_demo_waits_for_each_accounts_own_phones_and_addresses() -> None:
    """`large` has 11 accounts without an address (not every one has WeChat or SMS): the demo
    once waited for every account to show a device and an address, and never started. It
    waits for each one's own phones and addresses."""
    from streams.harness.taps import registered

    expected = Crowd.load("large").registered()
    assert sum(addresses == 0 for _, addresses in expected.values()) == 11
    states = {a: {"devices": [f"{a}-d{i}" for i in range(n)], "addresses": ["SMS"] * k}
              for a, (n, k) in expected.items() if (n, k) != (0, 0)}
    assert registered(states, expected)
    account = next(a for a, (n, _) in expected.items() if n > 0)
    assert not registered({**states, account: {**states[account], "devices": []}}, expected)
    assert not registered({a: s for a, s in states.items() if a != account}, expected)

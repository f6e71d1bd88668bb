"""The demo's population file, its hidden truth, and the scoring of a run against it."""

from __future__ import annotations

import pytest

from connectors.clickhouse.quality import accuracy
from connectors.simulator.behaviour import Population
from streams.cli.demo import verdicts
from streams.harness.crowd import Crowd, PopulationError


def test_the_shipped_population_draws_the_same_people_for_the_same_seed() -> None:
    a, b = Crowd.load(), Crowd.load()
    assert [(m.account_id, m.segment.name, [(p.manufacturer, p.model) for p in m.phones])
            for m in a.members] == [
        (m.account_id, m.segment.name, [(p.manufacturer, p.model) for p in m.phones])
        for m in b.members]
    assert len(a.members) == a.spec.accounts
    segments = {m.segment.name for m in a.members}
    assert segments == {s.name for s in a.spec.segments}


def test_the_population_document_is_what_the_simulator_accepts(tmp_path) -> None:
    crowd = Crowd.load()
    doc = crowd.document(start=1000.0, duration=200.0)
    pop = Population.from_dict(doc)
    mover = next(m for m in crowd.members if m.segment.later)
    entry = pop.accounts[mover.account_id]
    assert entry["later"]["at"] == pytest.approx(1000.0 + 0.32 * 200)  # after: 0.32
    assert mover.changed_at(200.0) == pytest.approx(64.0)
    assert pop.outages == [("JPUSH", pytest.approx(1086.0), pytest.approx(1114.0))]
    regs = crowd.registrations(0)
    assert sum(t == "device.registry" for t, _ in regs) == sum(len(m.phones)
                                                              for m in crowd.members)


def test_broken_original_routes_and_the_truth_drawn_from_them() -> None:
    crowd = Crowd.load()
    for m in crowd.members:
        for p in m.phones:
            if p.manufacturer == "OPPO":
                assert p.receipt[p.original] == 0.10
            if p.model == "Redmi Note 12":
                assert p.receipt["XIAOMI"] == 0.05
            assert p.best_alternative != p.original
    mover = next(m for m in crowd.members if m.segment.later)
    assert mover.true_primary(0) == "WECHAT" and mover.true_primary(1000) == "SMS"
    never = next(m for m in crowd.members if not m.segment.read)
    assert never.true_primary(0) is None


@pytest.mark.parametrize(("text", "field"), [
    ("manufacturers: {Huawei: 1}\nsegments: [{name: a, share: 0.5}]", "add up to 0.5"),
    ("manufacturers: {Huawei: 1}\nsegments: [{name: a, share: 1, read: {FAX: 1}}]", "FAX"),
    ("manufacturers: {Huawei: 1}\nsegments: [{name: a, share: 1}]\ncolour: red", "colour"),
    ("segments: [{name: a, share: 1}]", "manufacturers"),
])
def test_a_bad_population_file_names_the_field(tmp_path, text: str, field: str) -> None:
    path = tmp_path / "people.yaml"
    path.write_text(text)
    with pytest.raises(PopulationError, match=field):
        Crowd.load(path)


def test_accuracy_counts_stable_readers_and_measured_phones() -> None:
    figures = accuracy(
        primaries={"a": "WECHAT", "b": "SMS", "c": "APP", "n": "SMS"},
        targets={"d1": "JPUSH", "d2": "GETUI"},
        true_primary={"a": "WECHAT", "b": "WECHAT", "c": "APP", "n": None},
        stable={"a": True, "b": True, "c": False, "n": True},
        best_routes={"d1": "JPUSH", "d2": "JPUSH", "d3": "GETUI"})
    assert figures["primary_accuracy_stable"] == 0.5  # a right, b wrong; n never reads
    assert figures["primary_accuracy_movers"] == 1.0
    assert (figures["route_accuracy"], figures["devices_scored"], figures["devices"]) == (
        0.5, 2, 3)


def test_the_comparison_checks_say_what_holds() -> None:
    # blast waits one read deadline, seed up to two: before its last deadline seed reaches
    # more, within the same 10 s less than 95% of blast
    runs = [{"strategy": "blast", "reach": 0.90, "reach_in_time": 0.70, "sends_per_message": 4.0},
            {"strategy": "seed", "reach": 0.84, "reach_in_time": 0.80, "sends_per_message": 1.6,
             "primary_accuracy_stable": 0.95},
            {"strategy": "adaptive", "reach": 0.89, "reach_in_time": 0.85,
             "sends_per_message": 1.5, "primary_accuracy_stable": 0.88}]
    assert [ok for _, ok in verdicts(runs)] == [True, False, True, True, True, False]
    runs[2]["sends_per_message"] = 1.7  # more reach, but more sends: no better
    assert [ok for _, ok in verdicts(runs)][3] is False

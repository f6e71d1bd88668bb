"""adaptive's route choice, pure: Beta posteriors per device and route and their choices."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streams.domain import posterior as bayes
from streams.domain.posterior import Beta
from streams.domain.probing import (
    ProbeBudget,
    ProbeConfig,
    TargetReason,
    choose_fallback,
    evaluate_target,
    plan_probes,
    posteriors,
)
from streams.domain.routes import expire_pending, record_receipt, record_send, register_device

epochs = st.lists(st.tuples(st.floats(0, 1000), st.floats(0, 16), st.floats(0, 16)),
                  max_size=6)


def test_beta_mean_sd_and_upper_bound() -> None:
    b = Beta(8, 2)
    assert b.mean == 0.8
    assert b.sd == pytest.approx((8 * 2 / (100 * 11)) ** 0.5)
    assert b.ucb == pytest.approx(b.mean + bayes.UCB_SD * b.sd)


def test_evidence_keeps_the_newest_epochs_and_fades_with_age() -> None:
    kept: list[list[float]] = []
    size, epochs = bayes.EPOCH_SIZE, bayes.EPOCHS
    for i in range(size * (epochs + 1) + 3):
        bayes.remember(kept, float(i), i % 4 != 0)
    assert len(kept) == epochs
    assert kept[0] == [3 * size - 1, size * 3 / 4, size / 4]  # the oldest two were dropped
    assert kept[-1] == [size * (epochs + 1) + 2, 2.0, 1.0]  # the newest, not yet full
    assert bayes.evidence([[0.0, 1.0, 1.0]], 0.0, 10.0) == (1.0, 1.0)
    assert bayes.evidence([[0.0, 1.0, 0.0], [10.0, 0.0, 1.0]], 20.0, 10.0) == (0.25, 0.5)
    assert bayes.evidence([[30.0, 1.0, 0.0]], 20.0, 10.0) == (1.0, 0.0)  # a clock step back


@given(epochs, st.floats(0.01, 0.99), st.floats(0, 1000), st.floats(1, 100),
       st.floats(0.5, 20))
def test_the_posterior_mean_lies_between_the_prior_and_the_evidence(seen, prior, now,
                                                                    half_life, strength) -> None:
    beta = bayes.posterior(seen, prior, now, half_life, strength)
    hits, misses = bayes.evidence(seen, now, half_life)
    assert beta.a > 0 and beta.b > 0
    rates = [prior] + ([hits / (hits + misses)] if hits + misses > 1e-12 else [])
    assert min(rates) - 1e-9 <= beta.mean <= max(rates) + 1e-9


def test_old_failures_fade_back_to_the_prior() -> None:
    outage = [[20.0, 0.0, 20.0]]
    during = bayes.posterior(outage, 0.85, 20.0, 30.0, 8.0)
    after = bayes.posterior(outage, 0.85, 20.0 + 10 * 30.0, 30.0, 8.0)
    assert during.mean < 0.4
    assert after.mean == pytest.approx(0.85, abs=0.01)


def test_a_draw_is_the_same_for_the_same_key_and_follows_the_posterior() -> None:
    beta = Beta(3, 7)
    assert bayes.draw(beta, "k") == bayes.draw(beta, "k")
    samples = [bayes.draw(beta, f"k{i}") for i in range(4000)]
    assert sum(samples) / len(samples) == pytest.approx(0.3, abs=0.02)


def test_thompson_prefers_the_better_route_in_proportion_to_the_evidence() -> None:
    clear = {"JPUSH": Beta(90, 10), "GETUI": Beta(70, 30)}
    close = {"JPUSH": Beta(4.4, 0.6), "GETUI": Beta(4.0, 1.0)}
    picks = [bayes.thompson(clear, f"s{i}") for i in range(2000)]
    assert picks.count("JPUSH") / 2000 > 0.99
    picks = [bayes.thompson(close, f"s{i}") for i in range(2000)]
    assert 0.5 < picks.count("JPUSH") / 2000 < 0.8  # uncertain: both are tried
    assert bayes.thompson({}, "s") is None


def test_the_target_is_the_best_mean_kept_within_the_hysteresis() -> None:
    assert bayes.target({"A": Beta(8, 2), "B": Beta(7, 3)}, None) == "A"
    assert bayes.target({"A": Beta(80.5, 19.5), "B": Beta(80, 20)}, "B") == "B"
    assert bayes.target({"A": Beta(9, 1), "B": Beta(8, 2)}, "B") == "A"
    assert bayes.target({}, "B") is None


def test_probing_goes_where_the_choice_is_uncertain_and_stops_when_it_is_clear() -> None:
    assert bayes.to_probe({"A": Beta(3.4, 0.6)}) is None  # nothing to choose between
    fresh = {"A": Beta(3.4, 0.6), "B": Beta(3.0, 1.0)}
    assert bayes.to_probe(fresh) == "B"  # it could still beat A, the best so far
    settled = {"A": Beta(90, 10), "B": Beta(30, 70)}
    assert bayes.to_probe(settled) is None
    # a route known only from a (low) prior, nothing seen of it lately: probed while it could
    # beat the best within 3 deviations; one the device saw recently is not
    after_outage = {"JPUSH": Beta(3.2, 4.8), "GETUI": Beta(80, 20)}
    assert bayes.to_probe(after_outage, {"GETUI": 50.0, "JPUSH": 0.5}) == "JPUSH"
    assert bayes.to_probe(after_outage, {"GETUI": 50.0, "JPUSH": 9.0}) is None
    hopeless = {"FCM": Beta(2.4, 5.6), "GETUI": Beta(90, 10)}
    assert bayes.to_probe(hopeless, {"GETUI": 50.0}) is None


def learn(seed: int, truth: dict[str, float], steps: int = 400,
          fleet: dict[str, float] | None = None,
          strength: float = 32.0) -> tuple[str, dict[str, Beta]]:
    """A device with alternatives JPUSH and GETUI receiving at `truth`, probed and fallen back
    on by its posteriors for `steps` seconds (with the `fleet`'s priors counted as `strength`
    outcomes); its target and posteriors at the end."""
    rng = random.Random(seed)
    cfg = ProbeConfig(bandit=True, half_life_s=1e9, per_device_probes_per_hour=3600 * 100,
                      global_probes_per_second=1e6, probe_timeout_s=1.0,
                      prior=fleet or 0.5, fleet=frozenset(fleet or ()), prior_strength=strength)
    device = register_device("d1", "a1", "Xiaomi", "13", ["XIAOMI", "JPUSH", "GETUI"]).device
    budget = ProbeBudget.from_config(cfg)
    now = 0.0
    for i in range(steps):
        now += 1.0
        for probe in plan_probes(device, now, cfg, budget):
            if rng.random() < truth[probe.route]:
                record_receipt(device, probe.send_id, now + 0.1)
        route = choose_fallback(device, cfg, now, f"send-{i}")
        assert route in truth
        record_send(device, f"send-{i}", route, now)
        if rng.random() < truth[route]:
            record_receipt(device, f"send-{i}", now + 0.1)
        evaluate_target(device, cfg, now)
    return device.target[0], posteriors(device, cfg, now + 1)


def test_with_probes_and_fallbacks_devices_learn_to_tell_088_from_080() -> None:
    """What five fixed probes cannot: of 40 devices whose alternatives receive 0.80 and 0.88,
    at least 90% target the 0.88 route after 400 fallbacks, each consistently with its own
    posteriors."""
    right = 0
    for seed in range(40):
        chosen, beliefs = learn(seed, {"JPUSH": 0.80, "GETUI": 0.88})
        assert beliefs[chosen].mean + bayes.HYSTERESIS >= max(b.mean for b in beliefs.values())
        right += chosen == "GETUI"
    assert right >= 36


def test_a_target_change_is_reported_with_the_posterior_mean() -> None:
    cfg = ProbeConfig(bandit=True, prior={"JPUSH": 0.9, "GETUI": 0.5},
                      fleet=frozenset({"JPUSH", "GETUI"}))
    device = register_device("d1", "a1", "Xiaomi", "13", ["XIAOMI", "JPUSH", "GETUI"]).device
    assert evaluate_target(device, cfg, 0.0) is None  # nothing seen yet: no target
    record_send(device, "s1", "GETUI", 0.0)
    record_receipt(device, "s1", 1.0)
    change = evaluate_target(device, cfg, 1.0)
    assert change is not None and change.reason is TargetReason.POSTERIOR
    assert change.target == ["JPUSH"] and change.rate == pytest.approx(0.9)
    assert evaluate_target(device, cfg, 2.0) is None  # unchanged: no new record


def test_a_fleet_prior_counts_its_strength_and_a_default_guess_two_outcomes() -> None:
    cfg = ProbeConfig(bandit=True, prior={"JPUSH": 0.85, "GETUI": 0.5},
                      fleet=frozenset({"JPUSH"}), prior_strength=32.0)
    device = register_device("d1", "a1", "Xiaomi", "13", ["XIAOMI", "JPUSH", "GETUI"]).device
    beliefs = posteriors(device, cfg, 0.0)
    assert beliefs["JPUSH"] == Beta(pytest.approx(0.85 * 32), pytest.approx(0.15 * 32))
    assert beliefs["GETUI"] == Beta(1.0, 1.0) and bayes.UNINFORMED == 2.0


def test_with_the_fleets_priors_devices_tell_085_from_075_after_a_few_sends() -> None:
    """A device cannot tell 0.85 from 0.75 by itself in a few dozen outcomes; the fleet can.
    Counted as 32 outcomes its rates keep 39 of 40 devices on the better route after 40
    fallbacks (as 8 outcomes, fewer)."""
    truth = {"JPUSH": 0.85, "GETUI": 0.75}
    strong = sum(learn(s, truth, 40, truth)[0] == "JPUSH" for s in range(40))
    weak = sum(learn(s, truth, 40, truth, strength=8.0)[0] == "JPUSH" for s in range(40))
    assert strong >= 39 and weak < strong


def test_a_route_the_device_cannot_receive_loses_the_fleets_prior_within_a_few_misses() -> None:
    """The fleet rates JPUSH 0.85, GETUI 0.75; this device receives nothing on JPUSH (or it is
    down): its target leaves JPUSH after six misses in a row (the fleet's 32 outcomes)."""
    fleet = {"JPUSH": 0.85, "GETUI": 0.75}
    cfg = ProbeConfig(bandit=True, prior=fleet, fleet=frozenset(fleet),
                      per_device_probes_per_hour=1e-9)
    device = register_device("d1", "a1", "Xiaomi", "13", ["XIAOMI", "JPUSH", "GETUI"]).device
    record_send(device, "s0", "JPUSH", 0.0)
    record_receipt(device, "s0", 0.5)
    evaluate_target(device, cfg, 1.0)
    assert device.target == ["JPUSH"]
    misses = 0
    while device.target == ["JPUSH"] and misses < 100:
        misses += 1
        record_send(device, f"s{misses}", "JPUSH", float(misses))
        expire_pending(device, float(misses) + 1, 1.0)
        evaluate_target(device, cfg, float(misses) + 1)
    assert device.target == ["GETUI"] and misses == 6


def test_no_target_is_named_on_a_default_guess_and_one_lucky_probe() -> None:
    guess = {"JPUSH": Beta(1, 1), "GETUI": Beta(2, 1)}  # the default prior and one receipt
    assert bayes.target(guess, None) is None
    assert bayes.target(guess, "JPUSH") == "JPUSH"  # nor is a named one dropped for it
    seen = {"JPUSH": Beta(1, 1), "GETUI": Beta(5, 1)}  # four receipts of its own
    assert bayes.target(seen, None) == "GETUI"
    fleet = {"JPUSH": Beta(27.2, 4.8), "GETUI": Beta(24, 8)}  # the fleet's priors, 32 each
    assert bayes.target(fleet, None) == "JPUSH"


def test_a_leader_known_only_from_the_fleet_is_probed_until_the_device_has_seen_it() -> None:
    """A phone whose own route rarely fails makes few fallbacks: a leader known only from the
    fleet's prior is probed there (a route broken for its manufacturer would otherwise stay its
    target), and no longer once the device has outcomes of its own of it."""
    fleet_only = {"JPUSH": Beta(26, 6), "GETUI": Beta(24, 8)}
    assert bayes.to_probe(fleet_only, {}) == "JPUSH"
    assert bayes.to_probe(fleet_only, {"JPUSH": 1.0, "GETUI": 5.0}) is None
    assert bayes.to_probe(fleet_only) is None  # without what the device saw: never the leader

"""adaptive's route choice, pure: a Beta posterior per device and route, and the choices it
makes (Thompson sampling for a fallback send, the best mean for the target, an upper confidence
bound for what to probe).

A route's evidence is its latest outcomes on the device (probes and live sends, each a receipt
or not), kept as a few epochs of [time of the latest, receipts, misses] of EPOCH_SIZE outcomes
each; an epoch weighs 1/2 per `half_life` of its age, so a route that failed during an outage
comes back to its prior, and is tried again, once the outage is old news. The prior is
the fleet's receipt rate for the device's model or manufacturer (or the configured default),
counted as `strength` outcomes. Draws are seeded by what they decide for (a send id): a replay
makes the same choice.
"""

from __future__ import annotations

import hashlib
import math
import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

#: How many outcomes the default prior counts for (a route the fleet has no rate of): a guess,
#: overturned by the device's first few outcomes.
UNINFORMED = 2.0
#: Outcomes per epoch of a route's evidence, and the epochs kept (the newest).
EPOCH_SIZE = 16
EPOCHS = 6
#: Probe a route while its upper bound is this far above the best mean...
EXPLORE_MARGIN = 0.0
#: ...and its posterior this uncertain (standard deviation).
UNCERTAIN = 0.08
#: How many standard deviations the upper confidence bound adds.
UCB_SD = 2.0
#: A route with less faded evidence than this is stale on the device: what is known of it is
#: mostly the fleet's prior (after an outage, possibly a stale one)...
STALE = 2.0
#: ...and is probed while its mean plus this many standard deviations could beat the best.
STALE_SD = 3.0
#: The leading route is probed only while the device has next to nothing of its own of it (a
#: leader known only from the fleet's prior, on a phone whose own route rarely fails, would
#: never be measured there: a route broken for one manufacturer stayed its target).
UNSEEN = 0.05
#: The target moves to a route whose mean leads the current target's by at least this.
HYSTERESIS = 0.02
#: A route becomes the target only once its posterior counts this many outcomes (the fleet's
#: prior, or the device's own): one lucky probe under the default guess names no target.
INFORMED = 6.0


@dataclass(frozen=True)
class Beta:
    """A Beta(a, b) posterior of a receipt rate."""

    a: float
    b: float

    @property
    def mean(self) -> float:
        """The posterior mean."""
        return self.a / (self.a + self.b)

    @property
    def sd(self) -> float:
        """The posterior standard deviation."""
        n = self.a + self.b
        return math.sqrt(self.a * self.b / (n * n * (n + 1)))

    @property
    def ucb(self) -> float:
        """An upper confidence bound: the mean plus UCB_SD standard deviations."""
        return self.mean + UCB_SD * self.sd


def remember(epochs: list[list[float]], at: float, delivered: bool) -> None:
    """Add one outcome to a route's evidence: to its newest epoch, or a new one when that is
    full (the oldest beyond EPOCHS dropped)."""
    if not epochs or epochs[-1][1] + epochs[-1][2] >= EPOCH_SIZE:
        epochs.append([round(at, 3), 0.0, 0.0])
        del epochs[:-EPOCHS]
    epoch = epochs[-1]
    epoch[0] = max(epoch[0], round(at, 3))
    epoch[1 if delivered else 2] += 1.0


def evidence(epochs: Iterable[Sequence[float]], now: float,
             half_life: float) -> tuple[float, float]:
    """(receipts, misses) of a route, each epoch weighed 1/2 per half_life of its age."""
    hits = misses = 0.0
    for at, epoch_hits, epoch_misses in epochs:
        weight = 0.5 ** (max(0.0, now - at) / half_life)
        hits += weight * epoch_hits
        misses += weight * epoch_misses
    return hits, misses


def posterior(epochs: Iterable[Sequence[float]], prior: float, now: float, half_life: float,
              strength: float) -> Beta:
    """A route's posterior: the prior as `strength` outcomes, then its faded evidence."""
    p = min(1.0 - 1e-6, max(1e-6, prior))
    hits, misses = evidence(epochs, now, half_life)
    return Beta(p * strength + hits, (1.0 - p) * strength + misses)


def draw(beta: Beta, key: str) -> float:
    """A sample of a posterior, the same for the same key."""
    seed = int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "big")
    return random.Random(seed).betavariate(beta.a, beta.b)  # noqa: S311 (a choice, not a secret)


def thompson(posteriors: Mapping[str, Beta], key: str) -> str | None:
    """The route whose sample is highest (Thompson sampling), each drawn with its own key;
    ties go to the earlier route."""
    best, top = None, -1.0
    for route, beta in posteriors.items():
        sample = draw(beta, f"{key}/{route}")
        if sample > top:
            best, top = route, sample
    return best


def best(posteriors: Mapping[str, Beta]) -> str | None:
    """The route with the highest posterior mean; ties go to the earlier route."""
    found, top = None, -1.0
    for route, beta in posteriors.items():
        if beta.mean > top:
            found, top = route, beta.mean
    return found


def target(posteriors: Mapping[str, Beta], current: str | None) -> str | None:
    """The target route: the best mean, kept while no other leads it by HYSTERESIS; none (or
    the current one) while the leader's posterior is not INFORMED."""
    leader = best(posteriors)
    kept = current if current in posteriors else None
    if leader is None or posteriors[leader].a + posteriors[leader].b < INFORMED:
        return kept
    if kept is None:
        return leader
    if posteriors[leader].mean >= posteriors[kept].mean + HYSTERESIS:
        return leader
    return kept


def to_probe(posteriors: Mapping[str, Beta],
             seen: Mapping[str, float] | None = None) -> str | None:
    """The route worth a probe: the highest upper bound among uncertain routes that could
    still beat the best mean (the best itself only while the device has next to nothing of
    it: otherwise its fallbacks measure it), or stale ones
    (less than STALE faded outcomes `seen` on the device) that could within STALE_SD
    deviations (None: the choice is clear enough)."""
    if len(posteriors) < 2:
        return None
    leader = best(posteriors)
    top = posteriors[leader].mean if leader else 0.0

    def worth(route: str, b: Beta) -> bool:
        if route == leader:  # its fallbacks measure it, unless the device has not seen it
            return seen is not None and seen.get(route, 0.0) < UNSEEN
        if seen is not None and seen.get(route, 0.0) < STALE and b.mean + STALE_SD * b.sd > top:
            return True
        return b.sd >= UNCERTAIN and b.ucb > top + EXPLORE_MARGIN

    open_ = {r: b for r, b in posteriors.items() if worth(r, b)}
    if not open_:
        return None
    return max(open_, key=lambda r: open_[r].ucb)

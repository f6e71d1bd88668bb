"""Unit tests of streams.domain.kinds: kinds of reader, their counts, the priors they give."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from streams.domain import escalation as esc
from streams.domain import kinds
from streams.domain.channels import Account, ChannelPolicy, ranking
from streams.domain.state import KINDS, kinds_key
from tests.unit.partition import Partition, config, sends

QUICK = {"LOW": 10.0, "NORMAL": 5.0, "HIGH": 3.0, "URGENT": 2.0}
ADAPTIVE = ChannelPolicy(strategy="adaptive", read_deadlines=QUICK)


def reader(delay: float, **reads: int) -> Account:
    """An account with two phones and WeChat that read `reads` messages per channel, each
    `delay` seconds after its send."""
    return Account("a", devices=["d1", "d2"], addresses=["WECHAT"], feedback_count=dict(reads),
                   delays={c: [delay] * n for c, n in reads.items()})


def test_an_account_is_of_no_kind_until_it_reads_then_prompt_on_its_most_read_channel() -> None:
    assert kinds.kind_of(Account("a"), ADAPTIVE) is None
    assert kinds.kind_of(reader(1.0, WECHAT=3, APP=1), ADAPTIVE) == "prompt:WECHAT"
    # a tie goes to the channel first in the fixed order
    assert kinds.kind_of(reader(1.0, WECHAT=2, APP=2), ADAPTIVE) == "prompt:APP"
    # reads that come after the NORMAL deadline (5 s here), pooled: late, whatever the channel
    assert kinds.kind_of(reader(9.0, WECHAT=3, APP=1), ADAPTIVE) == "late"


def test_a_kind_counts_the_app_push_per_number_of_phones_and_halves_its_counts() -> None:
    stats: dict[str, list[float]] = {}
    kinds.count(stats, "late", "APP", 2, 0.0, 1.0)
    kinds.count(stats, "late", "APP", 1, 1.0, 0.0)
    kinds.count(stats, "late", "WECHAT", 2, 1.0, 1.0)
    assert stats == {"late|APP|2": [0.0, 1.0], "late|APP|1": [1.0, 0.0], "late|WECHAT": [1.0, 1.0]}
    for _ in range(int(kinds.HALVE_AT) - 1):
        kinds.count(stats, "late", "WECHAT", 1, 1.0, 1.0)
    assert stats["late|WECHAT"] == [kinds.HALVE_AT / 2, kinds.HALVE_AT / 2]


def test_a_kind_gives_a_prior_only_where_it_has_enough_sends() -> None:
    stats = {"late|WECHAT": [85.0, 100.0], "late|APP|2": [15.0, kinds.MIN_SENDS - 1],
             "late|SMS": [0.0, 40.0]}
    assert kinds.priors(stats, "late", ["WECHAT", "APP", "SMS", "EMAIL"], 2) == {
        "WECHAT": 86.0 / 102.0, "SMS": 1.0 / 42.0}
    assert kinds.priors(stats, None, ["WECHAT"], 2) == {}
    assert kinds.priors(stats, "prompt:SMS", ["WECHAT"], 2) == {}


@given(st.integers(0, 50), st.integers(0, 50), st.floats(0.0, 1.0), st.floats(0.5, 50.0))
def test_a_read_rate_lies_between_its_kinds_and_the_accounts_own(reads, sends, prior,
                                                               strength) -> None:
    reads = min(reads, sends)
    rate = esc.read_rate([float(reads), float(sends)], prior, strength)
    own = reads / sends if sends else prior
    assert min(own, prior) - 1e-9 <= rate <= max(own, prior) + 1e-9
    # without a prior: one read in two sends before any, as before
    assert esc.read_rate([float(reads), float(sends)]) == (reads + 1.0) / (sends + 2.0)


def test_a_late_readers_tie_is_broken_by_what_its_kind_reads() -> None:
    """Its own reads cannot tell WeChat from an app push on two phones (9 of 12 each); the
    late readers of its partition read WeChat at 0.85, the app push on two phones at 0.7."""
    acc = Account("a", pushes=12, lifecycle="ESTABLISHED", devices=["d1", "d2"],
                  addresses=["WECHAT"], decayed={"APP": 6.0, "WECHAT": 4.0},
                  feedback_count={"APP": 9, "WECHAT": 9},
                  counts={"APP": [9.0, 12.0], "WECHAT": [9.0, 12.0]},
                  delays={"APP": [9.0] * 8, "WECHAT": [9.0] * 8})
    assert ranking(acc, ADAPTIVE)[0] == "APP"  # the fixed order breaks the tie
    stats = {"late|WECHAT": [850.0, 1000.0], "late|APP|2": [700.0, 1000.0]}
    acc.prior = kinds.priors(stats, kinds.kind_of(acc, ADAPTIVE), acc.enabled(), 2)
    acc.prior_strength = kinds.STRENGTH
    assert ranking(acc, ADAPTIVE)[0] == "WECHAT"


def test_a_partition_learns_its_kinds_from_its_accounts_messages() -> None:
    """adaptive: each message's sends and reads count for the kind its account had when it
    was planned (a first push, before any read, for none); the other strategies keep none."""
    p = Partition(config(strategy="adaptive", new_account_pushes=0))
    p.device("a1", "d1")
    p.profile("a1", wechat="ow-1")
    p.request("a1", "m1")  # no read yet: of no kind
    p.advance(0.5)
    p.read("a1", "m1", "WECHAT")
    assert p.tables.get(KINDS, kinds_key(0)) is None
    p.advance(1)
    second = p.request("a1", "m2")
    [channel] = {s["channel"] for s in sends(second) if s["device_id"] is None}
    p.advance(0.5)
    p.read("a1", "m2", channel)
    assert p.message("a1", "m2")["kind"] == "prompt:WECHAT"
    assert p.tables.get(KINDS, kinds_key(0)) == {f"prompt:WECHAT|{channel}": [1.0, 1.0]}

    seed = Partition(config(strategy="seed", new_account_pushes=0))
    seed.device("a1", "d1")
    seed.profile("a1", wechat="ow-1")
    for m in ("m1", "m2"):
        seed.request("a1", m)
        seed.advance(0.5)
        seed.read("a1", m, "WECHAT")
    assert seed.tables.get(KINDS, kinds_key(0)) is None

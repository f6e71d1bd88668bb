"""A replay reproduces its records: the same inputs at the same times give byte-identical
outputs (handlers take `now` from their cause, never from the clock or chance)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from schemas import Codec
from streams.domain.handlers import Effects, Rejected
from tests.unit.partition import Partition

CODEC = Codec()
ACCOUNTS = ("a1", "a2")
steps = st.lists(st.one_of(
    st.tuples(st.just("request"), st.sampled_from(ACCOUNTS), st.integers(0, 3),
              st.sampled_from(["LOW", "NORMAL", "HIGH", "URGENT"])),
    st.tuples(st.just("read"), st.sampled_from(ACCOUNTS), st.integers(0, 3),
              st.sampled_from(["APP", "WECHAT", "SMS"])),
    st.tuples(st.just("receipt"), st.sampled_from(ACCOUNTS), st.integers(0, 3), st.just("")),
    st.tuples(st.just("advance"), st.just(""), st.integers(1, 2500), st.just("")),
), max_size=40)


def run(script: list[tuple[str, str, int, str]]) -> list[bytes]:
    """Apply a script to a fresh partition (profiles and a device first); encoded outputs."""
    p = Partition()
    effects: list[Effects | None] = []
    rejected: list[str] = []
    for a in ACCOUNTS:
        effects += [p.profile(a, wechat=f"o-{a}", phone="+86138"), p.device(a, f"{a}-d")]
    for kind, account, n, extra in script:
        try:
            effects.append(step(p, kind, account, n, extra))
        except Rejected as exc:  # a dead letter, the same one each time
            effects.append(None)
            rejected.append(str(exc))
    return [CODEC.encode(o.record, o.value) for fx in effects if fx for o in fx.outputs] + [
        r.encode() for r in rejected]


def step(p: Partition, kind: str, account: str, n: int, extra: str) -> Effects | None:
    """One input (or the clock moving on, firing what came due)."""
    if kind == "request":
        return p.request(account, f"m{n}", importance=extra)
    if kind == "read":
        return p.read(account, f"m{n}", extra)
    if kind == "receipt":
        return p.receipt(account, f"m{n}", f"{account}-d")
    p.advance(n)
    fired = Effects()
    for due in sorted(d for d in p.dues if d.due_at <= p.now):
        p.dues.remove(due)
        fired.outputs += p.fire(due).outputs
    return fired


@settings(max_examples=150, deadline=None)
@given(steps)
def test_the_same_inputs_at_the_same_times_emit_byte_identical_records(script) -> None:
    assert run(script) == run(script)

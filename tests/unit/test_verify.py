"""verify's pure checks: plain records in, violations out."""

from __future__ import annotations

import re
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from connectors.clickhouse.tables import TABLES
from streams.verify.outcomes import Timing, one_outcome, provider_calls, terminal_outcomes
from streams.verify.privacy import acks_unforged, addresses, personal_data
from streams.verify.stored import (
    KEYS,
    campaigns_agree,
    messages_agree,
    record_key,
    routes_agree,
    stored_once,
)

T = Timing({"LOW": 3, "NORMAL": 3, "HIGH": 3, "URGENT": 3}, reach_grace=5, dispatch_hold=4,
           settle=1)
NOW = 1_000_000


def req(m: str, at: int = 0, account: str = "a") -> dict:
    return {"account_id": account, "message_id": m, "created_at": at}


def send(m: str, reason: str = "PRIMARY", channel: str = "SMS", at: int = 0, sid: str = "",
         device: str | None = None, account: str = "a") -> dict:
    return {"send_id": sid or f"{m}-{channel}-{reason}-{device}", "message_id": m,
            "account_id": account, "channel": channel, "device_id": device,
            "route": "XIAOMI" if device else None, "reason": reason, "importance": "HIGH",
            "sent_at": at}


def result(m: str, status: str, at: int = 0, detail: str = "x") -> dict:
    return {"account_id": "a", "message_id": m, "status": status, "at": at, "detail": detail,
            "send_id": None}


def esc(m: str, at: int, from_channel: str = "SMS") -> dict:
    return {"account_id": "a", "message_id": m, "from_channel": from_channel, "fired_at": at}


def outcome(sid: str, status: str = "ACCEPTED", attempts: int = 1) -> dict:
    return {"send_id": sid, "status": status, "attempts": attempts}


# -- promise 1 ---------------------------------------------------------------------------------

def test_each_way_a_message_ends_is_counted_and_none_is_a_violation():
    requests = [req(m) for m in "rexuq"]
    sends = [send("r"), send("e"), send("e", "ESCALATION", "APP", 3000), send("x"),
             send("q", "FANOUT")]
    escalations = [esc("e", 3000), esc("x", 3000)]
    results = [result("r", "READ", 1000), result("e", "READ", 4000),
               result("x", "EXHAUSTED", 3000), result("u", "UNREACHABLE", 5000)]
    check, ends = terminal_outcomes(requests, sends, escalations, results, NOW, T)
    assert check.violations == [] and check.checked == 5
    assert ends == {"read": 1, "escalated and read": 1, "exhausted": 1, "unreachable": 1,
                    "expired (sent, not read)": 1}


def test_a_lost_request_a_lost_deadline_and_contradictions_are_violations():
    requests = [req("lost"), req("deadline"), req("both"), req("noreason"), req("late")]
    sends = [send("deadline"), send("both", "FANOUT"), send("late")]
    results = [result("both", "UNREACHABLE"), result("noreason", "UNREACHABLE", detail=""),
               result("late", "READ", 1000)]
    check, _ = terminal_outcomes(requests, sends, [esc("late", 3000)], results, NOW, T)
    assert len(check.violations) == 5
    text = "\n".join(check.violations)
    for expected in ("a/lost: no send and no UNREACHABLE", "a/deadline: read deadline on SMS",
                     "a/both: UNREACHABLE and also", "a/noreason: UNREACHABLE without",
                     "a/late: escalated from SMS after it was read"):
        assert expected in text


def test_what_is_still_within_its_deadlines_is_pending_not_a_violation():
    requests = [req("new", NOW - 5_500), req("waiting", NOW - 1_000)]
    sends = [send("waiting", at=NOW - 1_000)]
    check, ends = terminal_outcomes(requests, sends, [], [], NOW, T)
    assert check.violations == [] and check.pending == 2 and ends["pending"] == 2
    check, _ = terminal_outcomes(requests, sends, [], [], NOW + 10_000, T)
    assert len(check.violations) == 2 and check.pending == 0


def test_a_read_stamped_after_the_deadline_without_its_escalation_is_a_violation():
    # however late the timer ran, the READ came after the deadline: the escalation was owed
    check, _ = terminal_outcomes([req("m")], [send("m")], [], [result("m", "READ", 3002)],
                                 NOW, T)
    assert [v.split(": ", 1)[1] for v in check.violations] == [
        "read deadline on SMS passed 997 s ago, neither read nor escalated"]
    on_time = [result("m", "READ", 3001)]
    escalated = ([esc("m", 3000)], [result("m", "READ", 3500)])
    for escalations, results in (([], on_time), escalated):
        check, ends = terminal_outcomes([req("m")], [send("m")], escalations, results, NOW, T)
        assert check.violations == [] and sum(ends.values()) == 1


histories = st.lists(st.sampled_from(["read", "esc", "exh", "unr", "sent"]), min_size=1,
                     max_size=8)


@given(histories, st.data())
def test_repeated_records_change_nothing(history, data):
    """At-least-once outputs: repeating any record gives the same verdict."""
    requests, sends, escalations, results = [], [], [], []
    for i, kind in enumerate(history):
        m = f"m{i}"
        requests.append(req(m))
        if kind == "unr":
            results.append(result(m, "UNREACHABLE"))
            continue
        sends.append(send(m, "FANOUT" if kind == "sent" else "PRIMARY"))
        if kind in ("esc", "exh"):
            escalations.append(esc(m, 3000))
        if kind == "read":
            results.append(result(m, "READ", 500))
        if kind == "exh":
            results.append(result(m, "EXHAUSTED", 3000))
    base = terminal_outcomes(requests, sends, escalations, results, NOW, T)
    again = [data.draw(st.lists(st.sampled_from(xs), max_size=3)) if xs else []
             for xs in (requests, sends, escalations, results)]
    twice = terminal_outcomes(*(xs + extra for xs, extra in zip(
        (requests, sends, escalations, results), again, strict=True)), NOW, T)
    assert base[0].violations == twice[0].violations == []
    assert base[1] == twice[1]


# -- promise 2 ---------------------------------------------------------------------------------

@given(st.integers(1, 20), st.data())
def test_one_outcome_per_send_and_each_broken_one_is_named(n, data):
    sends = [send(f"m{i}", "ORIGINAL_ROUTE", "APP", device="d", sid=f"s{i}") for i in range(n)]
    sends.append(send("m0", "PRIMARY", "APP", sid="account-level"))  # no provider send
    outcomes = [outcome(f"s{i}") for i in range(n)]
    assert one_outcome(sends + sends[:2], outcomes, NOW, T).violations == []
    gone = data.draw(st.integers(0, n - 1))
    check = one_outcome(sends, outcomes[:gone] + outcomes[gone + 1:], NOW, T)
    assert check.violations == [f"send s{gone} (APP ORIGINAL_ROUTE): no outcome 1000 s after it "
                                "was sent"]
    twice = data.draw(st.integers(0, n - 1))
    check = one_outcome(sends, outcomes + [outcome(f"s{twice}", "FAILED")], NOW, T)
    assert check.violations == [f"send s{twice}: 2 outcomes (ACCEPTED, FAILED)"]


def test_a_recent_send_without_outcome_is_pending_and_strangers_are_violations():
    recent = send("m", "ORIGINAL_ROUTE", "APP", NOW - 2_000, "s1", "d")
    check = one_outcome([recent], [outcome("ghost")], NOW, T)
    assert check.pending == 1
    assert check.violations == ["outcome for send ghost, which push.sends does not hold"]
    clash = {**recent, "device_id": "other"}
    assert "two different sends" in one_outcome([recent, clash], [outcome("s1")], NOW,
                                                T).violations[0]


def test_the_simulators_counts_show_a_second_call():
    sends = [send("m", "ORIGINAL_ROUTE", "APP", sid=s, device="d") for s in ("a1", "b2", "c3")]
    outcomes = [outcome("a1"), outcome("b2", attempts=3), outcome("c3")]
    fine = provider_calls({"a1": 1, "b2": 3, "c3": 1}, {"a1": 1, "b2": 1, "c3": 1}, sends,
                          outcomes)
    assert fine.violations == [] and fine.checked == 3
    bad = provider_calls({"a1": 2, "b2": 1, "c3": 2, "zz": 1}, {"a1": 2, "c3": 1}, sends,
                         outcomes)
    assert bad.violations == ["send a1: accepted by its provider 2 times",
                              "send c3: 2 provider calls, the dispatcher recorded 1 attempt(s)",
                              "send zz: called at the provider, not on push.sends"]


# -- promise 3 ---------------------------------------------------------------------------------

def test_keys_are_the_migrations_order_by():
    sql = "\n".join(p.read_text() for p in sorted(Path("connectors/clickhouse/migrations")
                                                  .glob("*.sql")))
    found = {}
    for name, body in re.findall(r"CREATE TABLE IF NOT EXISTS (\w+)(.*?);", sql, re.S):
        order = re.search(r"ORDER BY \(?([\w, ]+?)\)?\s*(TTL|$)", body.strip() + "\n", re.M)
        assert order, name
        found[name] = tuple(c.strip() for c in order.group(1).split(","))
    assert found == KEYS
    assert {t.name for t in TABLES.values()} == set(KEYS)


def test_record_key_follows_the_sinks_row():
    change = {"device_id": "d", "account_id": "a", "from_route": None, "to_route": "JPUSH",
              "success_rate": 0.5, "reason": "initial", "changed_at": 1234}
    assert record_key("device.route-changes", change) == ("d", "1234", "JPUSH")
    ack = {"message_id": "m", "account_id": "a", "channel": "APP", "kind": "READ",
           "device_id": None, "route": None, "send_id": None, "acked_at": 1}
    assert record_key("push.acks", ack) == ("APP", "READ", "a", "m", "", "")


keys = st.lists(st.text("abc", min_size=1, max_size=3), min_size=1, max_size=30)


@given(keys, st.data())
def test_stored_once_finds_each_lost_doubled_or_phantom_row(names, data):
    kafka = [((k,), 0, i) for i, k in enumerate(names)]  # repeats of a key: one row
    last = {k: (0, i) for i, k in enumerate(names)}
    rows = [((k,), p, o) for k, (p, o) in last.items()]
    sunk = {0: len(names)}
    assert stored_once("t", kafka, rows, sunk).violations == []
    assert stored_once("t", kafka, rows, {0: 0}).violations == []  # nothing committed yet
    victim = data.draw(st.sampled_from(sorted(last)))
    lost = stored_once("t", kafka, [r for r in rows if r[0] != (victim,)], sunk)
    assert len(lost.violations) == 1 and "is not in t" in lost.violations[0]
    behind = stored_once("t", kafka, [r for r in rows if r[0] != (victim,)],
                         {0: min(i for i, k in enumerate(names) if k == victim)})
    assert behind.violations == [] and behind.pending >= 1
    excused = stored_once("t", kafka, [r for r in rows if r[0] != (victim,)], sunk,
                          {(0, i) for i, k in enumerate(names) if k == victim})
    assert excused.violations == []
    doubled = stored_once("t", kafka, rows + [((victim,), *last[victim])], sunk)
    assert len(doubled.violations) == 1 and "stored 2 times" in doubled.violations[0]
    phantom = stored_once("t", kafka, rows + [(("zz",), 0, 99)], sunk)
    assert len(phantom.violations) == 1 and "holds no such record" in phantom.violations[0]


# -- promise 4 ---------------------------------------------------------------------------------

def decision(cid: str, targeted: int, acked: int, fallback: bool) -> dict:
    return {"campaign_id": cid, "targeted": targeted, "acked": acked, "fallback": fallback}


def summary(cid: str, targeted: int, acked: int, fallback: bool, **more) -> dict:
    row = {"campaign_id": cid, "targeted": targeted, "acked": acked, "fallback": fallback,
           "ratio": acked / targeted if targeted else 0.0, "threshold": 0.5,
           "fallback_sends": 0, "original_sends": targeted, "original_received": acked}
    return {**row, **more}


def test_campaigns_agree_and_each_disagreement_is_named():
    ok = campaigns_agree([decision("c", 4, 3, False)], [summary("c", 4, 3, False)])
    assert ok.violations == [] and ok.checked == 1
    bad = campaigns_agree(
        [decision("twice", 4, 1, True), decision("twice", 4, 2, False),
         decision("counts", 4, 3, False), decision("sends", 4, 3, False),
         decision("rule", 4, 1, False), decision("tally", 4, 3, False)],
        [summary("twice", 4, 1, True, fallback_sends=3), summary("counts", 4, 2, False),
         summary("sends", 4, 3, False, fallback_sends=1), summary("rule", 4, 1, False),
         summary("tally", 4, 3, False, original_sends=3)])
    text = "\n".join(bad.violations)
    for expected in ("twice: decided 2 different ways", "counts: ClickHouse 4/2",
                     "sends: 1 fallback sends", "rule: ratio 0.25", "tally: tally 3/4 exceeds"):
        assert expected in text
    assert len(bad.violations) == 5


def test_messages_agree_with_the_reads_and_escalations_reported():
    results = [result("r", "READ", 0)]
    rows = [{"account_id": "a", "message_id": "r", "read": 1, "first_read_ms": 0,
             "escalated": 0},
            {"account_id": "a", "message_id": "e", "read": 0, "first_read_ms": None,
             "escalated": 1}]
    assert messages_agree(results, [esc("e", 1)], rows, NOW, 1000).violations == []
    bad = messages_agree([], [], rows, NOW, 1000)
    assert len(bad.violations) == 2
    recent = [{**rows[0], "first_read_ms": NOW - 10}]
    assert messages_agree([], [], recent, NOW, 1000).pending == 1


def change(rate: float, at: int = 100, reason: str = "INITIAL", route: str = "JPUSH") -> dict:
    return {"device_id": "d", "to_route": route, "success_rate": rate, "changed_at": at,
            "reason": reason}


def probe(i: int, receipt: int | None, route: str = "JPUSH", sent: int = 10) -> dict:
    return {"device_id": "d", "route": route, "send_id": f"p{i}", "sent_ms": sent,
            "receipt_ms": receipt}


@given(st.lists(st.one_of(st.none(), st.integers(0, 200)), min_size=1, max_size=10))
def test_a_first_route_rate_is_a_count_of_the_probes_and_receipts_clickhouse_holds(receipts):
    probes = [probe(i, r) for i, r in enumerate(receipts)]
    probes.append(probe(99, 50, sent=500))  # sent after the change: not in its window
    probes.append(probe(98, 50, route="GETUI"))  # another route
    by_then = sum(1 for r in receipts if r is not None and r <= 100)
    n = len(receipts)
    for k in range(by_then + 1):  # late receipts the router may not have counted yet
        assert routes_agree([change(k / n)], probes, 0).violations == []
    too_many = routes_agree([change(min(by_then + 1, n + 1) / n)], probes, 0)
    assert len(too_many.violations) == 1
    off = routes_agree([change((by_then - 0.5) / n)], probes, 0) if by_then else None
    assert off is None or "is no count" in off.violations[0]
    again = routes_agree([change(0.0, reason="REPROBE_BELOW_MIN")], probes, 0)
    assert again.violations == [] and again.checked == 0 and "1 re-probe" in again.note


# -- promise 5 ---------------------------------------------------------------------------------

def ack(sid: str | None, **change) -> dict:
    base = {"send_id": sid, "kind": "RECEIPT", "account_id": "a", "message_id": "m",
            "channel": "APP", "device_id": "d"}
    return {**base, **change}


def test_an_ack_must_match_the_send_it_names():
    sends = [send("m", "ORIGINAL_ROUTE", "APP", sid="s1", device="d")]
    ok = acks_unforged([ack("s1"), ack(None)], sends)
    assert ok.violations == [] and ok.checked == 1 and "1 acks without send_id" in ok.note
    bad = acks_unforged([ack("nope"), ack("s1", account_id="b"), ack("s1", device_id="x")],
                        sends)
    assert bad.violations == ["RECEIPT ack for send nope: no such send",
                              "RECEIPT ack for send s1: account_id differ from the send's",
                              "RECEIPT ack for send s1: device_id differ from the send's"]


@given(st.lists(st.binary(max_size=40), max_size=5), st.sampled_from(["+8613812345678",
                                                                     "o-wechat-123",
                                                                     "x@example.com"]))
def test_an_address_anywhere_is_found_and_never_shown(noise, address):
    found = addresses([{"phone": "+8613812345678", "wechat_openid": "o-wechat-123",
                        "email": "x@example.com"}, {"phone": "123", "email": None,
                                                     "wechat_openid": None}])
    assert found == {"+8613812345678", "o-wechat-123", "x@example.com"}
    clean = [("topic x", b"".join(noise).replace(b"@", b"")), ("table y", b"nothing")]
    assert personal_data(found, clean).violations == [] or any(
        a.encode() in b"".join(noise) for a in found)
    leak = personal_data(found, clean + [("topic z", b"..." + address.encode() + b"...")])
    assert len(leak.violations) >= 1
    assert all(address not in v for v in leak.violations)
    assert any(v.endswith("in topic z") for v in leak.violations)

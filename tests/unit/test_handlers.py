"""Unit tests of streams.domain.handlers: plain records in, output records and deadlines out."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.domain import escalation as esc
from streams.domain import handlers as h
from streams.domain.channels import send_id
from streams.domain.deadlines import Due, due_of, timer_key, timer_writes
from streams.domain.probing import ProbeConfig
from streams.domain.records import ms
from streams.domain.state import message_key
from tests.unit.partition import (
    DEADLINES,
    T0,
    XIAOMI_ROUTES,
    Partition,
    brief,
    channel_send,
    config,
    of,
    outputs,
    read_history,
    sends,
)

ALL_ADDRESSES = {"wechat": "ow-1", "phone": "+86-1", "email": "a@example.org"}


def reachable(p: Partition, account_id: str = "a1", *, device: bool = True,
              **addresses: str) -> None:
    """Register device d1 (unless told not to) and a profile with the given addresses."""
    if device:
        p.device(account_id, "d1")
    if addresses:
        p.profile(account_id, **addresses)


def established(**kw: Any) -> Partition:
    """A partition whose accounts are established from their first push."""
    return Partition(config(new_account_pushes=0, **kw))


def escalations(*effects: h.Effects) -> list[dict[str, Any]]:
    """The Escalation values among some effects."""
    return of("Escalation", *effects)


def results(*effects: h.Effects) -> list[dict[str, Any]]:
    """The DeliveryResult values among some effects."""
    return of("DeliveryResult", *effects)


# --- Method A: new accounts ---------------------------------------------------------------------


def test_a_new_account_gets_every_enabled_channel_until_it_is_established_then_the_primary_only(
) -> None:
    p = Partition(config(new_account_pushes=2))
    reachable(p, wechat="ow-1", phone="+86-1")

    first = p.request("a1", "m1")
    assert sends(first) == [
        channel_send("a1", "m1", "APP", "FANOUT", T0),
        channel_send("a1", "m1", "APP", "ORIGINAL_ROUTE", T0, device_id="d1", route="XIAOMI"),
        channel_send("a1", "m1", "WECHAT", "FANOUT", T0),
        channel_send("a1", "m1", "SMS", "FANOUT", T0),
    ]
    assert outputs(first) == [o for o in outputs(first) if o.record == "ChannelSend"]
    assert [kind for kind, _, _ in p.dues_of("a1", "m1")] == ["EXPIRE", "RECEIPT"]

    p.advance(1)
    second = p.request("a1", "m2")
    assert brief(sends(second)) == [("APP", None, None, "FANOUT", 0),
                                    ("APP", "d1", "XIAOMI", "ORIGINAL_ROUTE", 0),
                                    ("WECHAT", None, None, "FANOUT", 0),
                                    ("SMS", None, None, "FANOUT", 0)]
    assert of("AccountLifecycle", second) == [
        {"account_id": "a1", "lifecycle": "ESTABLISHED", "pushes": 2, "changed_at": ms(p.now)}]
    assert all(kind != "READ" for kind, _, _ in p.dues_of("a1", "m2"))

    p.advance(1)
    third = p.request("a1", "m3")
    assert sends(third) == [
        channel_send("a1", "m3", "APP", "PRIMARY", p.now),
        channel_send("a1", "m3", "APP", "ORIGINAL_ROUTE", p.now, device_id="d1", route="XIAOMI"),
    ]
    assert of("AccountLifecycle", third) == []
    assert p.due("READ", "a1", "m3").due_at == p.now + DEADLINES["NORMAL"]


@pytest.mark.parametrize("pushes", [1, 2, 5])
def test_fan_out_lasts_exactly_new_account_pushes_and_the_lifecycle_changes_once(pushes) -> None:
    p = Partition(config(new_account_pushes=pushes))
    reachable(p, device=False, wechat="ow-1", email="a@example.org")
    effects = []
    for i in range(pushes + 3):
        p.advance(1)
        effects.append(p.request("a1", f"m{i}"))
    reasons = [sorted({s["reason"] for s in sends(fx)}) for fx in effects]
    assert reasons == [["FANOUT"]] * pushes + [["PRIMARY"]] * 3
    assert [len(sends(fx)) for fx in effects] == [2] * pushes + [1] * 3
    lifecycle = of("AccountLifecycle", *effects)
    assert [(v["lifecycle"], v["pushes"]) for v in lifecycle] == [("ESTABLISHED", pushes)]
    assert of("AccountLifecycle", effects[pushes - 1]) == lifecycle


def test_with_new_account_pushes_zero_the_first_push_is_already_on_the_primary() -> None:
    p = established()
    reachable(p, device=False, wechat="ow-1", phone="+86-1")
    fx = p.request("a1", "m1")
    assert sends(fx) == [channel_send("a1", "m1", "WECHAT", "PRIMARY", T0)]
    assert [(v["lifecycle"], v["pushes"]) for v in of("AccountLifecycle", fx)] == [
        ("ESTABLISHED", 1)]
    assert of("AccountLifecycle", p.request("a1", "m2")) == []


def test_the_importance_of_a_request_selects_its_read_deadline() -> None:
    p = established()
    reachable(p, device=False, wechat="ow-1")
    for importance, deadline in DEADLINES.items():
        fx = p.request("a1", f"m-{importance}", importance=importance)
        assert sends(fx)[0]["importance"] == importance
        assert p.due("READ", "a1", f"m-{importance}").due_at == T0 + deadline


# --- Method A: learning from READ acks -----------------------------------------------------------


@pytest.mark.parametrize(("k1", "k2", "primary", "secondary"), [
    (1.0, 3.0, "SMS", "WECHAT"),     # SMS 3 + 9 = 12 > WECHAT 5 + 6 = 11
    (3.0, 1.0, "WECHAT", "SMS"),     # WECHAT 15 + 2 = 17 > SMS 9 + 3 = 12
    (1.0, 0.0, "WECHAT", "SMS"),     # feedback only: 5 > 3
    (0.0, 1.0, "SMS", "WECHAT"),     # first feedback only: 3 > 2
    (1.0, 2.0, "WECHAT", "SMS"),     # 9 = 9: a tie goes by the channel order
])
def test_read_acks_teach_the_primary_by_k1_feedback_plus_k2_first(k1, k2, primary,
                                                                  secondary) -> None:
    p = Partition(config(new_account_pushes=5, k1=k1, k2=k2))
    read_history(p)
    account = p.account("a1")
    assert account is not None
    assert account["feedback_count"] == {"SMS": 3, "WECHAT": 5}
    assert account["first_feedback"] == {"SMS": 3, "WECHAT": 2}

    p.advance(1)
    fx = p.request("a1", "m1")
    assert sends(fx) == [channel_send("a1", "m1", primary, "PRIMARY", p.now)]
    escalated = p.fire(p.due("READ", "a1", "m1"))
    assert [(e["from_channel"], e["to_channel"]) for e in escalations(escalated)] == [
        (primary, secondary)]
    assert sends(escalated) == [channel_send("a1", "m1", secondary, "ESCALATION", p.now,
                                             attempt=1)]


def test_a_read_stamped_before_a_send_that_fired_already_is_counted_late() -> None:
    # the READ's record reached the worker after the escalation it came before had fired (it
    # took longer to reach the broker than PUSHCASCADE_INPUT_SLACK): counted for the operator
    p = established()
    reachable(p, wechat="ow-1")
    primary = sends(p.request("a1", "m1"))[0]["channel"]
    p.advance(1)
    stamped = p.now
    assert escalations(p.fire(p.due("READ", "a1", "m1")))  # fired; the READ on its way
    p.now = stamped
    late = p.read("a1", "m1", primary)
    assert late.counts["read_after_send"] == 1 and results(late)[0]["status"] == "READ"
    p.request("a1", "m2")
    p.advance(1)
    assert p.read("a1", "m2", primary).counts["read_after_send"] == 0  # in time


def test_a_read_stamped_after_its_deadline_comes_after_the_escalation_the_timer_owed() -> None:
    # the worker ran late: the deadline's timer had not fired when a READ stamped after it
    # came; the READ does not cancel it, the escalation is made at the deadline's own time
    p = established()
    reachable(p, wechat="ow-1")
    primary = sends(p.request("a1", "m1"))[0]["channel"]
    due = p.due("READ", "a1", "m1")
    p.now = due.due_at + 0.5
    late = p.read("a1", "m1", primary)
    assert late.counts["deadline_before_read"] == 1
    assert [(e["from_channel"], e["deadline_at"], e["fired_at"]) for e in escalations(late)] == [
        (primary, ms(due.due_at), ms(due.due_at))]
    assert sends(late) == [channel_send("a1", "m1", "WECHAT", "ESCALATION", due.due_at,
                                        attempt=1)]
    assert [(r["status"], r["channel"], r["at"]) for r in results(late)] == [
        ("READ", primary, ms(p.now))]
    assert outputs(p.fire(due)) == []  # the timer, when it comes, is stale
    in_time = p.request("a1", "m2")
    assert in_time and p.read("a1", "m2", primary).counts["deadline_before_read"] == 0


@settings(max_examples=150, deadline=None)
@given(strategy=st.sampled_from(["seed", "fixed-fallback", "adaptive", "blast"]),
       importance=st.sampled_from(sorted(DEADLINES)),
       delay=st.floats(min_value=0.0, max_value=4 * max(DEADLINES.values())),
       channel=st.sampled_from(["APP", "WECHAT", "SMS"]))
def test_what_a_read_decides_does_not_depend_on_how_late_the_timers_fire(
        strategy: str, importance: str, delay: float, channel: str) -> None:
    # a worker on time fires every read deadline as it comes; a late one fires none before the
    # READ: the outputs and the state come out the same (a replay makes the same choice)
    worlds = []
    for on_time in (True, False):
        p = Partition(config(new_account_pushes=0, strategy=strategy))
        reachable(p, **ALL_ADDRESSES)
        out = [p.request("a1", "m1", importance=importance)]
        read_at = round(p.now + delay, 3)
        while on_time and (p.message("a1", "m1") or {}).get("deadline_at") is not None \
                and p.message("a1", "m1")["deadline_at"] < read_at:
            out.append(p.fire(p.due("READ", "a1", "m1")))
        p.now = read_at
        out.append(p.read("a1", "m1", channel))
        out += [p.fire(d) for d in list(p.dues) if d.kind == "READ"]
        worlds.append(([(o.topic, o.value) for fx in out for o in fx.outputs], p.tables.data))
    assert worlds[0] == worlds[1]


def test_the_first_read_of_a_message_is_reported_and_counts_as_first_feedback_once() -> None:
    p = established()
    reachable(p, wechat="ow-1")
    p.request("a1", "m1")  # PRIMARY APP
    p.advance(5)
    first = p.read("a1", "m1", "APP", device_id="d1")
    assert results(first) == [{
        "message_id": "m1", "account_id": "a1", "status": "READ", "channel": "APP",
        "device_id": "d1", "route": None, "send_id": None, "detail": "", "at": ms(p.now)}]
    again = p.read("a1", "m1", "APP", device_id="d1")
    assert outputs(again) == [] and again.counts["duplicate_ack"] == 1
    other = p.read("a1", "m1", "WECHAT")
    assert outputs(other) == []
    account = p.account("a1")
    assert account is not None
    assert account["feedback_count"] == {"APP": 1, "WECHAT": 1}
    assert account["first_feedback"] == {"APP": 1}


def test_a_read_before_the_deadline_makes_the_read_deadline_stale() -> None:
    p = established()
    reachable(p, device=False, wechat="ow-1", phone="+86-1")
    p.request("a1", "m1", importance="URGENT")
    due = p.due("READ", "a1", "m1")
    p.advance(DEADLINES["URGENT"] - 1)
    p.read("a1", "m1", "WECHAT")
    fx = p.fire(due)
    assert fx.outputs == [] and fx.dues == []
    assert fx.counts["deadline_stale"] == 1
    message = p.message("a1", "m1")
    assert message is not None
    assert message["sent"] == ["WECHAT"] and not message["escalated"]


def test_a_read_deletes_its_read_deadline_from_the_timers_table_at_once() -> None:
    # the timers table is derived from each write of a message: the READ's write of the
    # message deletes the read deadline's timer in the same batch (nothing waits to fire stale)
    p = established()
    reachable(p, device=False, wechat="ow-1", phone="+86-1")
    p.request("a1", "m1", importance="URGENT")
    sent = p.message("a1", "m1")
    due = p.due("READ", "a1", "m1")
    p.read("a1", "m1", "WECHAT")
    read = p.message("a1", "m1")
    writes = timer_writes(h.pending_work(sent)[0], h.pending_work(read)[0])
    assert writes[timer_key(due)] is None
    assert [due_of(k, v).kind for k, v in writes.items() if v is not None] == []
    assert h.waits_index(sent, read) == []


def test_the_read_deadline_escalates_exactly_once_to_the_secondary() -> None:
    p = established()
    reachable(p, device=False, wechat="ow-1", phone="+86-1")
    p.request("a1", "m1", importance="HIGH")
    due = p.due("READ", "a1", "m1")
    assert due.due_at == T0 + DEADLINES["HIGH"]

    fx = p.fire(due)
    assert escalations(fx) == [{
        "message_id": "m1", "account_id": "a1", "from_channel": "WECHAT", "to_channel": "SMS",
        "deadline_at": ms(due.due_at), "fired_at": ms(p.now)}]
    assert sends(fx) == [channel_send("a1", "m1", "SMS", "ESCALATION", p.now, attempt=1,
                                      importance="HIGH")]
    assert fx.dues == []  # an escalation has no read deadline of its own

    p.advance(1)
    again = p.fire(due)
    assert again.outputs == [] and again.counts["deadline_stale"] == 1
    # a READ on the escalation channel still teaches the account
    p.read("a1", "m1", "SMS")
    account = p.account("a1")
    assert account is not None and account["first_feedback"] == {"SMS": 1}


def test_a_read_deadline_with_no_channel_left_is_exhausted_once() -> None:
    p = established()
    reachable(p, device=False, wechat="ow-1")
    p.request("a1", "m1")
    due = p.due("READ", "a1", "m1")
    fx = p.fire(due)
    assert escalations(fx) == [{
        "message_id": "m1", "account_id": "a1", "from_channel": "WECHAT", "to_channel": None,
        "deadline_at": ms(due.due_at), "fired_at": ms(p.now)}]
    assert [(r["status"], r["detail"]) for r in results(fx)] == [
        ("EXHAUSTED", "read deadline passed; no channel left")]
    assert sends(fx) == []
    assert p.fire(due).outputs == []


def test_an_escalation_to_app_reaches_each_device_as_attempt_one_with_a_receipt_deadline(
) -> None:
    p = established()
    reachable(p, wechat="ow-1")
    p.settings("a1", "WECHAT", "APP")
    p.request("a1", "m1")
    fx = p.fire(p.due("READ", "a1", "m1"))
    assert sends(fx) == [
        channel_send("a1", "m1", "APP", "ESCALATION", p.now, attempt=1),
        channel_send("a1", "m1", "APP", "ORIGINAL_ROUTE", p.now, attempt=1, device_id="d1",
                     route="XIAOMI"),
    ]
    receipt_due = p.due("RECEIPT", "a1", "m1", "d1")
    assert receipt_due.due_at == p.now + 30.0
    fallback = p.fire(receipt_due)
    assert sends(fallback) == [channel_send("a1", "m1", "APP", "FALLBACK_ROUTE", p.now,
                                            attempt=2, device_id="d1", route="JPUSH")]


# --- Method A: one message per account ----------------------------------------------------------


def test_a_repeated_request_for_the_same_account_is_the_same_message() -> None:
    p = established()
    reachable(p, wechat="ow-1")
    p.request("a1", "m1")
    before = p.message("a1", "m1"), p.account("a1")
    p.advance(3)
    fx = p.request("a1", "m1", importance="URGENT")
    assert fx.outputs == [] and fx.dues == [] and fx.waits == []
    assert fx.counts["duplicate_request"] == 1
    assert (p.message("a1", "m1"), p.account("a1")) == before


def test_the_same_message_id_for_two_accounts_is_two_independent_messages() -> None:
    p = established()
    for account_id in ("a1", "a2"):
        p.device(account_id, "d1")
        p.profile(account_id, wechat="ow")
    one, two = p.request("a1", "m1"), p.request("a2", "m1")
    assert sends(one) == [
        channel_send("a1", "m1", "APP", "PRIMARY", T0),
        channel_send("a1", "m1", "APP", "ORIGINAL_ROUTE", T0, device_id="d1", route="XIAOMI")]
    assert sends(two) == [
        channel_send("a2", "m1", "APP", "PRIMARY", T0),
        channel_send("a2", "m1", "APP", "ORIGINAL_ROUTE", T0, device_id="d1", route="XIAOMI")]
    assert len({s["send_id"] for s in sends(one, two)}) == 4

    p.receipt("a1", "m1", "d1")
    p.read("a1", "m1", "APP", "d1")
    assert p.fire(p.due("RECEIPT", "a1", "m1", "d1")).outputs == []
    assert p.fire(p.due("READ", "a1", "m1")).outputs == []
    # a2's copy heard nothing of a1's acks: it falls back and escalates
    assert brief(sends(p.fire(p.due("RECEIPT", "a2", "m1", "d1")))) == [
        ("APP", "d1", "JPUSH", "FALLBACK_ROUTE", 1)]
    assert [(e["account_id"], e["to_channel"])
            for e in escalations(p.fire(p.due("READ", "a2", "m1")))] == [("a2", "WECHAT")]
    a2 = p.account("a2")
    assert a2 is not None and a2["feedback_count"] == {}


# --- acks that cannot be applied -----------------------------------------------------------------


def test_an_ack_for_an_unknown_account_is_rejected() -> None:
    p = Partition()
    with pytest.raises(h.Rejected, match="unknown account"):
        p.read("nobody", "m1", "APP")
    with pytest.raises(h.Rejected, match="unknown account"):
        p.receipt("nobody", "m1", "d1")


def test_a_read_for_an_unknown_message_is_rejected() -> None:
    p = established()
    reachable(p, device=False, wechat="ow-1")
    with pytest.raises(h.Rejected, match="unknown message"):
        p.read("a1", "m-never", "WECHAT")
    account = p.account("a1")
    assert account is not None and account["feedback_count"] == {}


def test_a_read_naming_account_b_for_account_a_message_is_rejected_and_changes_nothing() -> None:
    p = established()
    for account_id in ("a", "b"):
        p.profile(account_id, wechat="ow", phone="+86")
    p.request("a", "m-a")
    p.request("b", "m-b")
    with pytest.raises(h.Rejected, match="unknown message 'm-a' of account 'b'"):
        p.read("b", "m-a", "WECHAT")
    for account_id in ("a", "b"):
        account = p.account(account_id)
        assert account is not None and account["feedback_count"] == {}
    # a's message was not read: it escalates
    assert [e["to_channel"] for e in escalations(p.fire(p.due("READ", "a", "m-a")))] == ["SMS"]


# --- Method A: the user's override ---------------------------------------------------------------


def test_the_override_wins_over_the_learned_ranking_until_it_is_cleared() -> None:
    p = established()
    reachable(p, wechat="ow-1", phone="+86-1")  # by order: APP, WECHAT, SMS
    p.settings("a1", "SMS", "WECHAT")
    fx = p.request("a1", "m1")
    assert sends(fx) == [channel_send("a1", "m1", "SMS", "PRIMARY", T0)]
    assert [(e["from_channel"], e["to_channel"])
            for e in escalations(p.fire(p.due("READ", "a1", "m1")))] == [("SMS", "WECHAT")]

    p.settings("a1", None, None)
    account = p.account("a1")
    assert account is not None and (account["primary"], account["secondary"]) == (None, None)
    fx = p.request("a1", "m2")
    assert brief(sends(fx)) == [("APP", None, None, "PRIMARY", 0),
                                ("APP", "d1", "XIAOMI", "ORIGINAL_ROUTE", 0)]
    assert [e["to_channel"] for e in escalations(p.fire(p.due("READ", "a1", "m2")))] == [
        "WECHAT"]


def test_an_override_of_the_secondary_alone_keeps_the_learned_primary() -> None:
    p = established()
    reachable(p, device=False, wechat="ow-1", phone="+86-1", email="a@example.org")
    p.settings("a1", None, "EMAIL")
    assert brief(sends(p.request("a1", "m1"))) == [("WECHAT", None, None, "PRIMARY", 0)]
    assert [e["to_channel"] for e in escalations(p.fire(p.due("READ", "a1", "m1")))] == [
        "EMAIL"]


def test_an_override_naming_a_channel_that_is_not_enabled_falls_back_to_the_learned_one() -> None:
    p = established()
    reachable(p, device=False, wechat="ow-1", phone="+86-1")
    p.settings("a1", "EMAIL", "SMS")
    assert brief(sends(p.request("a1", "m1"))) == [("WECHAT", None, None, "PRIMARY", 0)]
    assert [e["to_channel"] for e in escalations(p.fire(p.due("READ", "a1", "m1")))] == ["SMS"]


# --- Method B: devices and routes ----------------------------------------------------------------


def test_a_registered_device_enables_app_and_gets_the_push_on_its_original_route() -> None:
    p = established()
    registered = p.device("a1", "d1", manufacturer="HUAWEI Technologies",
                          routes=("HUAWEI", "FCM"))
    assert {o.value["reason"] for o in registered.outputs} <= {"PROBE"}
    account = p.account("a1")
    assert account is not None and account["devices"] == ["d1"]
    p.advance(2)
    fx = p.request("a1", "m1", importance="URGENT")
    assert sends(fx) == [
        channel_send("a1", "m1", "APP", "PRIMARY", p.now, importance="URGENT"),
        channel_send("a1", "m1", "APP", "ORIGINAL_ROUTE", p.now, device_id="d1",
                     route="HUAWEI", importance="URGENT"),
    ]
    assert sorted(p.dues_of("a1", "m1")) == sorted([
        ("EXPIRE", None, round(p.now + 20 + 1000 + 30 + 5000, 3)),
        ("READ", None, p.now + DEADLINES["URGENT"]),
        ("RECEIPT", "d1", p.now + 30.0),
    ])


def test_an_unmapped_manufacturer_gets_the_default_original_route_and_is_counted() -> None:
    p = established()
    fx = p.device("a1", "d1", manufacturer="Acme", model="Phone 1", routes=("FCM", "JPUSH"))
    assert fx.counts["unmapped_manufacturer"] == 1
    assert brief(sends(p.request("a1", "m1")))[1] == ("APP", "d1", "FCM", "ORIGINAL_ROUTE", 0)


def test_a_push_for_chosen_devices_reaches_only_those() -> None:
    p = established()
    for device_id in ("d1", "d2", "d3"):
        p.device("a1", device_id)
    fx = p.request("a1", "m1", device_ids=("d2", "d9"))
    assert brief(sends(fx)) == [("APP", None, None, "PRIMARY", 0),
                                ("APP", "d2", "XIAOMI", "ORIGINAL_ROUTE", 0)]
    assert [d for kind, d, _ in p.dues_of("a1", "m1") if kind == "RECEIPT"] == ["d2"]


def test_an_unregistered_device_disables_app_and_gets_nothing() -> None:
    p = established()
    reachable(p, wechat="ow-1")
    p.device("a1", "d1", active=False)
    account = p.account("a1")
    assert account is not None and account["devices"] == []
    assert p.device_state("a1", "d1") is None
    assert brief(sends(p.request("a1", "m1"))) == [("WECHAT", None, None, "PRIMARY", 0)]


def test_a_device_unregistered_before_its_receipt_deadline_is_reported_failed() -> None:
    p = established()
    reachable(p, wechat="ow-1")
    p.request("a1", "m1")
    p.device("a1", "d1", active=False)
    fx = p.fire(p.due("RECEIPT", "a1", "m1", "d1"))
    assert sends(fx) == []
    assert [(r["status"], r["device_id"], r["route"]) for r in results(fx)] == [
        ("FAILED", "d1", "XIAOMI")]


def test_a_profile_without_an_address_disables_its_channel() -> None:
    p = established()
    reachable(p, device=False, wechat="ow-1", phone="+86-1")
    p.profile("a1", phone="+86-1")
    account = p.account("a1")
    assert account is not None and account["addresses"] == ["SMS"]
    assert brief(sends(p.request("a1", "m1"))) == [("SMS", None, None, "PRIMARY", 0)]


def test_addresses_themselves_are_never_stored() -> None:
    p = Partition()
    p.profile("a1", **ALL_ADDRESSES)
    stored = repr(p.tables.data)
    assert all(address not in stored for address in ALL_ADDRESSES.values())


def test_a_receipt_before_the_deadline_makes_the_receipt_deadline_stale() -> None:
    p = established()
    reachable(p)
    p.request("a1", "m1")
    due = p.due("RECEIPT", "a1", "m1", "d1")
    p.advance(29)
    assert p.receipt("a1", "m1", "d1").counts["receipt_counted"] == 1
    fx = p.fire(due)
    assert fx.outputs == [] and fx.counts["deadline_stale"] == 1
    device = p.device_state("a1", "d1")
    assert device is not None
    assert (device["stats"]["XIAOMI"]["sends"], device["stats"]["XIAOMI"]["receipts"]) == (1, 1)


def test_the_receipt_deadline_resends_once_on_the_best_alternative_as_the_next_attempt() -> None:
    p = established()
    reachable(p)
    p.request("a1", "m1")
    due = p.due("RECEIPT", "a1", "m1", "d1")
    fx = p.fire(due)
    # both alternatives are unmeasured (same prior): registration order decides
    assert sends(fx) == [channel_send("a1", "m1", "APP", "FALLBACK_ROUTE", p.now, attempt=1,
                                      device_id="d1", route="JPUSH")]
    assert outputs(fx) == [o for o in fx.outputs if o.value["reason"] == "FALLBACK_ROUTE"]
    assert fx.dues == []
    again = p.fire(due)
    assert sends(again) == [] and again.counts["deadline_stale"] == 1
    # a late receipt for the original send still settles the delivery, and sends nothing
    p.advance(1)
    assert sends(p.receipt("a1", "m1", "d1")) == []


def test_a_receipt_stamped_after_its_deadline_comes_after_the_fallback_the_timer_owed() -> None:
    p = established()
    reachable(p)
    p.request("a1", "m1")
    due = p.due("RECEIPT", "a1", "m1", "d1")
    p.now = due.due_at + 1
    late = p.receipt("a1", "m1", "d1")
    assert late.counts["deadline_before_receipt"] == 1 and late.counts["receipt_counted"] == 1
    assert sends(late) == [channel_send("a1", "m1", "APP", "FALLBACK_ROUTE", due.due_at,
                                        attempt=1, device_id="d1", route="JPUSH")]
    assert outputs(p.fire(due)) == []


@settings(max_examples=100, deadline=None)
@given(delay=st.floats(min_value=0.0, max_value=90.0), routes=st.sampled_from(
    [XIAOMI_ROUTES, ("XIAOMI",)]), read=st.booleans())
def test_what_a_receipt_decides_does_not_depend_on_how_late_the_timers_fire(
        delay: float, routes: tuple[str, ...], read: bool) -> None:
    # as for READs: a worker on time falls back at the receipt deadline, a late one when the
    # receipt stamped after it comes; the same outputs and state either way
    worlds = []
    for on_time in (True, False):
        p = established()
        p.device("a1", "d1", routes=routes)
        p.profile("a1", wechat="ow-1")
        out = [p.request("a1", "m1")]
        at = round(p.now + delay, 3)
        if on_time:
            out += [p.fire(d) for d in sorted(p.dues) if d.due_at < at]
        p.now = at
        out.append(p.receipt("a1", "m1", "d1"))
        if read:
            out.append(p.read("a1", "m1", "APP", device_id="d1"))
        out += [p.fire(d) for d in sorted(p.dues)]
        worlds.append(([(o.topic, o.value) for fx in out for o in fx.outputs], p.tables.data))
    assert worlds[0] == worlds[1]


def test_the_fallback_goes_to_the_alternative_with_the_best_measured_success_rate() -> None:
    probe = ProbeConfig(probe_count_first=2, per_device_probes_per_hour=1000.0,
                        global_probes_per_second=1000.0, probe_timeout_s=10.0,
                        max_probes_per_plan=10)
    p = established(probe=probe)
    probes = sends(p.device("a1", "d1"), probes=True)
    assert [(s["route"], s["reason"]) for s in probes] == [
        ("JPUSH", "PROBE"), ("FCM", "PROBE"), ("JPUSH", "PROBE"), ("FCM", "PROBE")]
    for s in probes:  # FCM answers every probe, JPUSH none
        if s["route"] == "FCM":
            p.receipt("a1", s["message_id"], "d1", sid=s["send_id"])
    p.advance(11)  # JPUSH's probes are lost now
    changed = p.request("a1", "m1")
    assert [(c["from_route"], c["to_route"], c["success_rate"], c["reason"])
            for c in of("RouteChange", changed)] == [(None, "FCM", 1.0, "INITIAL")]
    fx = p.fire(p.due("RECEIPT", "a1", "m1", "d1"))
    assert brief(sends(fx)) == [("APP", "d1", "FCM", "FALLBACK_ROUTE", 1)]


def test_a_device_without_an_alternative_route_fails_instead_of_falling_back() -> None:
    p = established()
    p.device("a1", "d1", routes=("XIAOMI",))
    p.request("a1", "m1")
    fx = p.fire(p.due("RECEIPT", "a1", "m1", "d1"))
    assert sends(fx) == []
    assert [(r["status"], r["channel"], r["device_id"], r["route"]) for r in results(fx)] == [
        ("FAILED", "APP", "d1", "XIAOMI")]
    assert p.fire(p.due("RECEIPT", "a1", "m1", "d1")).outputs == []


def test_a_receipt_naming_another_accounts_device_is_not_counted() -> None:
    p = established()
    p.device("a1", "d1")
    p.device("a2", "d2")
    p.device("a2", "d1")  # the same device id under another account is another device
    p.request("a1", "m1")
    p.request("a2", "m1")
    a2_d2 = send_id("a2", "m1", "APP", "d2", 0)
    a2_d1 = send_id("a2", "m1", "APP", "d1", 0)
    assert p.receipt("a1", "m1", "d2", sid=a2_d2).counts["receipt_unknown_device"] == 1
    assert p.receipt("a1", "m1", "d1", sid=a2_d1).counts["receipt_unknown_send"] == 1
    for device_id in ("d1", "d2"):
        state = p.device_state("a2", device_id)
        assert state is not None and state["stats"]["XIAOMI"]["receipts"] == 0
    state = p.device_state("a1", "d1")
    assert state is not None and state["stats"]["XIAOMI"]["receipts"] == 0
    # no delivery was settled by those: all three fall back
    fallbacks = [
        brief(sends(p.fire(p.due("RECEIPT", a, "m1", d))))
        for a, d in (("a1", "d1"), ("a2", "d1"), ("a2", "d2"))]
    assert fallbacks == [[("APP", "d1", "JPUSH", "FALLBACK_ROUTE", 1)],
                         [("APP", "d1", "JPUSH", "FALLBACK_ROUTE", 1)],
                         [("APP", "d2", "JPUSH", "FALLBACK_ROUTE", 1)]]


def test_a_receipt_for_another_message_of_the_same_device_does_not_settle_this_one() -> None:
    p = established()
    reachable(p)
    p.request("a1", "m1")
    p.request("a1", "m2")
    # names m2 but carries m1's send_id: the device received m1, not m2
    p.ack("a1", "m2", "APP", "RECEIPT", device_id="d1", sid=send_id("a1", "m1", "APP", "d1", 0))
    assert brief(sends(p.fire(p.due("RECEIPT", "a1", "m2", "d1")))) == [
        ("APP", "d1", "JPUSH", "FALLBACK_ROUTE", 1)]


def test_a_duplicate_receipt_is_counted_once() -> None:
    p = established()
    reachable(p)
    p.request("a1", "m1")
    assert p.receipt("a1", "m1", "d1").counts["receipt_counted"] == 1
    assert p.receipt("a1", "m1", "d1").counts["receipt_duplicate"] == 1
    state = p.device_state("a1", "d1")
    assert state is not None and state["stats"]["XIAOMI"]["receipts"] == 1


# --- reach grace ---------------------------------------------------------------------------------


def test_a_request_for_an_account_without_an_enabled_channel_waits_for_the_grace() -> None:
    p = Partition()
    fx = p.request("a1", "m1")
    assert fx.outputs == []
    assert [(d.kind, d.due_at) for d in fx.dues] == [
        ("EXPIRE", round(T0 + 20 + 3000 + 30 + 5000, 3)), ("GRACE", T0 + 20)]
    account = p.account("a1")
    assert account is not None and account["waiting"] == ["m1"] and account["pushes"] == 0


def test_a_profile_within_the_grace_sends_the_waiting_request_and_the_grace_is_stale() -> None:
    p = Partition(config(new_account_pushes=2))
    p.request("a1", "m1")
    grace = p.due("GRACE", "a1", "m1")
    p.advance(19)
    fx = p.profile("a1", wechat="ow-1", phone="+86-1")
    assert sends(fx) == [channel_send("a1", "m1", "WECHAT", "FANOUT", p.now),
                         channel_send("a1", "m1", "SMS", "FANOUT", p.now)]
    account = p.account("a1")
    assert account is not None and account["waiting"] == [] and account["pushes"] == 1
    stale = p.fire(grace)
    assert stale.outputs == [] and stale.counts["deadline_stale"] == 1


def test_an_established_account_waiting_for_a_channel_gets_the_primary_and_a_read_deadline(
) -> None:
    p = established()
    p.request("a1", "m1")
    p.request("a1", "m2", importance="URGENT")
    p.advance(10)
    fx = p.device("a1", "d1")
    assert brief(sends(fx)) == [("APP", None, None, "PRIMARY", 0),
                                ("APP", "d1", "XIAOMI", "ORIGINAL_ROUTE", 0),
                                ("APP", None, None, "PRIMARY", 0),
                                ("APP", "d1", "XIAOMI", "ORIGINAL_ROUTE", 0)]
    assert [s["message_id"] for s in sends(fx)] == ["m1", "m1", "m2", "m2"]
    assert p.due("READ", "a1", "m1").due_at == p.now + DEADLINES["NORMAL"]
    assert p.due("READ", "a1", "m2").due_at == p.now + DEADLINES["URGENT"]
    assert p.due("RECEIPT", "a1", "m2", "d1").due_at == p.now + 30.0
    assert p.fire(p.due("GRACE", "a1", "m1")).outputs == []


def test_without_a_profile_the_grace_deadline_reports_the_request_unreachable_once() -> None:
    p = Partition()
    p.request("a1", "m1")
    grace = p.due("GRACE", "a1", "m1")
    fx = p.fire(grace)
    assert outputs(fx) == [o for o in fx.outputs if o.record == "DeliveryResult"]
    assert results(fx) == [{
        "message_id": "m1", "account_id": "a1", "status": "UNREACHABLE", "channel": None,
        "device_id": None, "route": None, "send_id": None,
        "detail": "no enabled channel: no active device and no address", "at": ms(p.now)}]
    account = p.account("a1")
    assert account is not None and account["waiting"] == []
    assert p.fire(grace).outputs == []
    # a profile after the grace does not send the unreachable request
    p.advance(1)
    assert sends(p.profile("a1", wechat="ow-1")) == []


def test_a_fan_out_also_goes_out_on_a_channel_enabled_within_the_grace() -> None:
    p = Partition(config(new_account_pushes=3))
    reachable(p)
    p.request("a1", "m1")
    p.advance(5)
    fx = p.profile("a1", phone="+86-1")
    assert sends(fx) == [channel_send("a1", "m1", "SMS", "FANOUT", p.now)]
    assert fx.counts["late_channel"] == 1
    p.advance(16)  # 21 s after the request: past the grace
    late = p.profile("a1", phone="+86-1", email="a@example.org")
    assert sends(late) == []
    message = p.message("a1", "m1")
    assert message is not None and message["sent"] == ["APP", "SMS"]


def test_a_primary_push_is_not_sent_again_on_a_channel_enabled_within_the_grace() -> None:
    p = established()
    reachable(p, device=False, wechat="ow-1")
    p.request("a1", "m1")
    p.advance(5)
    assert sends(p.profile("a1", wechat="ow-1", phone="+86-1")) == []


@pytest.mark.parametrize("lifecycle_pushes", [0, 3])  # PRIMARY on APP, or a fan-out
def test_an_app_push_reaches_a_device_registered_within_the_grace_not_after(
        lifecycle_pushes) -> None:
    p = Partition(config(new_account_pushes=lifecycle_pushes))
    reachable(p)
    p.request("a1", "m1")
    p.advance(5)
    fx = p.device("a1", "d2", manufacturer="vivo", routes=("VIVO", "FCM"))
    assert sends(fx) == [channel_send("a1", "m1", "APP", "ORIGINAL_ROUTE", p.now,
                                      device_id="d2", route="VIVO")]
    assert fx.counts["late_device"] == 1
    assert p.due("RECEIPT", "a1", "m1", "d2").due_at == p.now + 30.0
    again = p.device("a1", "d2", manufacturer="vivo", routes=("VIVO", "FCM"))  # re-registration
    assert sends(again) == []
    p.advance(16)
    assert sends(p.device("a1", "d3")) == []
    message = p.message("a1", "m1")
    assert message is not None and sorted(message["deliveries"]) == ["d1", "d2"]


def test_a_push_for_chosen_devices_reaches_a_chosen_device_registered_within_the_grace() -> None:
    p = established()
    reachable(p)
    p.request("a1", "m1", device_ids=("d2",))
    p.advance(5)
    assert brief(sends(p.device("a1", "d3"))) == []
    assert brief(sends(p.device("a1", "d2"))) == [("APP", "d2", "XIAOMI", "ORIGINAL_ROUTE", 0)]


# --- expiry --------------------------------------------------------------------------------------


def test_a_settled_message_is_removed_at_its_expiry_and_the_account_keeps_what_it_learned(
) -> None:
    p = established()
    reachable(p, device=False, wechat="ow-1")
    p.request("a1", "m1")
    expiry = p.due("EXPIRE", "a1", "m1")
    assert expiry.due_at == round(T0 + 20 + DEADLINES["NORMAL"] + 30 + 5000, 3)
    p.advance(1)
    p.read("a1", "m1", "WECHAT")
    fx = p.fire(expiry)
    assert fx.outputs == [] and fx.counts["expired"] == 1
    assert p.message("a1", "m1") is None
    account = p.account("a1")
    assert account is not None
    assert (account["feedback_count"], account["first_feedback"]) == ({"WECHAT": 1},
                                                                      {"WECHAT": 1})
    # after its retention the same message_id is a new message
    assert brief(sends(p.request("a1", "m1"))) == [("WECHAT", None, None, "PRIMARY", 0)]


def test_an_ack_stamped_after_a_settled_messages_expiry_finds_it_gone_even_before_its_timer(
) -> None:
    # an on-time worker removed the message at its expiry; one running late still holds it,
    # yet an ack stamped after the expiry meets what the on-time worker would: no message
    p = established()
    reachable(p)
    p.request("a1", "m1")
    p.fire(p.due("RECEIPT", "a1", "m1", "d1"))  # no receipt: resent on JPUSH (attempt 1)
    p.read("a1", "m1", "APP", "d1")
    expiry = p.due("EXPIRE", "a1", "m1")
    p.now = expiry.due_at + 1
    with pytest.raises(h.Rejected, match="unknown message 'm1'"):
        p.read("a1", "m1", "WECHAT")
    before = p.message("a1", "m1")
    p.receipt("a1", "m1", "d1", attempt=1)  # counts for the route, leaves the message alone
    assert p.message("a1", "m1") == before
    assert p.fire(expiry).counts["expired"] == 1
    p.now = expiry.due_at - 1  # before its expiry a message is there for an ack
    p.request("a1", "m2")
    assert results(p.read("a1", "m2", "APP", "d1"))[0]["status"] == "READ"


def test_a_message_with_a_pending_deadline_is_kept_a_retention_longer() -> None:
    p = established()
    reachable(p, device=False, wechat="ow-1", phone="+86-1")
    p.request("a1", "m1")
    expiry, read = p.due("EXPIRE", "a1", "m1"), p.due("READ", "a1", "m1")
    fx = p.fire(expiry)  # the timer was late with the READ deadline
    assert fx.counts["expiry_postponed"] == 1
    assert [(d.kind, d.due_at) for d in fx.dues] == [("EXPIRE", p.now + 5000)]
    assert p.message("a1", "m1") is not None
    assert [e["to_channel"] for e in escalations(p.fire(read))] == ["SMS"]
    assert p.fire(expiry).counts["expired"] == 0  # the old expiry is stale
    assert p.fire(p.due("EXPIRE", "a1", "m1")).counts["expired"] == 1
    assert p.message("a1", "m1") is None


def test_a_message_with_a_pending_device_delivery_is_kept_a_retention_longer() -> None:
    p = established()
    reachable(p)
    p.request("a1", "m1")
    p.read("a1", "m1", "APP", "d1")  # read, but no receipt yet
    fx = p.fire(p.due("EXPIRE", "a1", "m1"))
    assert fx.counts["expiry_postponed"] == 1
    p.fire(p.due("RECEIPT", "a1", "m1", "d1"))
    assert p.fire(p.due("EXPIRE", "a1", "m1")).counts["expired"] == 1


def test_a_message_still_waiting_for_a_channel_is_not_expired() -> None:
    p = Partition()
    p.request("a1", "m1")
    fx = p.fire(p.due("EXPIRE", "a1", "m1"))  # the GRACE deadline was not applied yet
    assert fx.counts["expiry_postponed"] == 1 and p.message("a1", "m1") is not None
    assert results(p.fire(p.due("GRACE", "a1", "m1")))[0]["status"] == "UNREACHABLE"
    assert p.fire(p.due("EXPIRE", "a1", "m1")).counts["expired"] == 1


# --- campaigns -----------------------------------------------------------------------------------


def campaign(p: Partition, accounts: tuple[str, ...], campaign_id: str = "c1") -> list[h.Effects]:
    """Each account has device d1; each gets the campaign's push one second after the other."""
    effects = []
    for account_id in accounts:
        p.device(account_id, "d1")
    for account_id in accounts:
        effects.append(p.request(account_id, "promo", campaign_id=campaign_id))
        p.advance(1)
    return effects


def test_campaign_deliveries_wait_for_the_decision_and_update_the_partition_tally() -> None:
    p = Partition(partition=3)
    effects = campaign(p, ("a1", "a2", "a3"))
    for account_id, fx in zip(("a1", "a2", "a3"), effects, strict=True):
        assert ("APP", "d1", "XIAOMI", "ORIGINAL_ROUTE", 0) in brief(sends(fx))
        assert [d.kind for d in fx.dues] == ["EXPIRE"]  # no RECEIPT deadline of its own
        assert fx.waits == [("c1", message_key(account_id, "promo"))]
        assert fx.tallies == {"c1"}
    assert p.tally("c1") == {"campaign_id": "c1", "targeted": 3, "acked": 0,
                             "due_at": T0 + 2 + 30, "decided": False, "fallback": False}

    fx = p.receipt("a1", "promo", "d1")
    assert fx.tallies == {"c1"}
    assert p.receipt("a1", "promo", "d1").tallies == set()  # a duplicate counts nothing
    out = p.tally_output("c1")
    assert out is not None
    assert (out.topic, out.key, out.record) == ("pushcascade.campaign-events", "c1",
                                                "CampaignEvent")
    assert out.value == {"campaign_id": "c1", "partition": 3, "targeted": 3, "acked": 1,
                         "due_at": ms(T0 + 32), "at": ms(p.now)}
    assert p.tally_output("c-unknown") is None


def test_a_receipt_deadline_of_a_campaign_delivery_before_the_decision_changes_nothing() -> None:
    p = Partition()
    campaign(p, ("a1",))
    # a worker that took the partition over re-indexes the delivery's RECEIPT deadline
    due = Due(T0 + 30, 0, "promo", "a1", "RECEIPT", "d1", "promo")
    fx = p.fire(due)
    assert fx.outputs == [] and fx.counts["deadline_stale"] == 1
    message = p.message("a1", "promo")
    assert message is not None and not message["deliveries"]["d1"]["done"]


def test_a_campaign_decision_to_fall_back_resends_to_each_silent_device_only() -> None:
    p = Partition()
    campaign(p, ("a1", "a2", "a3"))
    p.receipt("a2", "promo", "d1")
    p.advance(40)
    effects = p.decide("c1", fallback=True)
    assert [(s["account_id"], s["device_id"], s["route"], s["reason"], s["attempt"],
             s["send_id"]) for s in sends(*effects)] == [
        (a, "d1", "JPUSH", "FALLBACK_ROUTE", 1, send_id(a, "promo", "APP", "d1", 1))
        for a in ("a1", "a3")]
    tally = p.tally("c1")
    assert tally is not None and (tally["decided"], tally["fallback"]) == (True, True)
    # a receipt for the fallback send is not an ack on the original route
    p.receipt("a1", "promo", "d1", attempt=1)
    tally = p.tally("c1")
    assert tally is not None and (tally["targeted"], tally["acked"]) == (3, 1)


def test_a_campaign_decision_not_to_fall_back_sends_nothing_and_settles_the_deliveries() -> None:
    p = Partition()
    campaign(p, ("a1", "a2"))
    effects = p.decide("c1", fallback=False)
    assert [o for fx in effects for o in outputs(fx)] == []
    for account_id in ("a1", "a2"):
        message = p.message(account_id, "promo")
        assert message is not None and message["deliveries"]["d1"]["done"]
        assert sends(p.fire(Due(T0 + 40, 0, "promo", account_id, "RECEIPT", "d1",
                                "promo"))) == []
    # nothing is pending: the messages expire on time
    assert p.fire(p.due("EXPIRE", "a1", "promo")).counts["expired"] == 1


def test_a_worker_taking_over_rebuilds_a_campaign_wait_until_the_decision_settles_it() -> None:
    p = Partition()
    campaign(p, ("a1",))
    dues, waits = h.pending_work(p.message("a1", "promo") or {})
    assert waits == ["c1"]
    assert sorted(d.kind for d in dues) == ["EXPIRE", "RECEIPT"]
    waiting = p.message("a1", "promo")
    assert waiting is not None
    (wait,) = h.waits_index(None, waiting)  # the waits table a new owner reads
    assert wait[0] == "waits" and wait[2] == {
        "campaign_id": "c1", "key": message_key("a1", "promo").decode(), "partition": 0}
    assert h.waits_index(waiting, waiting) == []
    p.decide("c1", fallback=False)
    dues, waits = h.pending_work(p.message("a1", "promo") or {})
    assert waits == [] and [d.kind for d in dues] == ["EXPIRE"]
    assert h.waits_index(waiting, p.message("a1", "promo")) == [("waits", wait[1], None)]


@pytest.mark.parametrize("first", [True, False])
def test_a_repeated_campaign_decision_changes_nothing(first) -> None:
    p = Partition()
    campaign(p, ("a1", "a2"))
    p.decide("c1", fallback=first)
    tally = p.tally("c1")
    p.waits["c1"] = [message_key("a1", "promo"), message_key("a2", "promo")]  # replayed
    again = p.decide("c1", fallback=not first)
    assert again[0].counts["decision_repeat"] == 1
    assert [o for fx in again for o in fx.outputs] == []
    assert p.tally("c1") == tally


@pytest.mark.parametrize("fallback", [True, False])
def test_a_campaign_delivery_after_the_decision_gets_a_receipt_deadline_and_follows_it(
        fallback) -> None:
    p = Partition()
    campaign(p, ("a1",))
    p.decide("c1", fallback=fallback)
    p.device("a9", "d1")
    fx = p.request("a9", "promo", campaign_id="c1")
    assert fx.waits == []
    assert p.due("RECEIPT", "a9", "promo", "d1").due_at == p.now + 30.0
    tally = p.tally("c1")
    assert tally is not None and tally["targeted"] == 2
    at_deadline = p.fire(p.due("RECEIPT", "a9", "promo", "d1"))
    expected = [("APP", "d1", "JPUSH", "FALLBACK_ROUTE", 1)] if fallback else []
    assert brief(sends(at_deadline)) == expected
    assert p.fire(p.due("RECEIPT", "a9", "promo", "d1")).outputs == []


# --- properties ----------------------------------------------------------------------------------


EVENTS = ("read APP", "read WECHAT", "read SMS", "fire", "fire stale", "wait")


@settings(max_examples=150, deadline=None)
@given(before=st.lists(st.sampled_from(EVENTS), max_size=4),
       after=st.lists(st.sampled_from(EVENTS), max_size=6),
       importance=st.sampled_from(sorted(DEADLINES)))
def test_any_interleaving_of_request_reads_and_deadline_escalates_at_most_once(
        before, after, importance) -> None:
    p = established()
    reachable(p, wechat="ow-1", phone="+86-1")  # primary APP, secondary WECHAT
    requested, read, escalated = False, False, False
    effects: list[h.Effects] = []
    for event in [*before, "request", *after]:
        if event == "request":
            effects.append(p.request("a1", "m1", importance=importance))
            requested = True
        elif event.startswith("read"):
            try:
                effects.append(p.read("a1", "m1", event.split()[1], device_id="d1"))
                # a READ stamped after the deadline comes after the escalation it owed
                escalated = escalated or (not read and p.now > p.due("READ", "a1", "m1").due_at)
                read = True
            except h.Rejected:
                assert not requested
        elif event == "wait":
            p.advance(100)
        else:
            due = (p.due("READ", "a1", "m1") if requested
                   else Due(T0 + DEADLINES[importance], 0, "m1", "a1", "READ", None, "m1"))
            if event == "fire stale":
                due = Due(due.due_at - 0.5, 0, "m1", "a1", "READ", None, "m1")
            elif requested and not read:
                escalated = True
            effects.append(p.fire(due))
    found = escalations(*effects)
    assert len(found) == int(escalated)
    assert [e["to_channel"] for e in found] == ["WECHAT"] * len(found)
    escalation_sends = [s for s in sends(*effects) if s["reason"] == "ESCALATION"]
    assert brief(escalation_sends) == [("WECHAT", None, None, "ESCALATION", 1)] * len(found)


@settings(max_examples=60, deadline=None)
@given(devices=st.lists(st.tuples(st.booleans(), st.integers(0, 2)), min_size=1, max_size=6),
       fallback=st.booleans())
def test_a_campaign_tally_counts_each_device_once_and_the_decision_reaches_the_silent_ones(
        devices, fallback) -> None:
    p = Partition()
    accounts = tuple(f"a{i}" for i in range(len(devices)))
    campaign(p, accounts)
    for account_id, (acked, repeats) in zip(accounts, devices, strict=True):
        for _ in range(acked * (1 + repeats)):
            p.receipt(account_id, "promo", "d1")
    out = p.tally_output("c1")
    assert out is not None
    assert (out.value["targeted"], out.value["acked"]) == (len(devices),
                                                          sum(a for a, _ in devices))
    resent = sends(*p.decide("c1", fallback))
    silent = [a for a, (acked, _) in zip(accounts, devices, strict=True) if not acked]
    assert [s["account_id"] for s in resent] == (silent if fallback else [])
    assert all(s["reason"] == "FALLBACK_ROUTE" and s["attempt"] == 1 for s in resent)
    p.waits["c1"] = [message_key(a, "promo") for a in accounts]
    assert sends(*p.decide("c1", not fallback)) == []


def rebuilt(p: Partition, account_id: str, message_id: str) -> list[Due]:
    """The deadlines a worker taking the partition over rebuilds from the stored message."""
    message = p.message(account_id, message_id)
    assert message is not None
    return h.pending_work(message)[0]


@settings(max_examples=100, deadline=None)
@given(offset=st.floats(0, 10_000_000, allow_nan=False, allow_infinity=False))
def test_deadlines_rebuilt_from_state_are_those_handed_out_and_fire_alike_at_any_clock(
        offset) -> None:
    p = Partition(config(new_account_pushes=0, reach_grace=7.25, receipt_deadline=0.3333),
                  now=T0 + offset)
    p.request("a1", "m-wait")
    pending = rebuilt(p, "a1", "m-wait")
    assert sorted((d.kind, d.device_id, d.due_at) for d in pending) == sorted(
        p.dues_of("a1", "m-wait"))
    grace = next(d for d in pending if d.kind == "GRACE")
    assert results(p.fire(grace))[0]["status"] == "UNREACHABLE"

    reachable(p, wechat="ow-1")
    p.request("a1", "m1")
    pending = rebuilt(p, "a1", "m1")
    assert sorted((d.kind, d.device_id, d.due_at) for d in pending) == sorted(
        p.dues_of("a1", "m1"))
    by_kind = {d.kind: d for d in pending}
    assert brief(sends(p.fire(by_kind["RECEIPT"])))[0][3] == "FALLBACK_ROUTE"
    assert len(escalations(p.fire(by_kind["READ"]))) == 1
    assert rebuilt(p, "a1", "m1") == [by_kind["EXPIRE"]]  # nothing else is pending
    p.read("a1", "m1", "WECHAT")
    p.fire(by_kind["EXPIRE"])
    assert p.message("a1", "m1") is None


# --- adaptive: each account's own read timing, and escalations worth their cost ----------------


def wechat_reader(strategy: str, delay: float, **kw: Any) -> Partition:
    """An established WeChat reader (with a phone number) who read four messages, each `delay`
    seconds after its send."""
    p = established(strategy=strategy, **kw)
    reachable(p, device=False, wechat="ow-1", phone="+86-1")
    for i in range(4):
        p.request("a1", f"old{i}")
        p.advance(delay)
        p.read("a1", f"old{i}", "WECHAT")
        p.advance(10_000)
    return p


def test_adaptive_waits_a_fast_readers_own_time_then_escalates() -> None:
    """Its reads come 500 s after the send; a HIGH push must be read within 3,000 s (a read
    window of 1.5 deadlines): SMS is planned at 1,500 s (waiting longer for a WeChat read that
    may still come would leave an SMS read too little time), not at the deadline of 2,000 s
    as seed's; with the default window of three deadlines, waiting costs no read and SMS waits
    the deadline."""
    p = wechat_reader("adaptive", 500.0, read_window=1.5, send_price=0.05)
    assert p.account("a1")["delays"] == {"WECHAT": [500.0] * 4}
    p.request("a1", "m1", importance="HIGH")
    due = p.due("READ", "a1", "m1")
    assert due.due_at == round(p.now + 1500, 3)
    p.advance(1500)
    fx = p.fire(due)
    assert [e["to_channel"] for e in escalations(fx)] == ["SMS"]
    assert p.account("a1")["missed"] == {"WECHAT": 1}  # it waited on the primary in vain
    long = wechat_reader("adaptive", 500.0)
    long.request("a1", "m1", importance="HIGH")
    assert long.due("READ", "a1", "m1").due_at == long.now + DEADLINES["HIGH"]
    seed = wechat_reader("seed", 500.0)
    seed.request("a1", "m1", importance="HIGH")
    assert seed.due("READ", "a1", "m1").due_at == seed.now + DEADLINES["HIGH"]


def test_a_postponed_step_counts_one_miss_of_the_primary() -> None:
    """The plan waits 1,000 s for a reader at 500 s (a read window of 1.25 deadlines);
    meanwhile another message is read 900 s after its send, so at 1,000 s its next send moves
    later: one
    message's silence is one miss, not one per postponement (two would already try every
    channel whatever it costs)."""
    p = wechat_reader("adaptive", 500.0, read_window=1.25, send_price=0.05)
    p.request("a1", "m1", importance="HIGH")
    due = p.due("READ", "a1", "m1")
    assert due.due_at == p.now + 1000
    p.request("a1", "o1", importance="HIGH")
    p.advance(900)
    p.read("a1", "o1", "WECHAT")
    fx = p.fire(due)
    assert escalations(fx) == [] and p.account("a1")["missed"] == {}
    [later] = [d for d in fx.dues if d.kind == "READ"]
    assert later.due_at > due.due_at
    assert [e["to_channel"] for e in escalations(p.fire(later))] == ["SMS"]
    assert p.account("a1")["missed"] == {"WECHAT": 1}


def test_adaptive_gives_up_on_a_late_reader_at_the_deadline_when_no_channel_is_worth_it() -> None:
    """A reader whose reads come after the deadline: waiting would not save a send, so what
    goes goes with the push. A NORMAL push does not pay for an SMS while the WeChat read is
    still likely: the message waits its read deadline and ends there (EXHAUSTED, saying why);
    an URGENT one gets the SMS at once. (The money cost alone: no send price.)"""
    p = wechat_reader("adaptive", 5000.0, send_price=0.0)
    fx = p.request("a1", "m1")  # NORMAL: a read is worth 0.1, an SMS costs 0.05
    assert [s["channel"] for s in sends(fx)] == ["WECHAT"] and escalations(fx) == []
    due = p.due("READ", "a1", "m1")
    assert due.due_at == p.now + DEADLINES["NORMAL"]
    p.advance(DEADLINES["NORMAL"])
    fx = p.fire(due)
    assert [(e["from_channel"], e["to_channel"]) for e in escalations(fx)] == [("WECHAT", None)]
    assert fx.counts["escalation_not_worth"] == 1
    [(status, detail)] = [(r["status"], r["detail"]) for r in results(fx)]
    assert status == "EXHAUSTED" and detail.startswith(
        "read deadline passed; SMS not worth a send for a NORMAL push (reads it adds less")
    assert not [d for d in fx.dues if d.kind == "READ"]
    p.advance(2000.0)
    p.read("a1", "m1", "WECHAT")  # the read came after all, and taught its delay
    assert p.account("a1")["delays"]["WECHAT"][-1] == 5000.0
    urgent = p.request("a1", "m2", importance="URGENT")
    assert [(s["channel"], s["reason"]) for s in sends(urgent)] == [
        ("WECHAT", "PRIMARY"), ("SMS", "ESCALATION")]
    assert [e["to_channel"] for e in escalations(urgent)] == ["SMS"]
    # seed waits the deadline and escalates whatever it costs
    seed = wechat_reader("seed", 5000.0)
    seed.request("a1", "m1")
    seed.advance(DEADLINES["NORMAL"])
    assert escalations(seed.fire(seed.due("READ", "a1", "m1")))[0]["to_channel"] == "SMS"


def test_adaptive_sends_a_late_reader_every_channel_worth_it_together() -> None:
    """A late reader with an app and a phone number: the free app push goes with the WeChat
    message, the SMS not (for a NORMAL push); for a HIGH push, whose read is worth more, the
    SMS too - all at the request's time, each escalation from the one before. (The money cost
    alone: no send price.)"""
    p = wechat_reader("adaptive", 5000.0, send_price=0.0)
    p.device("a1", "d1")
    fx = p.request("a1", "m1")
    assert [(s["channel"], s["device_id"]) for s in sends(fx)] == [
        ("WECHAT", None), ("APP", None), ("APP", "d1")]
    assert [e["to_channel"] for e in escalations(fx)] == ["APP"]
    high = p.request("a1", "m2", importance="HIGH")
    assert [(e["from_channel"], e["to_channel"]) for e in escalations(high)] == [
        ("WECHAT", "APP"), ("APP", "SMS")]
    assert {s["sent_at"] for s in sends(high)} == {ms(p.now)}
    assert not [d for d in high.dues if d.kind == "READ"]  # nothing left to send


def test_adaptive_tries_the_next_channel_after_two_unread_messages_in_a_row() -> None:
    """A reader who moved away from WeChat: the first unread LOW push is not worth an SMS,
    the second in a row is (the habit may have changed); a read on WeChat resets the count.
    (A reader whose reads come within the deadline: a late reader's silence is no miss.)"""
    p = wechat_reader("adaptive", 1000.0)
    targets = []
    for i in range(3):
        p.request("a1", f"m{i}", importance="LOW")
        p.advance(DEADLINES["LOW"])
        targets.append(escalations(p.fire(p.due("READ", "a1", f"m{i}")))[0]["to_channel"])
        if i == 1:
            p.read("a1", "m1", "WECHAT")
    assert targets == [None, "SMS", None]
    assert p.account("a1")["missed"] == {"WECHAT": 1}


def test_a_late_reader_is_sent_only_the_channels_that_add_the_send_price_in_reads() -> None:
    """The late WeChat reader of the test above, for a HIGH push at the default read values
    (a read is worth 200 SMS): its SMS and app push on two phones, never read, are likely to
    add fewer reads than 0.05 a send once it has ignored them a few times, so the WeChat
    message goes alone; without a send price, everything worth its money goes with it."""
    def partition(price: float) -> Partition:
        p = wechat_reader("adaptive", 5000.0, send_price=price,
                          read_value=esc.DEFAULT_READ_VALUE)
        p.device("a1", "d1")
        p.device("a1", "d2")
        for i in range(3):  # its app pushes and SMS go unread
            p.request("a1", f"x{i}", importance="HIGH")
            p.advance(5000.0)
            p.read("a1", f"x{i}", "WECHAT")
            p.advance(10_000)
        return p

    priced, free = partition(esc.DEFAULT_SEND_PRICE), partition(0.0)
    fx = priced.request("a1", "m", importance="HIGH")
    assert [s["channel"] for s in sends(fx)] == ["WECHAT"]
    reads, sent = priced.account("a1")["counts"]["SMS"]
    assert reads == 0.0 and sent >= 2  # its SMS went unread, counted once their window passed
    priced.advance(DEADLINES["HIGH"])
    fx = priced.fire(priced.due("READ", "a1", "m"))
    [(status, detail)] = [(r["status"], r["detail"]) for r in results(fx)]
    assert status == "EXHAUSTED" and "not worth a send for a HIGH push (reads it adds" in detail
    fx = free.request("a1", "m", importance="HIGH")
    assert [s["channel"] for s in sends(fx) if s["device_id"] is None] == ["WECHAT", "APP", "SMS"]



def test_adaptive_falls_back_on_the_route_its_posteriors_favour_and_reports_its_target() -> None:
    """The fleet's prior says JPUSH receives and FCM does not: a silent XIAOMI send falls back
    on JPUSH, the same route on a replay; its receipt makes JPUSH the target (POSTERIOR)."""
    def partition() -> Partition:
        probe = ProbeConfig(bandit=True, prior={"JPUSH": 0.9, "FCM": 0.1},
                            fleet=frozenset({"JPUSH", "FCM"}),
                            per_device_probes_per_hour=0.001)  # no probes in the way
        p = established(strategy="adaptive", probe=probe)
        reachable(p)
        p.request("a1", "m1", importance="HIGH")
        return p

    picks = []
    for _ in range(2):
        p = partition()
        fx = p.fire(p.due("RECEIPT", "a1", "m1", "d1"))
        picks.append(brief(sends(fx)))
    assert picks[0] == picks[1] == [("APP", "d1", "JPUSH", "FALLBACK_ROUTE", 1)]
    fx = p.receipt("a1", "m1", "d1", attempt=1, route="JPUSH")
    [change] = of("RouteChange", fx)
    assert (change["from_route"], change["to_route"], change["reason"]) == (
        None, "JPUSH", "POSTERIOR")
    assert change["success_rate"] > 0.9


def test_adaptive_retargets_a_phone_the_account_no_longer_pushes_to() -> None:
    """In an outage the fleet rates JPUSH low and the phone's target becomes FCM; then the
    account is pushed on WeChat only, so no APP send touches the phone: each push re-evaluates
    it all the same, and JPUSH is its target again once the fleet's rate has recovered."""
    def partition(strategy: str) -> Partition:
        probe = ProbeConfig(bandit=strategy == "adaptive", per_device_probes_per_hour=0.001)
        p = established(strategy=strategy, probe=probe)
        reachable(p, wechat="ow-1")
        p.priors.put("Xiaomi", None, "JPUSH", 0.05, 1000)  # the outage
        p.priors.put("Xiaomi", None, "FCM", 0.75, 1000)
        p.settings("a1", "APP", None)
        p.request("a1", "m1", importance="HIGH")
        p.fire(p.due("RECEIPT", "a1", "m1", "d1"))  # no receipt: a fallback on FCM
        p.receipt("a1", "m1", "d1", attempt=1, route="FCM")
        p.settings("a1", "WECHAT", None)  # from now on no APP send
        p.priors.put("Xiaomi", None, "JPUSH", 0.85, 1000)  # the outage is over
        return p

    p = partition("adaptive")
    assert p.device_state("a1", "d1")["target"] == ["FCM"]
    fx = p.request("a1", "m2")
    assert [s["channel"] for s in sends(fx)] == ["WECHAT"]
    [change] = of("RouteChange", fx)
    assert (change["from_route"], change["to_route"]) == ("FCM", "JPUSH")
    assert p.device_state("a1", "d1")["target"] == ["JPUSH"]
    assert of("RouteChange", p.request("a1", "m3")) == []  # no change, nothing emitted
    seed = partition("seed")  # the probe windows: a target from probes only
    assert of("RouteChange", seed.request("a1", "m2")) == []

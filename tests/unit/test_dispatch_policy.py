"""The dispatcher's pure policy: retries, failure outcomes, reconciling, the dedupe window, the
lease."""

from __future__ import annotations

import httpx
from aiobreaker import CircuitBreakerError
from hypothesis import given
from hypothesis import strategies as st

from connectors.adapters import ProviderError
from connectors.dispatch_policy import (
    IDEMPOTENT,
    INTERRUPTED,
    DedupeWindow,
    Lease,
    Rebalances,
    ambiguous,
    cause,
    failure,
    first_at_or_after,
    interrupted,
    reconcile,
    retry,
    retryable,
)

#: What http.request raises: no answer after the request may have reached the vendor, and
#: failures that certainly did not reach it.
READ_TIMEOUT = ProviderError("TIMEOUT", retryable=True, message="ReadTimeout", ambiguous=True)
CUT_OFF = ProviderError("UNREACHABLE", retryable=True, message="RemoteProtocolError",
                        ambiguous=True)
CONNECT_TIMEOUT = ProviderError("TIMEOUT", retryable=True, message="ConnectTimeout")
REFUSED = ProviderError("UNREACHABLE", retryable=True, message="ConnectError")
THROTTLED = ProviderError("TooManyRequests", retryable=True, retry_after=2.0)
UNAVAILABLE = ProviderError("UNAVAILABLE", retryable=True, retry_after=1.0)


def test_every_exception_maps_to_an_outcome_with_its_reason():
    assert failure(ProviderError("UNREGISTERED", retryable=False)) == ("REJECTED", "UNREGISTERED")
    assert failure(ProviderError("UNAVAILABLE", retryable=True)) == ("FAILED", "UNAVAILABLE")
    assert failure(CircuitBreakerError("open", reopen_time=None)) == ("FAILED", "circuit_open")
    assert failure(httpx.ConnectTimeout("slow")) == ("FAILED", "timeout")
    assert failure(httpx.ConnectError("refused")) == ("FAILED", "transport:ConnectError")
    assert failure(httpx.InvalidURL("bad")) == ("FAILED", "error:InvalidURL")
    assert failure(KeyError("account_id")) == ("FAILED", "error:KeyError")


def test_only_transient_errors_are_retried():
    assert retryable(ProviderError("QUOTA", retryable=True))
    assert not retryable(ProviderError("BAD", retryable=False))
    assert retryable(httpx.ConnectError("refused"))
    assert not retryable(httpx.InvalidURL("bad"))
    assert not retryable(KeyError("x"))


def test_an_interrupted_send_is_resent_only_while_its_vendor_remembers_the_key():
    assert set(IDEMPOTENT) == {"wechat", "getui"}
    assert reconcile("wechat", intent_at=1000.0, now=1010.0) == "resend"
    assert reconcile("getui", intent_at=1000.0, now=1539.0) == "resend"
    assert reconcile("wechat", intent_at=1000.0, now=1541.0) == "unknown"  # margin 60 s
    for provider in ("apns", "fcm", "huawei", "sms", "email", "none"):
        assert reconcile(provider, intent_at=1000.0, now=1000.5) == "unknown"
    assert reconcile("apns", 0.0, 1.0, idempotent={"apns": 100.0}, margin=0) == "resend"


def test_the_dedupe_window_forgets_what_is_older_than_the_window():
    window = DedupeWindow(60.0)
    window.add("a", 100.0)
    window.add("b", 130.0)
    window.add("a", 150.0)  # recorded again later: kept from the later time
    window.add("c", 90.0)  # out of order (a rebuild)
    assert {"a", "b", "c"} <= {s for s in ("a", "b", "c") if s in window}
    assert window.expire(now=155.0) == 1  # c (90) is older than 95
    assert "c" not in window and "a" in window and "b" in window
    assert window.expire(now=195.0) == 1  # b (130) < 135; a stays (150)
    assert len(window) == 1 and "a" in window
    assert window.expire(now=211.0) == 1 and len(window) == 0


def test_the_lease_lapses_without_polls_and_after_a_stall_holds_only_once_confirmed():
    lease = Lease(length=4.0, gap=3.0)
    assert not lease.valid(0.0)  # never polled
    lease.polled(0.0)
    lease.polled(1.0)
    assert lease.valid(4.9) and not lease.suspended
    assert not lease.valid(5.0)  # frozen past the lease: its partitions may be someone else's
    lease.polled(20.0)  # woke up: suspended until the coordinator accepts a request of ours
    assert lease.suspended and not lease.valid(20.1)
    for t in range(21, 120):  # polled for any time: still suspended (no fixed wait confirms)
        lease.polled(float(t))
    assert not lease.valid(119.5)
    lease.confirmed(19.0)  # an answer to a request made before the stall confirms nothing
    assert not lease.valid(119.5)
    lease.confirmed(119.0)
    assert lease.valid(119.5) and not lease.suspended


def test_a_confirmation_does_not_end_a_later_stall():
    lease = Lease(length=4.0, gap=3.0)
    lease.polled(0.0)
    lease.polled(10.0)  # a stall
    asked = 10.1  # a commit asked after it...
    lease.polled(20.0)  # ...answered after another stall
    lease.confirmed(asked)
    assert lease.suspended and not lease.valid(20.1)
    lease.confirmed(20.2)
    assert lease.valid(20.3)


def test_a_short_pause_between_polls_keeps_the_lease():
    lease = Lease(length=4.0, gap=3.0)
    for t in (0.0, 1.0, 3.9, 6.8):  # gaps up to `gap` are polls, not stalls
        lease.polled(t)
    assert lease.valid(7.0) and not lease.suspended


def test_the_window_start_is_found_by_binary_search():
    stamps = [10, 20, 20, 30, 40, 50]
    probes: list[int] = []

    def at(offset: int) -> int | None:
        probes.append(offset)
        return stamps[offset] if offset < len(stamps) else None

    assert first_at_or_after(at, 0, 6, 20) == 1
    assert first_at_or_after(at, 0, 6, 35) == 4
    assert first_at_or_after(at, 0, 6, 99) == 6
    assert first_at_or_after(at, 0, 6, 0) == 0
    assert first_at_or_after(at, 2, 2, 0) == 2
    counted: list[int] = []
    assert first_at_or_after(lambda o: counted.append(o) or o, 0, 1_000_000, 765_432) == 765_432
    assert len(counted) <= 21  # log2 of the range, not the range


def test_a_failure_is_ambiguous_only_when_the_request_may_have_reached_the_provider():
    for exc in (READ_TIMEOUT, CUT_OFF, httpx.ReadTimeout("slow"), httpx.WriteTimeout("slow"),
                httpx.ReadError("reset"), httpx.RemoteProtocolError("closed mid-answer")):
        assert ambiguous(exc), exc
    for exc in (CONNECT_TIMEOUT, REFUSED, THROTTLED, UNAVAILABLE,
                ProviderError("UNREGISTERED", retryable=False), httpx.ConnectError("refused"),
                httpx.ConnectTimeout("slow"), httpx.PoolTimeout("busy"),
                CircuitBreakerError("open", reopen_time=None), KeyError("x")):
        assert not ambiguous(exc), exc


def test_failures_that_certainly_did_not_reach_the_provider_are_retried():
    for exc in (REFUSED, CONNECT_TIMEOUT, THROTTLED, UNAVAILABLE, httpx.ConnectError("refused"),
                CircuitBreakerError("open", reopen_time=None)):
        for provider in ("xiaomi", "apns", "sms", "wechat"):
            assert retry(exc, provider, first_call_at=1000.0, now=1001.0), (exc, provider)
    assert not retry(ProviderError("UNREGISTERED", retryable=False), "xiaomi", 1000.0, 1001.0)
    assert not retry(KeyError("x"), "xiaomi", 1000.0, 1001.0)


def test_a_call_that_may_have_reached_the_provider_is_not_repeated_without_a_vendor_key():
    for provider in ("xiaomi", "huawei", "apns", "fcm", "oppo", "vivo", "jpush", "sms", "email"):
        assert not retry(READ_TIMEOUT, provider, first_call_at=1000.0, now=1002.0), provider
        assert not retry(CUT_OFF, provider, first_call_at=1000.0, now=1002.0), provider
        assert not retry(httpx.ReadTimeout("slow"), provider, 1000.0, 1002.0), provider


def tripped(by: BaseException) -> CircuitBreakerError:
    """What aiobreaker raises for the call whose failure opens the circuit (the fail_max-th in a
    row, or a half-open trial's): CircuitBreakerError from that failure."""
    try:
        raise CircuitBreakerError("Failures threshold reached, circuit breaker opened.",
                                  reopen_time=None) from by
    except CircuitBreakerError as exc:
        return exc


def test_the_call_that_opens_the_circuit_is_judged_by_its_own_failure():
    # the breaker turns the failure that trips it into CircuitBreakerError: a read timeout that
    # trips it may have reached the provider, and was retried as a refused call (found under
    # load: sends accepted by their provider 2-4 times after a slow spell opened the circuit)
    for provider in ("xiaomi", "huawei", "apns", "fcm", "jpush", "sms"):
        for timed_out in (READ_TIMEOUT, CUT_OFF, httpx.ReadTimeout("slow")):
            assert ambiguous(tripped(timed_out))
            assert not retry(tripped(timed_out), provider, first_call_at=1000.0, now=1002.0)
            assert failure(tripped(timed_out)) == ("FAILED", INTERRUPTED)
    assert retry(tripped(READ_TIMEOUT), "wechat", first_call_at=1000.0, now=1002.0)  # its key
    # a certain failure that trips it is still retried, and ends with its own reason
    assert retry(tripped(UNAVAILABLE), "xiaomi", first_call_at=1000.0, now=1002.0)
    assert failure(tripped(UNAVAILABLE)) == ("FAILED", "UNAVAILABLE")
    assert cause(tripped(REFUSED)) is REFUSED
    # a call the open circuit refused was never made
    refused = CircuitBreakerError("Timeout not elapsed yet", reopen_time=None)
    assert cause(refused) is refused and not ambiguous(refused) and retryable(refused)


def test_a_keyed_vendor_is_called_again_only_while_it_remembers_the_key():
    assert retry(READ_TIMEOUT, "wechat", first_call_at=1000.0, now=1002.0)
    assert retry(READ_TIMEOUT, "getui", first_call_at=1000.0, now=1539.0)
    assert not retry(READ_TIMEOUT, "wechat", first_call_at=1000.0, now=1541.0)  # margin 60 s
    assert not retry(READ_TIMEOUT, "wechat", first_call_at=None, now=1002.0)  # no call made


def test_after_an_ambiguous_call_even_a_certain_failure_is_retried_only_under_the_key():
    # an earlier attempt may have reached the provider (`unsure`): a later 503 does not make
    # calling again safe, unless the vendor drops the repeat
    assert not retry(UNAVAILABLE, "xiaomi", 1000.0, 1002.0, unsure=True)
    assert not retry(REFUSED, "apns", 1000.0, 1002.0, unsure=True)
    assert retry(UNAVAILABLE, "wechat", 1000.0, 1002.0, unsure=True)
    assert not retry(UNAVAILABLE, "wechat", 1000.0, 1600.0, unsure=True)
    assert not retry(ProviderError("40003", retryable=False), "wechat", 1000.0, 1002.0,
                     unsure=True)


def test_an_outcome_after_an_ambiguous_call_is_unknown_unless_the_vendor_refused_for_good():
    assert failure(READ_TIMEOUT) == ("FAILED", INTERRUPTED)
    assert failure(httpx.ReadTimeout("slow")) == ("FAILED", INTERRUPTED)
    assert failure(CONNECT_TIMEOUT) == ("FAILED", "TIMEOUT")  # never reached the vendor
    assert failure(UNAVAILABLE) == ("FAILED", "UNAVAILABLE")
    # a keyed re-send after an ambiguous call: the first may have been taken
    assert failure(UNAVAILABLE, unsure=True) == ("FAILED", INTERRUPTED)
    assert failure(CircuitBreakerError("open", reopen_time=None), unsure=True) == (
        "FAILED", INTERRUPTED)
    assert failure(KeyError("x"), unsure=True) == ("FAILED", INTERRUPTED)
    # a permanent refusal of the repeat: the vendor would have answered a taken key as before
    assert failure(ProviderError("40003", retryable=False), unsure=True) == ("REJECTED", "40003")


def test_an_interrupted_send_counts_every_call_its_intents_announced():
    def intent(sid: str, at: int) -> dict[str, object]:
        return {"send_id": sid, "provider": "wechat", "at": at}

    log = [(1, intent("a", 100)), (1, intent("b", 110)), (1, intent("a", 120)),
           (2, intent("c", 130)), (1, intent("a", 140))]
    found = {o.intent["send_id"]: o for o in interrupted(log, done={"b"})}
    assert set(found) == {"a", "c"}  # b has its outcome
    assert (found["a"].partition, found["a"].intent["at"], found["a"].calls) == (1, 100, 3)
    assert (found["c"].partition, found["c"].calls) == (2, 1)
    assert interrupted([], done=set()) == []


def test_the_group_has_settled_once_no_rebalance_ran_for_two_heartbeats_of_polling():
    group = Rebalances(quiet=2.0)
    assert not group.settled(now=100.0, polled_since=0.0)  # subscribed, never assigned
    group.ended(now=100.0)  # assigned
    assert not group.settled(now=101.0, polled_since=0.0)
    assert group.settled(now=102.0, polled_since=0.0)
    # stopping at 500, long after: polled two heartbeats first (a rebalance another member
    # began shows at the next heartbeat)
    assert not group.settled(now=501.0, polled_since=500.0)
    assert group.settled(now=502.0, polled_since=500.0)
    group.began(now=502.5)  # revoked while stopping: wait for the assignment, then quiet
    assert not group.settled(now=510.0, polled_since=500.0)
    group.ended(now=511.0)
    assert not group.settled(now=512.5, polled_since=500.0)
    assert group.settled(now=513.0, polled_since=500.0)


@given(first=st.floats(0.01, 5), longest=st.floats(0.01, 120), made=st.integers(0, 3),
       attempt=st.integers(1, 12), after=st.none() | st.floats(0, 600))
def test_a_backoff_is_jittered_under_its_ceiling_and_never_shorter_than_retry_after(
        first: float, longest: float, made: int, attempt: int, after: float | None) -> None:
    from types import SimpleNamespace
    from unittest.mock import patch

    from connectors.dispatcher import Backoff

    exc = ProviderError("THROTTLED", retryable=True, retry_after=after)
    backoff = Backoff(first, longest, made)
    ceiling = min(longest, first * 2 ** (made + attempt - 1))
    state = SimpleNamespace(attempt_number=attempt,
                            outcome=SimpleNamespace(exception=lambda: exc))
    wait = backoff(state)  # tenacity's call: attempts counted after the `made` ones
    if after:
        assert min(after, longest) <= wait <= max(ceiling, min(after, longest))
    else:
        assert 0 <= wait <= ceiling
    with patch("connectors.dispatcher.random.uniform", lambda low, high: high):
        assert backoff(state) == max(ceiling, min(after, longest) if after else 0.0)

"""The dispatcher's pure policy: failure outcomes, reconciling, the dedupe window, the lease."""

from __future__ import annotations

import httpx
from aiobreaker import CircuitBreakerError

from connectors.adapters import ProviderError
from connectors.dispatch_policy import (
    IDEMPOTENT,
    DedupeWindow,
    Lease,
    failure,
    first_at_or_after,
    reconcile,
    retryable,
)


def test_every_exception_maps_to_an_outcome_with_its_reason():
    assert failure(ProviderError("UNREGISTERED", retryable=False)) == ("REJECTED", "UNREGISTERED")
    assert failure(ProviderError("UNAVAILABLE", retryable=True)) == ("FAILED", "UNAVAILABLE")
    assert failure(CircuitBreakerError("open", reopen_time=None)) == ("FAILED", "circuit_open")
    assert failure(httpx.ReadTimeout("slow")) == ("FAILED", "timeout")
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


def test_the_lease_lapses_without_polls_and_is_confirmed_after_a_stall():
    lease = Lease(length=4.0, gap=3.0, confirm=3.0)
    assert not lease.valid(0.0)  # never polled
    lease.polled(0.0)
    lease.polled(1.0)
    assert lease.valid(4.9)
    assert not lease.valid(5.0)  # frozen past the lease: its partitions may be someone else's
    lease.polled(20.0)  # woke up: suspended until polled for `confirm` seconds
    assert not lease.valid(20.1)
    lease.polled(21.0)
    lease.polled(22.0)
    assert not lease.valid(22.5)
    lease.polled(23.0)
    assert lease.valid(23.1)


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

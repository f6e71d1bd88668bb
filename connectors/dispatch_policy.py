"""The dispatcher's pure policy: which failures are retried, outcomes of failures, reconciling
interrupted sends, the bounded dedupe window, the ownership lease and when the group has settled
(no Kafka here; connectors/dispatcher.py is the plumbing)."""

from __future__ import annotations

import heapq
from collections.abc import Callable, Container, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import httpx
from aiobreaker import CircuitBreakerError

from connectors.adapters import ProviderError
from connectors.adapters.http import NOT_SENT

#: Providers whose vendor drops a repeat of a send carrying the same idempotency key, and for
#: how long (seconds) it remembers the key. The adapters derive the key from send_id:
#: WeChat's `client_msg_id` (one message per openid + client_msg_id within 10 minutes),
#: GeTui's `request_id` (a repeated request_id is dropped; we assume the same 10 minutes).
#: APNs' apns-id, FCM, Huawei, Xiaomi, OPPO, vivo, JPush, SMS and e-mail do not de-duplicate.
IDEMPOTENT: dict[str, float] = {"wechat": 600.0, "getui": 600.0}

#: error_code of an outcome whose provider call was interrupted (a crash, a lost partition) or
#: cut off without an answer after the request may have reached the provider (a read timeout):
#: the provider may have the send; not a failure (a RECEIPT for the send_id makes it delivered).
INTERRUPTED = "interrupted"


def cause(exc: BaseException) -> BaseException:
    """The failure a call really had. The breaker raises CircuitBreakerError *from* the call's
    own failure when that failure opens the circuit (the fail_max-th in a row, or a half-open
    trial's): the call was made and failed as its cause says (a read timeout that trips the
    breaker may have reached the provider). Only a call refused by an open circuit has none."""
    if isinstance(exc, CircuitBreakerError) and exc.__cause__ is not None:
        return exc.__cause__
    return exc


def retryable(exc: BaseException) -> bool:
    """Whether a provider call is worth repeating: a retryable vendor error, a transport error,
    or the provider's circuit being open (it is tried again when the circuit half-opens).
    Whether it *may* be repeated is `retry`'s question (an ambiguous failure may not be)."""
    exc = cause(exc)
    if isinstance(exc, ProviderError):
        return exc.retryable
    return isinstance(exc, httpx.TransportError | CircuitBreakerError)


def ambiguous(exc: BaseException) -> bool:
    """Whether a failed call may have reached the provider: no answer came after the request
    was (or may have been) written — a read or write timeout, a connection reset or closed
    mid-exchange. A connect error, an exhausted pool, an open circuit or any answer of the
    vendor (429, 503 ...) is not ambiguous: the vendor said what it did, or never saw it."""
    exc = cause(exc)
    if isinstance(exc, ProviderError):
        return exc.ambiguous
    return isinstance(exc, httpx.TransportError) and not isinstance(exc, NOT_SENT)


def retry(exc: BaseException, provider: str, first_call_at: float | None, now: float,
          unsure: bool = False, margin: float = 60.0,
          idempotent: dict[str, float] | None = None) -> bool:
    """Whether to call the provider again after `exc`. A retryable failure that certainly did
    not reach the provider is retried. After an ambiguous one (this attempt's, or `unsure`: an
    earlier attempt's, or a call interrupted before this process took the send) the provider
    may already have the send, so it is called again only under an idempotency key its vendor
    still remembers (`reconcile` from the first call at `first_call_at`), else never."""
    if not retryable(exc):
        return False
    if unsure or ambiguous(exc):
        return first_call_at is not None and reconcile(
            provider, first_call_at, now, margin, idempotent) == "resend"
    return True


def failure(exc: BaseException, unsure: bool = False) -> tuple[str, str]:
    """The (status, error_code) an exception ends a send with; anything unexpected is FAILED
    with `error:<type>` so that every send gets its outcome. When this call or an earlier one
    (`unsure`) may have reached the provider, the outcome is unknown: FAILED `interrupted`,
    unless the vendor rejected the send for good (a repeat under its key would have been
    answered as the first call was, had that one been accepted)."""
    exc = cause(exc)
    if isinstance(exc, ProviderError) and not exc.retryable:
        return "REJECTED", exc.code
    if unsure or ambiguous(exc):
        return "FAILED", INTERRUPTED
    if isinstance(exc, ProviderError):
        return "FAILED", exc.code
    if isinstance(exc, CircuitBreakerError):
        return "FAILED", "circuit_open"
    if isinstance(exc, httpx.TimeoutException):
        return "FAILED", "timeout"
    if isinstance(exc, httpx.HTTPError):
        return "FAILED", f"transport:{type(exc).__name__}"
    return "FAILED", f"error:{type(exc).__name__}"


def reconcile(provider: str, intent_at: float, now: float, margin: float = 60.0,
              idempotent: dict[str, float] | None = None) -> str:
    """What to do with a send whose intent was recorded without an outcome: 'resend' (its
    vendor drops a repeat of the same key, still remembered at `now` with `margin` to spare) or
    'unknown' (record it interrupted: the provider may have it)."""
    window = (IDEMPOTENT if idempotent is None else idempotent).get(provider)
    if window is not None and now - intent_at < window - margin:
        return "resend"
    return "unknown"


@dataclass(frozen=True)
class Interrupted:
    """A send with intents and no outcome: its partition, its first intent (the vendor's key is
    remembered from the first call on) and the calls that may have been made (an intent is
    written before each)."""

    partition: int
    intent: Mapping[str, Any]
    calls: int


def interrupted(intents: Iterable[tuple[int, Mapping[str, Any]]],
                done: Container[str]) -> list[Interrupted]:
    """The sends among these (partition, intent) records, in log order, that have no outcome
    (their send_id is not in `done`), each once."""
    found: dict[str, Interrupted] = {}
    for partition, intent in intents:
        sid = intent["send_id"]
        if sid in done:
            continue
        first = found.get(sid)
        found[sid] = Interrupted(partition, intent, 1) if first is None else Interrupted(
            first.partition, first.intent, first.calls + 1)
    return list(found.values())


class DedupeWindow:
    """send_ids with a recorded outcome, each kept `window` seconds after it was recorded."""

    def __init__(self, window: float) -> None:
        self.window = window
        self._at: dict[str, float] = {}
        self._heap: list[tuple[float, str]] = []

    def add(self, send_id: str, at: float) -> None:
        """Remember send_id as done at `at` (epoch seconds; the latest time counts)."""
        if at > self._at.get(send_id, float("-inf")):
            self._at[send_id] = at
            heapq.heappush(self._heap, (at, send_id))

    def __contains__(self, send_id: object) -> bool:
        return send_id in self._at

    def __len__(self) -> int:
        return len(self._at)

    def expire(self, now: float) -> int:
        """Forget send_ids recorded more than `window` seconds before now; how many."""
        gone, cutoff = 0, now - self.window
        while self._heap and self._heap[0][0] < cutoff:
            at, sid = heapq.heappop(self._heap)
            if self._at.get(sid) == at:
                del self._at[sid]
                gone += 1
        return gone


@dataclass
class Lease:
    """Whether this process may still act for its partitions, from how recently its consumer
    was polled (a process frozen past `length` may have been replaced in the group).

    After a gap longer than `gap` between polls, the lease is suspended until the group's
    coordinator has accepted a request this member made after the gap began (a synchronous
    offset commit: a member it replaced is refused with Unknown member or Illegal generation).
    Time alone never ends a suspension: librdkafka reports a lost membership only once a
    heartbeat fails or a session timeout passes without one succeeding, and an answer to a
    heartbeat sent before the stall and read after it restarts that clock, so on a loaded
    machine the loss could show later than any fixed wait (the likely cause of 9 sends accepted
    twice after a dispatcher thawed from a 38 s freeze, under a wait of a session timeout and
    a heartbeat)."""

    length: float
    gap: float
    last_poll: float | None = None
    suspended_since: float | None = None

    def polled(self, now: float) -> None:
        """The consumer was polled (rebalance callbacks ran) at `now`."""
        if self.last_poll is not None and now - self.last_poll > self.gap:
            self.suspended_since = now
        self.last_poll = now

    @property
    def suspended(self) -> bool:
        """After a stall, until the coordinator confirms the membership."""
        return self.suspended_since is not None

    def confirmed(self, asked_at: float) -> None:
        """The coordinator accepted this member's request made at `asked_at`: a suspension that
        began before it ends (one that began later, after another stall, stays)."""
        if self.suspended_since is not None and asked_at >= self.suspended_since:
            self.suspended_since = None

    def valid(self, now: float) -> bool:
        """True while the partitions may be acted for."""
        return (self.last_poll is not None and now - self.last_poll < self.length
                and self.suspended_since is None)


@dataclass
class Rebalances:
    """Whether this process's consumer group has settled, so that it may leave it: no rebalance
    under way (from a revoke, a loss or the subscription to the next assignment) and none begun
    or ended for `quiet` seconds of polling (a rebalance another member begins shows within a
    heartbeat)."""

    quiet: float
    under_way: bool = True  # subscribed, not assigned yet
    last: float = float("-inf")

    def began(self, now: float) -> None:
        """Partitions were revoked or lost at `now`: a rebalance is under way."""
        self.under_way, self.last = True, now

    def ended(self, now: float) -> None:
        """Partitions were assigned at `now`: the rebalance ended."""
        self.under_way, self.last = False, now

    def settled(self, now: float, polled_since: float) -> bool:
        """True when no rebalance is under way and none began or ended for `quiet` seconds,
        counted from `polled_since` at the earliest (the consumer has been polled since)."""
        return not self.under_way and now - max(self.last, polled_since) >= self.quiet


def first_at_or_after(timestamp_at: Callable[[int], int | None], low: int, high: int,
                      ts: int) -> int:
    """The first offset in [low, high) whose record's timestamp is >= ts (high when none),
    by binary search; `timestamp_at(o)` is the timestamp of the first record at or after o
    (None when there is none). Log append times are assumed to grow with the offset."""
    while low < high:
        mid = (low + high) // 2
        at = timestamp_at(mid)
        if at is None or at >= ts:
            high = mid
        else:
            low = mid + 1
    return low

"""Promises 1 and 2, pure: plain decoded records in, a Check out.

Times are epoch milliseconds, as on the topics. A message is (account_id, message_id); a
request, send, escalation or result is the decoded record of its topic."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from streams.verify.model import Check, short

Rec = Mapping[str, Any]
#: Sends Method A decides per channel (the others are per device, or probes).
CHANNEL_REASONS = ("FANOUT", "PRIMARY", "ESCALATION")
#: DeliveryResult statuses about the whole message (FAILED and SENT are about one send).
TERMINAL = ("READ", "UNREACHABLE", "EXHAUSTED")
#: Milliseconds a deadline may differ from its send time plus the read deadline (both rounded).
ROUNDING = 1


@dataclass(frozen=True)
class Timing:
    """The run's deadlines (seconds) and the cut-off: anything whose last deadline is less
    than `settle` seconds before now is pending, not judged."""

    read_deadlines: Mapping[str, float] = field(default_factory=lambda: {
        "LOW": 86400.0, "NORMAL": 3600.0, "HIGH": 600.0, "URGENT": 60.0})
    reach_grace: float = 30.0
    dispatch_hold: float = 60.0
    settle: float = 10.0

    def ms(self, seconds: float) -> int:
        """Seconds as milliseconds."""
        return int(round(seconds * 1000))


def _by_message(records: Iterable[Rec]) -> dict[tuple[str, str], list[Rec]]:
    out: dict[tuple[str, str], list[Rec]] = defaultdict(list)
    for r in records:
        out[(r["account_id"], r["message_id"])].append(r)
    return out


def _later_first(result: Rec) -> int:
    return -int(result["at"])  # the earliest of each status wins the dict


def terminal_outcomes(requests: Iterable[Rec], sends: Iterable[Rec], escalations: Iterable[Rec],
                      results: Iterable[Rec], now_ms: int, timing: Timing
                      ) -> tuple[Check, Counter[str]]:
    """Each requested message ends read, escalated and read, exhausted, expired (sent, never
    read, its deadlines passed) or unreachable with a reason; and how many ended each way.

    Violations: no send and no UNREACHABLE after the reach grace; UNREACHABLE beside a send or
    a READ, or without a reason; a read deadline (PRIMARY send) passed without an escalation or
    a READ stamped by then; an escalation fired after the message was read."""
    check, ends = Check(1, "terminal outcome per request"), Counter[str]()
    sent, escalated = _by_message(sends), _by_message(escalations)
    reported = _by_message(r for r in results if r["status"] in TERMINAL)
    first: dict[tuple[str, str], Rec] = {}
    for r in requests:
        first.setdefault((r["account_id"], r["message_id"]), r)
    settle = timing.ms(timing.settle)
    for key, req in first.items():
        check.checked += 1
        name = f"{short(key[0], 12)}/{short(key[1], 16)}"
        channel_sends = [s for s in sent.get(key, []) if s["reason"] in CHANNEL_REASONS]
        statuses = {r["status"]: r for r in sorted(reported.get(key, []), key=_later_first)}
        read, esc = statuses.get("READ"), escalated.get(key, [])
        if "UNREACHABLE" in statuses:
            if channel_sends or read:
                check.fail(f"{name}: UNREACHABLE and also sent or read")
            elif not statuses["UNREACHABLE"]["detail"]:
                check.fail(f"{name}: UNREACHABLE without a reason")
            ends["unreachable"] += 1
            continue
        if not channel_sends and not read:
            if now_ms < req["created_at"] + timing.ms(timing.reach_grace) + settle:
                check.pending += 1
                ends["pending"] += 1
            else:
                check.fail(f"{name}: no send and no UNREACHABLE "
                           f"{(now_ms - req['created_at']) / 1000:.0f} s after the request")
            continue
        late = [e for e in esc if read is not None and e["fired_at"] > read["at"]]
        if late:
            check.fail(f"{name}: escalated from {late[0]['from_channel']} after it was read")
        pending = False
        for s in channel_sends:
            if s["reason"] != "PRIMARY":
                continue
            due = s["sent_at"] + timing.ms(timing.read_deadlines[s["importance"]])
            if any(e["from_channel"] == s["channel"] for e in esc):
                continue
            if read is not None and read["at"] <= due + ROUNDING:
                continue  # read in time (a READ stamped after the deadline owes its escalation)
            if now_ms < due + settle:
                pending = True
            else:
                check.fail(f"{name}: read deadline on {s['channel']} passed "
                           f"{(now_ms - due) / 1000:.0f} s ago, neither read nor escalated")
        if pending:
            check.pending += 1
            ends["pending"] += 1
        elif read is not None:
            ends["escalated and read" if esc else "read"] += 1
        elif "EXHAUSTED" in statuses:
            ends["exhausted"] += 1
        else:
            ends["expired (sent, not read)"] += 1
    return check, ends


def is_provider_send(send: Rec) -> bool:
    """Whether the dispatcher hands this send to a provider (not the message-level APP record,
    whose per-device sends are the deliveries)."""
    return not (send["channel"] == "APP" and send["device_id"] is None)


_IDENTITY = ("message_id", "account_id", "channel", "device_id", "route")


def one_outcome(sends: Iterable[Rec], outcomes: Iterable[Rec], now_ms: int,
                timing: Timing) -> Check:
    """Every provider send has exactly one ProviderOutcome; no outcome names an unknown send;
    a send_id names one send (a repeat is the same send)."""
    check = Check(2, "one outcome per send")
    by_id: dict[str, Rec] = {}
    for s in sends:
        if not is_provider_send(s):
            continue
        known = by_id.setdefault(s["send_id"], s)
        if any(known[f] != s[f] for f in _IDENTITY):
            check.fail(f"send {short(s['send_id'])}: one send_id, two different sends")
    results: dict[str, list[Rec]] = defaultdict(list)
    for o in outcomes:
        results[o["send_id"]].append(o)
    wait = timing.ms(timing.dispatch_hold + timing.settle)
    for sid, send in by_id.items():
        check.checked += 1
        got = results.get(sid, [])
        if len(got) > 1:
            check.fail(f"send {short(sid)}: {len(got)} outcomes "
                       f"({', '.join(o['status'] for o in got)})")
        elif not got:
            if now_ms < send["sent_at"] + wait:
                check.pending += 1
            else:
                check.fail(f"send {short(sid)} ({send['channel']} {send['reason']}): no outcome "
                           f"{(now_ms - send['sent_at']) / 1000:.0f} s after it was sent")
    for sid in results.keys() - by_id.keys():
        check.fail(f"outcome for send {short(sid)}, which push.sends does not hold")
    return check


def provider_calls(seen: Mapping[str, int], accepted: Mapping[str, int], sends: Iterable[Rec],
                   outcomes: Iterable[Rec]) -> Check:
    """From the provider simulator's counts per send_id: no send accepted twice, no more calls
    than the dispatcher recorded attempts, no call for a send_id that was never sent."""
    check = Check(2, "no provider called twice (simulator)")
    known = {s["send_id"] for s in sends if is_provider_send(s)}
    attempts: dict[str, int] = {}
    for o in outcomes:
        attempts[o["send_id"]] = max(attempts.get(o["send_id"], 0), o["attempts"])
    for sid, calls in seen.items():
        check.checked += 1
        if accepted.get(sid, 0) > 1:
            check.fail(f"send {short(sid)}: accepted by its provider {accepted[sid]} times")
        elif sid not in known:
            check.fail(f"send {short(sid)}: called at the provider, not on push.sends")
        elif sid in attempts and calls > max(attempts[sid], 1):
            check.fail(f"send {short(sid)}: {calls} provider calls, the dispatcher recorded "
                       f"{attempts[sid]} attempt(s)")
    return check

"""Promise 5, pure: no ack without a send it acknowledges; no profile address outside the
profile topic (and the device registry, which names the account)."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from streams.verify.model import Check, short

Rec = Mapping[str, Any]
#: Profile fields that hold personal data.
ADDRESS_FIELDS = ("phone", "wechat_openid", "email")
#: Shorter values are not searched for: they would match by chance.
MIN_LENGTH = 6


def acks_unforged(acks: Iterable[Rec], sends: Iterable[Rec]) -> Check:
    """Every ack that names a send_id (the gateway's, from a signed token) matches that send:
    same account, message, channel and, for a device send, device. Acks without a send_id
    cannot be traced to a send and are counted in the note."""
    check = Check(5, "acks match a real send")
    by_id = {s["send_id"]: s for s in sends}
    untraced = 0
    for ack in acks:
        sid = ack["send_id"]
        if sid is None:
            untraced += 1
            continue
        check.checked += 1
        send = by_id.get(sid)
        what = f"{ack['kind']} ack for send {short(sid)}"
        if send is None:
            check.fail(f"{what}: no such send")
            continue
        wrong = [f for f in ("account_id", "message_id", "channel") if ack[f] != send[f]]
        if send["device_id"] is not None and ack["device_id"] != send["device_id"]:
            wrong.append("device_id")
        if wrong:
            check.fail(f"{what}: {', '.join(wrong)} differ from the send's")
    check.note = f"{untraced} acks without send_id (not traceable)" if untraced else ""
    return check


def addresses(profiles: Iterable[Rec]) -> set[str]:
    """Every address the profiles hold (long enough to search for)."""
    return {str(p[f]) for p in profiles for f in ADDRESS_FIELDS
            if p.get(f) and len(str(p[f])) >= MIN_LENGTH}


def mask(value: str) -> str:
    """An address shown in a report: its first two characters only."""
    return value[:2] + "***"


def personal_data(found: set[str], places: Iterable[tuple[str, bytes]]) -> Check:
    """None of `found` (profile addresses) occurs in the bytes of any place (a topic's
    records, a ClickHouse table's rows), as UTF-8."""
    check = Check(5, "personal data only on account.profiles")
    if not found:
        check.note = "no addresses on account.profiles"
        return check
    pattern = re.compile(b"|".join(re.escape(a.encode()) for a in sorted(found, key=len,
                                                                        reverse=True)))
    hits: dict[tuple[str, str], int] = {}
    for where, data in places:
        check.checked += 1
        for match in pattern.finditer(data):
            hit = (where, match.group().decode())
            hits[hit] = hits.get(hit, 0) + 1
    for (where, value), n in hits.items():
        check.fail(f"{mask(value)} found {n} time(s) in {where}")
    check.note = f"{len(found)} addresses searched"
    return check

"""Output records of the stream processors, each built in this one place (plain dicts, no I/O)."""

from __future__ import annotations

import re
from typing import Any, NamedTuple


class Output(NamedTuple):
    """One record to produce: unprefixed topic, key, record name, value, optional partition,
    and for a record brought to its owner partition, the topic it stands for (a header)."""

    topic: str
    key: str
    record: str
    value: dict[str, Any]
    partition: int | None = None
    source: str | None = None


def ms(t: float) -> int:
    """Epoch seconds to epoch milliseconds."""
    return round(t * 1000)


def channel_send(sid: str, message_id: str, account_id: str, channel: str,
                 device_id: str | None, route: str | None, reason: str, attempt: int,
                 importance: str, now: float, content: dict[str, Any] | None = None) -> Output:
    """A ChannelSend on push.sends (account-level when device_id is None); `content` is the
    request's title, body, read_action and link (none for a probe)."""
    return Output("push.sends", account_id, "ChannelSend", {
        "send_id": sid, "message_id": message_id, "account_id": account_id,
        "channel": channel, "device_id": device_id, "route": route, "reason": reason,
        "attempt": attempt, "importance": importance, **(content or {}), "sent_at": ms(now)})


def content(req: dict[str, Any]) -> dict[str, Any]:
    """What a send carries of its PushRequest for the provider: title, body, read action, link."""
    return {"title": req["title"], "body": req["body"], "read_action": req["read_action"],
            "link": req.get("link")}


def delivery_result(message_id: str, account_id: str, status: str, detail: str, now: float,
                    channel: str | None = None, device_id: str | None = None,
                    route: str | None = None, sid: str | None = None) -> Output:
    """A DeliveryResult on push.results."""
    return Output("push.results", account_id, "DeliveryResult", {
        "message_id": message_id, "account_id": account_id, "status": status,
        "channel": channel, "device_id": device_id, "route": route, "send_id": sid,
        "detail": detail, "at": ms(now)})


def escalation(message_id: str, account_id: str, from_channel: str, to_channel: str | None,
               deadline_at: float, now: float) -> Output:
    """An Escalation on push.escalations."""
    return Output("push.escalations", account_id, "Escalation", {
        "message_id": message_id, "account_id": account_id, "from_channel": from_channel,
        "to_channel": to_channel, "deadline_at": ms(deadline_at), "fired_at": ms(now)})


def lifecycle(account_id: str, state: str, pushes: int, now: float) -> Output:
    """An AccountLifecycle change on account.lifecycle."""
    return Output("account.lifecycle", account_id, "AccountLifecycle", {
        "account_id": account_id, "lifecycle": state, "pushes": pushes, "changed_at": ms(now)})


def route_change(device_id: str, account_id: str, from_route: str | None, to_route: str,
                 success_rate: float, reason: str, now: float) -> Output:
    """A RouteChange on device.route-changes."""
    return Output("device.route-changes", device_id, "RouteChange", {
        "device_id": device_id, "account_id": account_id, "from_route": from_route,
        "to_route": to_route, "success_rate": success_rate, "reason": reason,
        "changed_at": ms(now)})


def campaign_tally(campaign_id: str, partition: int, targeted: int, acked: int,
                   due_at: float, now: float) -> Output:
    """One account partition's absolute tally of a campaign, to the campaign's owner."""
    return Output("pushcascade.campaign-events", campaign_id, "CampaignEvent", {
        "campaign_id": campaign_id, "partition": partition, "targeted": targeted,
        "acked": acked, "due_at": ms(due_at), "at": ms(now)})


def campaign_due(campaign_id: str, due_at: float, partition: int) -> Output:
    """The campaign's decision deadline, to its own partition: behind every queued tally."""
    return Output("pushcascade.campaign-events", campaign_id, "CampaignDue", {
        "campaign_id": campaign_id, "due_at": ms(due_at)}, partition)


def campaign_decision(campaign_id: str, targeted: int, acked: int, ratio: float | None,
                      threshold: float, fallback: bool, now: float,
                      partition: int | None = None) -> Output:
    """A CampaignDecision on campaign.decisions; with a partition, the same record brought to
    that account partition (through pushcascade.account-events) to settle its devices."""
    value = {"campaign_id": campaign_id, "targeted": targeted, "acked": acked,
             "ratio": ratio or 0.0, "threshold": threshold, "fallback": fallback,
             "decided_at": ms(now)}
    if partition is None:
        return Output("campaign.decisions", campaign_id, "CampaignDecision", value)
    return Output("pushcascade.account-events", campaign_id, "CampaignDecision", value,
                  partition, source="campaign.decisions")


#: The largest message the producers send (librdkafka's message.max.bytes, 1,000,000 by
#: default, which no producer here changes): a dead letter, its own key included, stays under it.
MESSAGE_MAX_BYTES = 1_000_000
#: What a dead letter adds around its key, value, topic and reason: Avro's header, union
#: branches, lengths, partition, offset and times, and Kafka's framing of the message.
LETTER_FRAMING = 160
#: Characters of a reason a dead letter keeps (an exception's text may quote a whole record).
ERROR_CHARS = 4000


def dead_letter(key: bytes | None, value: bytes | None, topic: str, partition: int, offset: int,
                error: str, now: float) -> dict[str, Any]:
    """A DeadLetter value: the original key and bytes, where they were read, and why (for a
    topic with personal data, only the kind of error: see personal_error).

    The letter fits a message (MESSAGE_MAX_BYTES) sent, as every writer sends it, with the
    original key as its own key: a reason is cut at ERROR_CHARS; the value of a record near the
    limit is left out (null, its size in omitted_value_bytes); then a key too long to be in the
    letter twice is left out of its value, and a reason too long for what room is left is cut,
    each saying so. (Only a key within LETTER_FRAMING bytes of the limit cannot be helped.)"""
    error = personal_error(topic, error)
    if len(error) > ERROR_CHARS:
        error = f"{error[:ERROR_CHARS]} ... ({len(error) - ERROR_CHARS} more characters cut)"
    keys = len(key or b"")
    room = MESSAGE_MAX_BYTES - LETTER_FRAMING - len(topic.encode()) - keys  # beside its own key
    omitted: int | None = None
    if value is not None and keys + len(value) + _size(error) > room:
        omitted = len(value)
        value = None
    if key is not None and keys + _size(error) > room:
        key, error = None, f"{error} (key of {keys} bytes left out: the letter's own key holds it)"
    if _size(error) > room:
        kept = error.encode(errors="surrogatepass")[:max(room - 16, 0)]
        error = kept.decode(errors="ignore") + " ... (cut)"
    return {"key": key, "value": value, "topic": topic, "partition": partition,
            "offset": offset, "error": error, "failed_at": ms(now), "omitted_value_bytes": omitted}


def _size(text: str) -> int:
    """Bytes of a text in UTF-8."""
    return len(text.encode(errors="surrogatepass"))


#: Topics whose records hold personal data (streams/privacy.py), matched by suffix (prefixes).
PERSONAL_TOPICS = ("account.profiles", "device.registry")
#: What follows any of these in an error text may quote a record's values.
_QUOTED = re.compile(r"""['"`=]|b'|\\x""")


def unquoted(error: str) -> str:
    """An error text up to anything it quotes (the field, the exception type and position),
    never a value."""
    return _QUOTED.split(error, maxsplit=1)[0].rstrip(" :(")


def personal_error(topic: str, error: str) -> str:
    """The error text kept for a record of a personal topic: the text before anything quoted
    (the exception type and position), never a value; other topics' errors as they are."""
    if not topic.endswith(PERSONAL_TOPICS):
        return error
    kept = unquoted(error)
    return kept[:200] + (" (detail withheld: personal data)" if kept != error else "")

"""The account router: Method A in Faust, one agent owning each account partition, and its timer."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import Any

import faust
from faust.types import EventT

from schemas import CATALOG, Codec, SchemaError, key_partition
from streams.app import create_app
from streams.campaigns import Campaigns
from streams.devices import DeviceStage, receipt_deadlines
from streams.domain.channels import (
    Account,
    ChannelPolicy,
    Message,
    escalation_target,
    is_due,
    plan_push,
    record_read,
    send_id,
)
from streams.domain.deadlines import Due
from streams.metrics import Counts
from streams.outbox import Outbox
from streams.settings import Settings
from streams.timers import DeadlineTimer

log = logging.getLogger(__name__)

#: Inputs the router consumes, and the internal topics that bring records to their owner.
INPUTS = ("push.requests", "push.acks", "account.settings", "account.profiles",
          "device.registry", "pushcascade.account-events", "pushcascade.deadlines")
FORWARDED, DEADLINES = "pushcascade.account-events", "pushcascade.deadlines"
EXPECTED = {s.name: s.record for s in CATALOG if s.name in INPUTS and s.name != FORWARDED}
PROFILE_CHANNELS = (("WECHAT", "wechat_openid"), ("SMS", "phone"), ("EMAIL", "email"))


def now_ms() -> int:
    """Wall-clock epoch milliseconds."""
    return int(time.time() * 1000)


def policy_of(settings: Settings) -> ChannelPolicy:
    """The Method A policy from the settings."""
    t = settings.tuning
    return ChannelPolicy(
        new_account_pushes=t.new_account_pushes, k1=t.score_k1, k2=t.score_k2, order=t.channels,
        read_deadlines={i: t.read_deadline(i) for i in ("LOW", "NORMAL", "HIGH", "URGENT")},
    )


def message_deadlines(message: dict[str, Any]) -> Iterator[Due]:
    """The pending deadlines of a stored message: its read deadline and receipt deadlines."""
    if message.get("deadline_at") is not None and not message.get("escalated"):
        yield Due(message["deadline_at"], message["partition"], message["message_id"],
                  message["account_id"], "READ", None, message["message_id"])
    yield from receipt_deadlines(message)


class Router:
    """Consumes every account-keyed input, keeps account and message state, escalates."""

    def __init__(self, settings: Settings, bootstrap: str, codec: Codec | None = None) -> None:
        self.settings = settings
        self.codec = codec or Codec(settings.connections.schema_registry_url or None)
        self.policy = policy_of(settings)
        self.partitions = settings.tuning.partitions
        self.prefix = settings.tuning.topic_prefix
        self.app = app = create_app(settings, bootstrap)
        self.outbox = Outbox(bootstrap)
        self.outbox.attach(app)
        # bytes keys are stored raw; values (dicts) as JSON, in the store and the changelog
        self.accounts = app.Table("accounts", partitions=self.partitions, key_type=bytes)
        self.messages = app.Table("messages", partitions=self.partitions, key_type=bytes)
        devices = app.Table("devices", partitions=self.partitions, key_type=bytes)
        self.counts = Counts("router")
        self.timer = DeadlineTimer(app, self.messages, settings.topic(DEADLINES),
                                   message_deadlines, self.fire, settings.tuning.deadline_tick)
        self.stage = DeviceStage(settings, devices, self.emit, self.timer.add)
        self.campaigns = Campaigns(app, settings, self.codec, self.emit, self.dead_letter)
        source = app.topic(*[settings.topic(n) for n in INPUTS], key_type=bytes,
                           value_type=bytes, partitions=self.partitions)
        app.agent(source, name="accounts")(self.run)

    # -- the agent ---------------------------------------------------------------------------

    async def run(self, stream: faust.StreamT) -> None:
        """Handle every input event in partition order."""
        event: EventT
        async for event in stream.events():
            try:
                await self.handle(event)
            except Exception as exc:  # a bad record must never stop the partition
                log.exception("router failed on %s", event.message.tp)
                await self.dead_letter(event, f"processing failed: {exc!r}")

    async def handle(self, event: EventT) -> None:
        """Decode, bring the record to its owner partition, then apply it to state."""
        msg = event.message
        name = msg.topic[len(self.prefix):]
        source = name
        if name == FORWARDED:
            source = dict(msg.headers or []).get("source", b"").decode()
        try:
            record = self.codec.decode(msg.value, topic=source, expected=EXPECTED.get(source))
        except SchemaError as exc:
            await self.dead_letter(event, str(exc))
            return
        account_id = record.get("account_id")
        if not account_id:
            await self.dead_letter(event, f"{source}: record without account_id")
            return
        owner = key_partition(account_id, self.partitions)
        if name not in (FORWARDED, DEADLINES) and (
                name == "device.registry" or owner != msg.partition):
            self.outbox.produce(self.settings.topic(FORWARDED), account_id.encode(),
                                msg.value or b"", partition=owner,
                                headers=[("source", name.encode())])
            self.counts.add("forwarded")
            return
        handler = getattr(self, "on_" + source.replace(".", "_").replace("-", "_"))
        await handler(event, record, msg.partition)

    async def on_push_requests(self, event: EventT, req: dict[str, Any], partition: int) -> None:
        """A push request: fan out to a new account, or send on the primary with a deadline."""
        mid = req["message_id"]
        if self.messages.get(mid.encode()) is not None:
            self.counts.add("duplicate_request")
            return
        account = self._account(req["account_id"])
        now = time.time()
        plan = plan_push(account, req["importance"], now, self.policy)
        if plan.unreachable:
            self.counts.add("unreachable")
            self.emit("push.results", req["account_id"], "DeliveryResult", {
                "message_id": mid, "account_id": account.account_id, "status": "UNREACHABLE",
                "channel": None, "device_id": None, "route": None, "send_id": None,
                "detail": "no enabled channel: no active device and no address", "at": now_ms()})
            return
        message = Message(mid, account.account_id, req["importance"], partition,
                          sent=[s.channel for s in plan.sends], deadline_at=plan.deadline_at,
                          device_ids=req["device_ids"], campaign_id=req["campaign_id"])
        counted = plan.established or account.lifecycle == "NEW"  # pushes matter until then
        for s in plan.sends:
            self.send(message, account, s.channel, s.reason, s.attempt)
        if plan.established:
            self.emit("account.lifecycle", account.account_id, "AccountLifecycle", {
                "account_id": account.account_id, "lifecycle": account.lifecycle,
                "pushes": account.pushes, "changed_at": now_ms()})
        self._save(account if counted else None, message)
        if plan.deadline_at is not None:
            self.timer.add(Due(plan.deadline_at, partition, mid, account.account_id))

    async def on_push_acks(self, event: EventT, ack: dict[str, Any], partition: int) -> None:
        """A READ ack counts for the channel learning and cancels the message's escalation."""
        account_raw = self.accounts.get(ack["account_id"].encode())
        if account_raw is None:
            await self.dead_letter(event, f"ack for unknown account {ack['account_id']!r}")
            return
        message_raw = self.messages.get(ack["message_id"].encode())
        if ack["kind"] == "RECEIPT":
            message = Message.from_dict(message_raw) if message_raw else None
            if self.stage.receipt(ack, message):
                self._save(None, message)
            return
        if message_raw is None:
            await self.dead_letter(event, f"ack for unknown message {ack['message_id']!r}")
            return
        account, message = Account.from_dict(account_raw), Message.from_dict(message_raw)
        if message.account_id != account.account_id:
            await self.dead_letter(event, f"ack account {account.account_id!r} does not own "
                                          f"message {message.message_id!r}")
            return
        first = not message.reads
        if not record_read(account, message, ack["channel"]):
            self.counts.add("duplicate_ack")
            return
        self._save(account, message)
        if first:
            self.emit("push.results", account.account_id, "DeliveryResult", {
                "message_id": message.message_id, "account_id": account.account_id,
                "status": "READ", "channel": ack["channel"], "device_id": ack["device_id"],
                "route": ack["route"], "send_id": ack["send_id"], "detail": "", "at": now_ms()})

    async def on_account_settings(self, event: EventT, rec: dict[str, Any], partition: int) -> None:
        """The user's override of primary and secondary channel; both null clears it."""
        account = self._account(rec["account_id"])
        account.primary, account.secondary = rec["primary"], rec["secondary"]
        self._save(account)

    async def on_account_profiles(self, event: EventT, rec: dict[str, Any], partition: int) -> None:
        """Which address channels are enabled; the addresses themselves are never stored."""
        account = self._account(rec["account_id"])
        account.addresses = [c for c, f in PROFILE_CHANNELS if rec.get(f)]
        self._save(account)

    async def on_device_registry(self, event: EventT, rec: dict[str, Any], partition: int) -> None:
        """A device (de)registration enables or disables APP for its account."""
        account = self._account(rec["account_id"])
        devices = [d for d in account.devices if d != rec["device_id"]]
        account.devices = devices + [rec["device_id"]] if rec["active"] else devices
        self.stage.register(rec)
        self._save(account)

    async def on_pushcascade_deadlines(self, event: EventT, rec: dict[str, Any],
                                       partition: int) -> None:
        """A deadline came due: a receipt deadline falls back to another route; a read deadline
        escalates the unread message to its next channel, once."""
        now = time.time()
        due_at = rec["due_at"] / 1000
        if rec["kind"] == "RECEIPT":
            raw = self.messages.get(rec["message_id"].encode())
            if raw is not None and self.stage.receipt_due(message := Message.from_dict(raw),
                                                          rec["device_id"], due_at):
                self._save(None, message)
            return
        raw = self.messages.get(rec["key"].encode())
        if raw is None or not is_due(message := Message.from_dict(raw), due_at, now + 0.001):
            self.counts.add("deadline_stale")
            return
        account = self._account(message.account_id)
        target = escalation_target(account, message, self.policy)
        from_channel = message.sent[0]
        message.escalated, message.deadline_at = True, None
        if target:
            message.sent.append(target)
        self.emit("push.escalations", message.account_id, "Escalation", {
            "message_id": message.message_id, "account_id": message.account_id,
            "from_channel": from_channel, "to_channel": target,
            "deadline_at": rec["due_at"], "fired_at": now_ms()})
        if target:
            self.send(message, account, target, "ESCALATION", 1)
        else:
            self.emit("push.results", message.account_id, "DeliveryResult", {
                "message_id": message.message_id, "account_id": message.account_id,
                "status": "EXHAUSTED", "channel": None, "device_id": None, "route": None,
                "send_id": None, "detail": "read deadline passed; no channel left",
                "at": now_ms()})
        self._save(None, message)

    # -- the timer ---------------------------------------------------------------------------

    def fire(self, due: Due) -> None:
        """Emit a due deadline to its owner partition, unless the table shows it is settled."""
        raw = self.messages.get((due.message_id or due.key).encode())
        if raw is None:
            return
        if due.kind == "READ" and (raw.get("deadline_at") != due.due_at or raw.get("escalated")):
            return
        self.emit(DEADLINES, due.account_id, "Deadline", {
            "key": due.key, "account_id": due.account_id, "message_id": raw["message_id"],
            "kind": due.kind, "device_id": due.device_id, "due_at": round(due.due_at * 1000)},
            partition=due.partition)

    # -- helpers -----------------------------------------------------------------------------

    def _account(self, account_id: str) -> Account:
        raw = self.accounts.get(account_id.encode())
        return Account.from_dict(raw) if raw is not None else Account(account_id)

    def _save(self, account: Account | None, message: Message | None = None) -> None:
        if account is not None:
            self.accounts[account.account_id.encode()] = account.to_dict()
        if message is not None:
            self.messages[message.message_id.encode()] = message.to_dict()

    def send(self, message: Message, account: Account, channel: str, reason: str,
             attempt: int) -> None:
        """Emit the account-level ChannelSend; an APP send also goes to each device (Method B)."""
        self.counts.add("send_" + reason)
        self.emit("push.sends", message.account_id, "ChannelSend", {
            "send_id": send_id(message.message_id, channel, None, attempt),
            "message_id": message.message_id, "account_id": message.account_id,
            "channel": channel, "device_id": None, "route": None, "reason": reason,
            "attempt": attempt, "importance": message.importance, "sent_at": now_ms()})
        if channel == "APP":
            self.stage.deliver(message, account.devices, attempt)

    def emit(self, name: str, key: str, record: str, value: dict[str, Any],
             partition: int | None = None) -> None:
        """Encode a record and queue it in the outbox (flushed before offsets are committed)."""
        self.outbox.produce(self.settings.topic(name), key.encode(),
                            self.codec.encode(record, value), partition=partition)

    async def dead_letter(self, event: EventT, error: str) -> None:
        """Send the original record with the reason to push.dlq; the partition moves on."""
        msg = event.message
        self.counts.add("dead_letter")
        self.emit("push.dlq", (msg.key or b"").decode(errors="replace"), "DeadLetter", {
            "key": msg.key, "value": msg.value, "topic": msg.topic, "partition": msg.partition,
            "offset": msg.offset, "error": error, "failed_at": now_ms()})

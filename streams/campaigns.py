"""The campaign agent: counts original-route receipts per campaign and decides fallback once."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

import faust
from faust.types import EventT

from schemas import Codec, SchemaError
from streams.domain.campaigns import CampaignTally, decide, record_receipt, record_target
from streams.domain.channels import send_id
from streams.domain.deadlines import Due
from streams.metrics import Counts
from streams.settings import Settings
from streams.timers import DeadlineTimer

log = logging.getLogger(__name__)
TOPIC = "pushcascade.campaign-events"


def campaign_deadlines(state: dict[str, Any]) -> Iterator[Due]:
    """The pending decision of a stored campaign, if any."""
    if not state["decided"] and state["due_at"] is not None:
        yield Due(state["due_at"], state["partition"], state["tally"]["campaign_id"], "",
                  "CAMPAIGN")


class Campaigns:
    """One agent per campaign partition: tally targets and receipts, decide after the deadline."""

    def __init__(self, app: faust.App, settings: Settings, codec: Codec,
                 emit: Callable[..., None],
                 dead_letter: Callable[[EventT, str], Any]) -> None:
        self.settings, self.codec, self.emit, self.dead_letter = settings, codec, emit, dead_letter
        self.threshold = settings.tuning.campaign_fallback_ratio
        self.table = app.Table("campaigns", partitions=settings.tuning.partitions,
                               key_type=bytes)
        self.counts = Counts("campaigns")
        self.timer = DeadlineTimer(app, self.table, settings.topic(TOPIC), campaign_deadlines,
                                   self.fire, settings.tuning.deadline_tick)
        source = app.topic(settings.topic(TOPIC), key_type=bytes, value_type=bytes,
                           partitions=settings.tuning.partitions)
        app.agent(source, name="campaigns")(self.run)

    async def run(self, stream: faust.StreamT) -> None:
        """Handle campaign events and decision deadlines in partition order."""
        async for event in stream.events():
            try:
                name, rec = self.codec.decode_named(event.message.value, topic=TOPIC)
            except SchemaError as exc:
                await self.dead_letter(event, str(exc))
                continue
            try:
                self.handle(name, rec, event.message.partition)
            except Exception as exc:  # a bad record must never stop the partition
                log.exception("campaign agent failed")
                await self.dead_letter(event, f"processing failed: {exc!r}")

    def handle(self, name: str, rec: dict[str, Any], partition: int) -> None:
        """Apply one CampaignEvent or a due Deadline to the campaign's state."""
        campaign_id = rec["campaign_id"] if name == "CampaignEvent" else rec["key"]
        key = campaign_id.encode()
        state = self.table.get(key) or {
            "tally": CampaignTally(campaign_id).to_dict(), "targets": {}, "due_at": None,
            "decided": False, "partition": partition}
        tally = CampaignTally.from_dict(state["tally"])
        if name == "Deadline":
            if state["decided"] or state["due_at"] != rec["due_at"] / 1000:
                self.counts.add("deadline_stale")
                return
            self.decide(tally, state)
        elif rec["kind"] == "TARGET":
            if state["decided"]:
                self.counts.add("target_after_decision")
                return
            record_target(tally, rec["device_id"])
            state["targets"][rec["device_id"]] = {
                k: rec[k] for k in ("message_id", "account_id", "route", "fallback_route",
                                    "importance", "attempt")}
            due_at = rec["due_at"] / 1000
            if state["due_at"] is None or due_at > state["due_at"]:
                state["due_at"] = due_at
                self.timer.add(Due(due_at, partition, campaign_id, "", "CAMPAIGN"))
        else:
            outcome = record_receipt(tally, rec["device_id"], rec["route"],
                                     state["targets"].get(rec["device_id"], {}).get(
                                         "route", rec["route"]))
            self.counts.add("receipt_" + outcome.lower())
        state["tally"] = tally.to_dict()
        self.table[key] = state

    def decide(self, tally: CampaignTally, state: dict[str, Any]) -> None:
        """Record the decision; fall back for the silent devices only below the threshold."""
        decision = decide(tally, self.threshold)
        state["decided"] = True
        now = time.time()
        self.emit("campaign.decisions", tally.campaign_id, "CampaignDecision", {
            "campaign_id": tally.campaign_id, "targeted": decision.targeted,
            "acked": decision.acked, "ratio": decision.ratio or 0.0,
            "threshold": self.threshold, "fallback": decision.fallback,
            "decided_at": round(now * 1000)})
        for device_id in decision.fallback_devices:
            target = state["targets"][device_id]
            if not target["fallback_route"]:
                self.counts.add("no_fallback_route")
                continue
            attempt = target["attempt"] + 1
            self.counts.add("send_FALLBACK_ROUTE")
            self.emit("push.sends", target["account_id"], "ChannelSend", {
                "send_id": send_id(target["message_id"], "APP", device_id, attempt),
                "message_id": target["message_id"], "account_id": target["account_id"],
                "channel": "APP", "device_id": device_id, "route": target["fallback_route"],
                "reason": "FALLBACK_ROUTE", "attempt": attempt,
                "importance": target["importance"], "sent_at": round(now * 1000)})

    def fire(self, due: Due) -> None:
        """Emit the decision deadline to the campaign's partition (the agent re-checks it)."""
        state = self.table.get(due.key.encode())
        if state is None or state["decided"] or state["due_at"] != due.due_at:
            return
        self.emit(TOPIC, due.key, "Deadline", {
            "key": due.key, "account_id": "", "message_id": "", "kind": "CAMPAIGN",
            "device_id": None, "due_at": round(due.due_at * 1000)}, partition=due.partition)

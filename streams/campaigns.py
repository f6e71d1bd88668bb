"""The campaign agent: a campaign's owner sums its account partitions' tallies, decides once."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import faust
from faust.types import EventT

from schemas import Codec, SchemaError
from streams.domain.campaigns import Campaign, decide, partitions_to_tell, record_tally
from streams.domain.deadlines import Due
from streams.domain.records import Output, campaign_decision, campaign_due
from streams.domain.state import CAMPAIGNS
from streams.metrics import Counts
from streams.settings import Settings
from streams.state import StateTables, event_time, handle_events
from streams.timers import DeadlineTimer

log = logging.getLogger(__name__)
TOPIC = "pushcascade.campaign-events"


class Campaigns:
    """One agent per campaign partition: O(1) per tally, one decision told where it matters."""

    def __init__(self, app: faust.App, settings: Settings, codec: Codec,
                 emit: Callable[[Output, int], None], state: StateTables,
                 dead_letter: Callable[[EventT, str], None]) -> None:
        self.codec, self.emit, self.state, self.dead_letter = codec, emit, state, dead_letter
        self.threshold = settings.tuning.campaign_fallback_ratio
        self.counts = Counts("campaigns")
        self.timer = DeadlineTimer(app, settings.topic(TOPIC), state, CAMPAIGNS,
                                   frozenset({"CAMPAIGN"}), self._dues, self.fire,
                                   settings.tuning.deadline_tick)
        source = app.topic(settings.topic(TOPIC), key_type=bytes, value_type=bytes,
                           partitions=settings.tuning.partitions)
        app.agent(source, name="campaigns")(self.run)

    async def run(self, stream: faust.StreamT) -> None:
        """Handle tallies and decision deadlines in partition order, each all or nothing."""
        await handle_events(stream, self.state, None, self.handle, self.dead_letter,
                            self.counts)

    async def handle(self, event: EventT) -> None:
        """Decode one campaign event and apply it (an undecodable one is dead-lettered)."""
        try:
            name, rec = self.codec.decode_named(event.message.value, topic=TOPIC)
            if name not in ("CampaignEvent", "CampaignDue"):
                raise SchemaError(TOPIC, f"expected CampaignEvent or CampaignDue, got {name}")
        except SchemaError as exc:
            self.dead_letter(event, str(exc))
            return
        handle = self.on_tally if name == "CampaignEvent" else self.on_due
        handle(rec, event.message.partition, event_time(event.message))

    def _load(self, campaign_id: str, partition: int) -> Campaign:
        raw = self.state.at(partition).get(CAMPAIGNS, campaign_id.encode())
        return Campaign.from_dict(raw) if raw else Campaign(campaign_id, partition)

    def on_tally(self, rec: dict[str, Any], partition: int, now: float) -> None:
        """Take one account partition's tally (a partition new after the decision is told it)."""
        campaign = self._load(rec["campaign_id"], partition)
        record_tally(campaign, rec["partition"], rec["targeted"], rec["acked"],
                     rec["due_at"] / 1000)  # a later deadline is in the timers table with it
        if campaign.decided:
            self.counts.add("tally_after_decision")
            self._tell(campaign, now)
        self.state.at(partition).put(CAMPAIGNS, campaign.campaign_id.encode(),
                                     campaign.to_dict())

    def fire(self, due: Due) -> None:
        """The decision deadline came: send it to the campaign's partition, behind the tallies
        queued there (a busy worker may not have applied them yet)."""
        campaign = self._load(due.message_id, due.partition)
        if not campaign.decided and campaign.due_at == due.due_at:
            self.emit(campaign_due(campaign.campaign_id, due.due_at, due.partition),
                      due.partition)

    def on_due(self, rec: dict[str, Any], partition: int, now: float) -> None:
        """Decide, once, unless a tally applied since moved the deadline later."""
        campaign = self._load(rec["campaign_id"], partition)
        if campaign.decided or campaign.due_at != rec["due_at"] / 1000:
            self.counts.add("deadline_stale")
            return
        decision = decide(campaign, self.threshold)
        self.counts.add("decided_fallback" if decision.fallback else "decided_no_fallback")
        self.emit(campaign_decision(campaign.campaign_id, decision.targeted, decision.acked,
                                    decision.ratio, self.threshold, decision.fallback, now),
                  partition)
        self._tell(campaign, now)
        self.state.at(partition).put(CAMPAIGNS, campaign.campaign_id.encode(), campaign.to_dict())

    def _tell(self, campaign: Campaign, now: float) -> None:
        """Send the decision to each account partition holding devices of the campaign."""
        for p in partitions_to_tell(campaign):
            self.emit(campaign_decision(campaign.campaign_id, campaign.targeted, campaign.acked,
                                        campaign.acked / campaign.targeted
                                        if campaign.targeted else None,
                                        self.threshold, campaign.fallback, now, partition=p),
                      campaign.partition)

    @staticmethod
    def _dues(value: dict[str, Any]) -> list[Due]:
        """A stored campaign's pending decision deadline, if any."""
        if value["decided"] or value["due_at"] is None:
            return []
        return [Due(value["due_at"], value["partition"], value["campaign_id"], "", "CAMPAIGN",
                    None, value["campaign_id"])]

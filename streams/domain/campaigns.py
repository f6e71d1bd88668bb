"""Campaign trigger: fall back for silent devices only when too few acked on the original route.

The campaign's owner keeps counters only: the latest absolute tally of each account partition
(targeted devices, devices that acked on their original route, latest receipt deadline). A
tally overwrites the partition's previous one, so repeats and replays never count twice, and
every event costs O(1) whatever the campaign's size. Per-device state stays with the account.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

#: Seconds the owner waits after the last receipt deadline before deciding, so the receipts
#: counted just before it (reported once per commit) reach it.
SETTLE = 1.0


@dataclass
class Campaign:
    """What the owner of a campaign knows: each account partition's tally, and its decision."""

    campaign_id: str
    partition: int
    parts: dict[str, list[float]] = field(default_factory=dict)
    due_at: float | None = None
    decided: bool = False
    fallback: bool = False
    told: list[int] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-compatible form for a table."""
        return {"campaign_id": self.campaign_id, "partition": self.partition,
                "parts": {p: list(v) for p, v in self.parts.items()}, "due_at": self.due_at,
                "decided": self.decided, "fallback": self.fallback, "told": list(self.told)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Campaign:
        """Inverse of to_dict."""
        return cls(**data)

    @property
    def targeted(self) -> int:
        """Devices targeted over all partitions."""
        return int(sum(v[0] for v in self.parts.values()))

    @property
    def acked(self) -> int:
        """Devices that acked on their original route over all partitions."""
        return int(sum(v[1] for v in self.parts.values()))


def record_tally(campaign: Campaign, partition: int, targeted: int, acked: int,
                 due_at: float) -> bool:
    """Take a partition's latest tally; True when the decision time moved later."""
    campaign.parts[str(partition)] = [targeted, min(acked, targeted), due_at]
    decide_at = due_at + SETTLE
    if campaign.due_at is None or decide_at > campaign.due_at:
        campaign.due_at = round(decide_at, 3)
        return not campaign.decided
    return False


@dataclass(frozen=True)
class CampaignDecision:
    """The recorded fallback decision of a campaign after its receipt deadlines."""

    campaign_id: str
    targeted: int
    acked: int
    ratio: float | None
    threshold: float
    fallback: bool


def decide(campaign: Campaign, threshold: float) -> CampaignDecision:
    """Fallback iff targeted > 0 and acked/targeted < threshold (equal -> no fallback)."""
    targeted, acked = campaign.targeted, campaign.acked
    ratio = acked / targeted if targeted else None
    fallback = ratio is not None and ratio < threshold
    campaign.decided, campaign.fallback = True, fallback
    return CampaignDecision(campaign.campaign_id, targeted, acked, ratio, threshold, fallback)


def partitions_to_tell(campaign: Campaign) -> list[int]:
    """Account partitions with devices in the campaign that have not been told the decision."""
    todo = sorted(int(p) for p in campaign.parts if int(p) not in campaign.told)
    campaign.told.extend(todo)
    return todo

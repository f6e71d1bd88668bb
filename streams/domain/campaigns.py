"""Campaign trigger: fall back for silent devices only when too few acked on the original route."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from streams.domain.routes import normalise_route


class CampaignReceipt(StrEnum):
    """What record_receipt did with a device's RECEIPT for a campaign push."""

    COUNTED = "COUNTED"
    DUPLICATE = "DUPLICATE"
    NOT_ORIGINAL_ROUTE = "NOT_ORIGINAL_ROUTE"
    NOT_TARGETED = "NOT_TARGETED"


@dataclass
class CampaignTally:
    """Devices a campaign targeted and those that acked it on their original route.

    `early` holds original-route receipts from devices not (yet) targeted, so a receipt that
    overtakes its target record in the stream is counted once the target arrives.
    """

    campaign_id: str
    targeted: set[str] = field(default_factory=set)
    acked: set[str] = field(default_factory=set)
    early: set[str] = field(default_factory=set)
    duplicate_receipts: int = 0
    ignored_receipts: int = 0

    def to_dict(self) -> dict[str, Any]:
        """JSON-compatible form (sets as sorted lists)."""
        return {
            "campaign_id": self.campaign_id,
            "targeted": sorted(self.targeted),
            "acked": sorted(self.acked),
            "early": sorted(self.early),
            "duplicate_receipts": self.duplicate_receipts,
            "ignored_receipts": self.ignored_receipts,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CampaignTally:
        """Inverse of to_dict; missing keys take their defaults."""
        return cls(
            campaign_id=data["campaign_id"],
            targeted=set(data.get("targeted", ())),
            acked=set(data.get("acked", ())),
            early=set(data.get("early", ())),
            duplicate_receipts=int(data.get("duplicate_receipts", 0)),
            ignored_receipts=int(data.get("ignored_receipts", 0)),
        )


def record_target(tally: CampaignTally, device_id: str) -> bool:
    """Count a device the campaign was sent to; return False if it was already counted."""
    if device_id in tally.targeted:
        return False
    tally.targeted.add(device_id)
    if device_id in tally.early:
        tally.early.discard(device_id)
        tally.acked.add(device_id)
    return True


def record_receipt(
    tally: CampaignTally, device_id: str, route: object, original_route: str
) -> CampaignReceipt:
    """Count a device's RECEIPT once, and only when it came on the device's original route."""
    if normalise_route(route) != original_route:
        tally.ignored_receipts += 1
        return CampaignReceipt.NOT_ORIGINAL_ROUTE
    if device_id in tally.acked or device_id in tally.early:
        tally.duplicate_receipts += 1
        return CampaignReceipt.DUPLICATE
    if device_id not in tally.targeted:
        tally.early.add(device_id)
        return CampaignReceipt.NOT_TARGETED
    tally.acked.add(device_id)
    return CampaignReceipt.COUNTED


@dataclass(frozen=True)
class CampaignDecision:
    """The recorded fallback decision of a campaign after its receipt deadline."""

    campaign_id: str
    targeted: int
    acked: int
    ratio: float | None
    threshold: float
    fallback: bool
    silent_devices: list[str]

    @property
    def fallback_devices(self) -> list[str]:
        """The devices to resend on alternative routes: the silent ones, only if fallback."""
        return list(self.silent_devices) if self.fallback else []

    def to_dict(self) -> dict[str, Any]:
        """JSON-compatible form."""
        return {
            "campaign_id": self.campaign_id,
            "targeted": self.targeted,
            "acked": self.acked,
            "ratio": self.ratio,
            "threshold": self.threshold,
            "fallback": self.fallback,
            "silent_devices": list(self.silent_devices),
        }


def decide(tally: CampaignTally, threshold: float) -> CampaignDecision:
    """Fallback iff targeted > 0 and acked/targeted < threshold (equal -> no fallback)."""
    acked = tally.acked & tally.targeted
    targeted = len(tally.targeted)
    ratio = len(acked) / targeted if targeted else None
    fallback = ratio is not None and ratio < threshold
    silent = sorted(tally.targeted - acked)
    return CampaignDecision(
        tally.campaign_id, targeted, len(acked), ratio, threshold, fallback, silent
    )

"""The topic catalog: every topic's name, key, cleanup policy and record, as data."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TopicSpec:
    """One topic of the contract or of the processors' internals."""

    name: str
    key: str
    record: str
    writers: str
    compact: bool = False
    internal: bool = False


CATALOG: tuple[TopicSpec, ...] = (
    TopicSpec("push.requests", "account_id", "PushRequest", "producers"),
    TopicSpec("push.acks", "account_id", "Ack", "devices, app back-ends, the ack gateway"),
    TopicSpec("account.settings", "account_id", "AccountSettings", "settings page", compact=True),
    TopicSpec("account.profiles", "account_id", "AccountProfile", "user service", compact=True),
    TopicSpec("device.registry", "device_id", "DeviceRegistration", "app back-end", compact=True),
    TopicSpec("push.sends", "account_id", "ChannelSend", "stream processors"),
    TopicSpec("push.escalations", "account_id", "Escalation", "stream processors"),
    TopicSpec("push.results", "account_id", "DeliveryResult", "stream processors"),
    TopicSpec("account.lifecycle", "account_id", "AccountLifecycle", "stream processors"),
    TopicSpec("campaign.decisions", "campaign_id", "CampaignDecision", "stream processors"),
    TopicSpec("device.route-changes", "device_id", "RouteChange", "stream processors"),
    TopicSpec("push.outcomes", "account_id", "ProviderOutcome", "dispatcher"),
    TopicSpec("route.priors", "manufacturer/model/route", "RoutePrior", "priors job", compact=True),
    TopicSpec("push.dlq", "original key", "DeadLetter", "every consumer"),
    TopicSpec("pushcascade.account-events", "account_id",
              "(original record, masked); CampaignDecision", "router, campaign agent",
              internal=True),
    TopicSpec("pushcascade.dispatch-intents", "account_id", "DispatchIntent", "dispatcher",
              internal=True),
    TopicSpec("pushcascade.campaign-events", "campaign_id", "CampaignEvent, CampaignDue",
              "router, campaign timer", internal=True),
)

BY_NAME = {spec.name: spec for spec in CATALOG}

#: Topics outside users write, with the field that is their key.
WRITABLE = {s.name: s.key for s in CATALOG if not s.internal and s.writers not in (
    "stream processors", "every consumer", "dispatcher", "priors job")}


def spec(name: str) -> TopicSpec:
    """The catalog entry of a topic by its unprefixed name; KeyError names the known ones."""
    try:
        return BY_NAME[name]
    except KeyError:
        raise KeyError(f"unknown topic {name!r}; known: {', '.join(BY_NAME)}") from None

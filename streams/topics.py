"""The topic catalog: every topic's name, key, partitions, cleanup policy and record."""

from __future__ import annotations

from dataclasses import dataclass

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from streams.settings import Settings


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
    TopicSpec("push.dlq", "original key", "DeadLetter", "every consumer"),
    TopicSpec("pushcascade.account-events", "account_id", "(original record)", "router",
              internal=True),
    TopicSpec("pushcascade.deadlines", "account_id", "Deadline", "deadline timer", internal=True),
    TopicSpec("pushcascade.campaign-events", "campaign_id", "CampaignEvent, Deadline",
              "router, campaign timer", internal=True),
)

BY_NAME = {spec.name: spec for spec in CATALOG}

#: Topics outside users write, with the field that is their key.
WRITABLE = {s.name: s.key for s in CATALOG if not s.internal and s.writers not in (
    "stream processors", "every consumer")}


def spec(name: str) -> TopicSpec:
    """The catalog entry of a topic by its unprefixed name; KeyError names the known ones."""
    try:
        return BY_NAME[name]
    except KeyError:
        raise KeyError(f"unknown topic {name!r}; known: {', '.join(BY_NAME)}") from None


def admin(bootstrap: str) -> AdminClient:
    """An AdminClient for the cluster."""
    return AdminClient({"bootstrap.servers": bootstrap})


def create_topics(settings: Settings, bootstrap: str) -> tuple[list[str], list[str]]:
    """Create every catalog topic that is missing; return (created, already present)."""
    client = admin(bootstrap)
    existing = set(client.list_topics(timeout=10).topics)
    wanted = [settings.topic(s.name) for s in CATALOG]
    missing = [s for s in CATALOG if settings.topic(s.name) not in existing]
    new = [
        NewTopic(
            settings.topic(s.name),
            num_partitions=settings.tuning.partitions,
            replication_factor=1 if _single_broker(client) else -1,
            config={"cleanup.policy": "compact" if s.compact else "delete"},
        )
        for s in missing
    ]
    created: list[str] = []
    for topic, future in (client.create_topics(new, request_timeout=15) if new else {}).items():
        try:
            future.result()
            created.append(topic)
        except KafkaException as exc:
            if exc.args[0].name() != "TOPIC_ALREADY_EXISTS":
                raise
    present = [t for t in wanted if t not in created]
    return created, present


def _single_broker(client: AdminClient) -> bool:
    """True when the cluster has one broker (replication factor 1 is then the only choice)."""
    return len(client.list_topics(timeout=10).brokers) <= 1

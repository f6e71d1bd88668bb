"""Topic administration: create the catalog's topics on a cluster, with our partition count."""

from __future__ import annotations

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from schemas import CATALOG
from streams.kafka import admin
from streams.settings import Settings


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
            replication_factor=replication_factor(settings, client),
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


def replication_factor(settings: Settings, client: AdminClient) -> int:
    """PUSHCASCADE_REPLICATION_FACTOR, else 1 on a single broker, else the cluster's default
    (-1)."""
    if settings.tuning.replication_factor:
        return settings.tuning.replication_factor
    return 1 if len(client.list_topics(timeout=10).brokers) <= 1 else -1

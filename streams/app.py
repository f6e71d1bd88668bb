"""The Faust application: topics, tables and the settings that suit the broker profile."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import faust

from streams.settings import Settings


def create_app(settings: Settings, bootstrap: str) -> faust.App:
    """A Faust app for these settings; its id (and so its group and changelogs) has the prefix."""
    tuning = settings.tuning
    profile: dict[str, Any] = {}
    if tuning.broker_profile == "tansu":
        profile = {
            "broker_session_timeout": 6.0,
            "broker_heartbeat_interval": 1.0,
            "producer_max_batch_size": 1,  # table recovery drops a batch's last record otherwise
        }
    Path(tuning.data_dir).mkdir(parents=True, exist_ok=True)
    app = faust.App(
        f"{tuning.topic_prefix}pushcascade",
        broker=f"kafka://{bootstrap}",
        store=tuning.store,
        datadir=str(Path(tuning.data_dir)),
        topic_partitions=tuning.partitions,
        topic_allow_declare=True,
        topic_disable_leader=True,
        consumer_auto_offset_reset="earliest",
        web_enabled=False,
        table_standby_replicas=0,
        key_serializer="raw",
        value_serializer="raw",
        stream_wait_empty=False,
        broker_commit_interval=0.5,
        **profile,
    )
    return app


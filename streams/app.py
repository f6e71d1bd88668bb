"""The Faust application: topics, tables and the settings that suit the broker profile."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import aiokafka
import faust
from faust.transport.drivers import aiokafka as driver
from faust.types import TP

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
    app.transport.Consumer = _consumer_class(  # type: ignore[misc]
        round(tuning.fetch_wait * 1000))
    return app


def _consumer_class(fetch_wait_ms: int) -> type[driver.Consumer]:
    """Faust's aiokafka consumer with our fetch wait instead of its hard-coded 1500 ms, which
    leaves an idle worker ~0.5 s behind on the embedded broker (INFRA.md)."""

    class ConsumerThread(driver.AIOKafkaConsumerThread):
        def _create_worker_consumer(self, transport: Any) -> aiokafka.AIOKafkaConsumer:
            consumer = super()._create_worker_consumer(transport)
            consumer._fetch_max_wait_ms = fetch_wait_ms
            return consumer

    class Consumer(driver.Consumer):
        def _new_consumer_thread(self) -> driver.AIOKafkaConsumerThread:
            return ConsumerThread(self, loop=self.loop, beacon=self.beacon)

        async def highwaters(self, *partitions: TP) -> Mapping[TP, int]:
            """End offsets; a changelog's from a marker record where the app asks for it (the
            embedded broker's ListOffsets is short of the end: streams/state.py MARKER)."""
            ends = dict(await super().highwaters(*partitions))
            marker_ends = getattr(self.app, "changelog_ends", None)
            changelogs = [tp for tp in partitions if tp.topic.endswith("-changelog")]
            if marker_ends is not None and changelogs:
                loop = asyncio.get_running_loop()
                ends.update(await loop.run_in_executor(None, marker_ends, changelogs))
            return ends

    return Consumer

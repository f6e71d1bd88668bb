"""A population simulator: users and devices answering push.sends with RECEIPT and READ acks."""

from __future__ import annotations

import random
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, TopicPartition

from connectors.producer import RecordProducer
from schemas import Codec
from streams.kafka import consumer
from streams.settings import Settings

ROUTES = {"Huawei": "HUAWEI", "Xiaomi": "XIAOMI", "OPPO": "OPPO", "vivo": "VIVO",
          "Apple": "APNS", "Google": "FCM"}
THIRD_PARTY = ["JPUSH", "GETUI"]


@dataclass
class User:
    """One simulated account: where its user reads, and whether its device's vendor route works."""

    account_id: str
    reads_on: str | None  # the channel the user actually reads; None = never reads
    manufacturer: str
    original_works: bool
    route_success: dict[str, float] = field(default_factory=dict)

    @property
    def device_id(self) -> str:
        """The user's one device."""
        return f"{self.account_id}-phone"


def population(size: int, seed: int = 7) -> list[User]:
    """A mixed population: readers of each channel, non-readers, some silent vendor routes."""
    rng = random.Random(seed)
    users = []
    for i in range(size):
        users.append(User(
            account_id=f"user-{i:03d}",
            reads_on=rng.choice(["APP", "WECHAT", "SMS", "WECHAT", None]),
            manufacturer=rng.choice(list(ROUTES)), original_works=rng.random() < 0.6,
            route_success={"JPUSH": rng.choice([0.3, 0.9]), "GETUI": rng.choice([0.5, 0.95])}))
    return users


class Simulator:
    """Consumes push.sends and answers as the population would, on a background thread."""

    def __init__(self, settings: Settings, bootstrap: str, users: list[User],
                 read_delay: float = 0.3, seed: int = 11) -> None:
        self.settings, self.bootstrap = settings, bootstrap
        self.users = {u.account_id: u for u in users}
        self.read_delay = read_delay
        self.rng = random.Random(seed)
        self.codec = Codec()
        self.producer = RecordProducer(
            bootstrap, topic_prefix=settings.tuning.topic_prefix,
            schema_registry_url=settings.connections.schema_registry_url)
        self.counts: Counter[str] = Counter()
        self.read: set[str] = set()
        self._pending: list[tuple[float, dict[str, Any]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def register(self) -> None:
        """Publish every user's device and profile."""
        now = int(time.time() * 1000)
        for u in self.users.values():
            self.producer.send("device.registry", {
                "device_id": u.device_id, "account_id": u.account_id,
                "manufacturer": u.manufacturer, "model": "demo",
                "routes": [ROUTES[u.manufacturer], *THIRD_PARTY], "active": True,
                "registered_at": now})
            self.producer.send("account.profiles", {
                "account_id": u.account_id, "phone": "+8613800000000",
                "wechat_openid": f"o-{u.account_id}", "email": None, "updated_at": now})
        self.producer.flush()

    def start(self) -> None:
        """Start answering."""
        self._thread.start()

    def stop(self) -> None:
        """Stop answering and flush."""
        self._stop.set()
        self._thread.join(5)
        self.producer.flush()

    def _run(self) -> None:
        name = self.settings.topic("push.sends")
        reader = consumer(self.bootstrap, f"simulator-{uuid.uuid4().hex[:8]}")
        parts = reader.list_topics(name, timeout=10).topics[name].partitions
        reader.assign([TopicPartition(name, p, OFFSET_BEGINNING) for p in parts])
        try:
            while not self._stop.is_set():
                msg = reader.poll(0.05)
                if msg is not None and not msg.error():
                    self.answer(self.codec.decode(msg.value(), topic="push.sends"))
                self._release()
        finally:
            reader.close()

    def answer(self, send: dict[str, Any]) -> None:
        """Decide what the device and the user do with one send."""
        user = self.users.get(send["account_id"])
        self.counts["send_" + send["reason"]] += 1
        if user is None:
            return
        if send["device_id"]:  # a device-level send: does the route deliver?
            route = send["route"]
            works = (user.original_works if route == ROUTES[user.manufacturer]
                     else self.rng.random() < user.route_success.get(route, 0.5))
            if works:
                self._ack(send, "RECEIPT", 0.05)
                if send["reason"] != "PROBE" and user.reads_on == "APP":
                    self._ack(send, "READ", self.read_delay)
        elif send["channel"] == user.reads_on and send["channel"] != "APP":
            self._ack(send, "READ", self.read_delay)

    def _ack(self, send: dict[str, Any], kind: str, delay: float) -> None:
        ack = {"message_id": send["message_id"], "account_id": send["account_id"],
               "channel": send["channel"], "kind": kind, "device_id": send["device_id"],
               "route": send["route"], "send_id": send["send_id"], "acked_at": 0}
        self._pending.append((time.time() + delay, ack))

    def _release(self) -> None:
        """Publish the acks whose time has come."""
        now = time.time()
        due = [a for t, a in self._pending if t <= now]
        if not due:
            return
        self._pending = [(t, a) for t, a in self._pending if t > now]
        for ack in due:
            ack["acked_at"] = int(now * 1000)
            self.producer.send("push.acks", ack)
            self.counts[ack["kind"].lower()] += 1
            if ack["kind"] == "READ":
                self.read.add(ack["message_id"])
        self.producer.flush()

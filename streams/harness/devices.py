"""Simulated devices and users: RECEIPT acks to push.sends by a rule, READ acks by users."""

from __future__ import annotations

import random
import threading
import time
import zlib
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Self

from connectors.producer import RecordProducer
from streams.harness.processes import Process
from streams.harness.taps import Tap, end_offsets, wait_idle
from streams.settings import Settings

Send = dict[str, Any]
#: Does this device-level send reach its device (and so come back as a RECEIPT)?
ReceiptRule = Callable[[Send], bool]
#: Does a user read this send (the bool: it reached the device), after how many seconds?
#: None: never.
ReadRule = Callable[[Send, bool], float | None]

ROUTES = {"Huawei": "HUAWEI", "Xiaomi": "XIAOMI", "OPPO": "OPPO", "vivo": "VIVO",
          "Apple": "APNS", "Google": "FCM"}
THIRD_PARTY = ["JPUSH", "GETUI"]


def _never_read(send: Send, delivered: bool) -> float | None:
    """The default ReadRule: devices only, nobody reads."""
    return None


class DeviceSimulator:
    """Plays the devices (and, given a ReadRule, their users) on a background thread.

    It reads push.sends from the beginning; a device-level send that `rule(send)` accepts is
    answered at once with a RECEIPT ack, and a send that `read(send)` gives a delay is
    answered with a READ ack that much later. `rule` may be replaced while it runs."""

    def __init__(self, settings: Settings, rule: ReceiptRule, read: ReadRule = _never_read,
                 start: bool = True) -> None:
        self.settings, self.rule, self.read = settings, rule, read
        self.sends = Tap(settings, "push.sends")
        self.producer = RecordProducer(
            settings.connections.kafka_bootstrap_servers,
            topic_prefix=settings.tuning.topic_prefix,
            schema_registry_url=settings.connections.schema_registry_url)
        self.answered: list[Send] = []  # the sends acknowledged with a RECEIPT
        self.counts: Counter[str] = Counter()  # send_<REASON>, receipt, read
        self.read_messages: set[str] = set()
        self._later: list[tuple[float, dict[str, Any]]] = []  # READ acks owed, by time
        self._done: dict[int, int] = {}  # partition -> offset of push.sends answered and flushed
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="devices")
        if start:
            self.start()

    def start(self) -> None:
        """Start answering."""
        self._thread.start()

    def stop(self) -> None:
        """Stop answering, flush what was answered, close the tap."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(10)
        self.producer.flush()
        self.sends.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self) -> None:
        while not self._stop.is_set():
            for send in self.sends.poll(0.05):
                self.answer(send)
            self._release()
            self._done = dict(self.sends.next_offsets)

    def answer(self, send: Send) -> None:
        """Decide what the device and its user do with one send."""
        self.counts["send_" + send["reason"]] += 1
        delivered = bool(send["device_id"]) and self.rule(send)
        if delivered:
            self._ack(send, "RECEIPT")
            self.answered.append(send)
        delay = self.read(send, delivered)
        if delay is not None:
            self._later.append((time.time() + delay, send))

    def _ack(self, send: Send, kind: str) -> None:
        """Produce one ack of this send."""
        self.producer.send("push.acks", {
            "message_id": send["message_id"], "account_id": send["account_id"],
            "channel": send["channel"], "kind": kind, "device_id": send["device_id"],
            "route": send["route"], "send_id": send["send_id"],
            "acked_at": int(time.time() * 1000)})
        self.counts[kind.lower()] += 1
        if kind == "READ":
            self.read_messages.add(send["message_id"])

    def _release(self) -> None:
        """Produce the READ acks whose time has come, and flush."""
        now = time.time()
        due = [send for at, send in self._later if at <= now]
        self._later = [(at, send) for at, send in self._later if at > now]
        for send in due:
            self._ack(send, "READ")
        self.producer.flush()

    def wait_quiet(self, timeout: float = 60.0, workers: Sequence[Process] = ()) -> None:
        """Wait until neither side has anything left to do: the workers have processed all
        their inputs, and this simulator has answered every send and owes no READ ack.

        (Timers that come due later start things again: wait for them first.)"""
        deadline = time.monotonic() + timeout
        sends = [self.sends.full]
        while True:
            produced = self.producer.delivered
            wait_idle(self.settings, max(1.0, deadline - time.monotonic()), workers)
            ends = end_offsets(self.settings.connections.kafka_bootstrap_servers, sends)
            while self._later or any(self._done.get(p, 0) < end for (_, p), end in ends.items()):
                if not self._thread.is_alive():
                    raise AssertionError("the device simulator stopped")
                if time.monotonic() > deadline:
                    raise AssertionError(f"the simulator did not catch up within {timeout}s")
                time.sleep(0.05)
            if self.producer.delivered == produced:
                return

    def records(self) -> list[Send]:
        """Every send seen so far (a copy)."""
        return list(self.sends.records)

    def wait_for(self, predicate: Callable[[list[Send]], bool],
                 timeout: float = 30.0) -> list[Send]:
        """Wait until predicate(sends) holds; returns the sends."""
        end = time.monotonic() + timeout
        while not predicate(sends := self.records()):
            if not self._thread.is_alive():
                raise AssertionError("the device simulator stopped")
            if time.monotonic() > end:
                raise AssertionError(f"sends: condition not met in {timeout}s; "
                                     f"last: {sends[-5:]}")
            time.sleep(0.1)
        return sends


# -- a population of users, one device each ------------------------------------------------


@dataclass
class User:
    """One simulated account: where its user reads, and whether its device's vendor route works."""

    account_id: str
    reads_on: str | None  # the channel the user actually reads; None = never reads
    manufacturer: str
    original_works: bool
    route_success: dict[str, float] = field(default_factory=dict)

    @property
    def phone(self) -> str:
        """The account's phone number (unique: the provider simulator finds the user by it)."""
        return f"+86138{zlib.crc32(self.account_id.encode()) % 10**8:08d}"

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


class Population:
    """The rules by which a population's devices receive and its users read."""

    def __init__(self, users: list[User], read_delay: float = 0.3, seed: int = 11) -> None:
        self.users = {u.account_id: u for u in users}
        self.read_delay = read_delay
        self.rng = random.Random(seed)

    def register(self, producer: RecordProducer) -> None:
        """Publish every user's device and profile (phone and WeChat)."""
        now = int(time.time() * 1000)
        for u in self.users.values():
            producer.send("device.registry", {
                "device_id": u.device_id, "account_id": u.account_id,
                "manufacturer": u.manufacturer, "model": "demo",
                "routes": [ROUTES[u.manufacturer], *THIRD_PARTY], "active": True,
                "registered_at": now})
            producer.send("account.profiles", {
                "account_id": u.account_id, "phone": u.phone,
                "wechat_openid": f"o-{u.account_id}", "email": None, "updated_at": now})
        producer.flush()

    def receipt(self, send: Send) -> bool:
        """A ReceiptRule: the vendor route works or not; other routes by their success rate."""
        user = self.users.get(send["account_id"])
        if user is None:
            return False
        if send["route"] == ROUTES[user.manufacturer]:
            return user.original_works
        return self.rng.random() < user.route_success.get(send["route"], 0.5)

    def read(self, send: Send, delivered: bool) -> float | None:
        """A ReadRule: users read on their channel; on APP, what reached their device."""
        user = self.users.get(send["account_id"])
        if user is None or send["channel"] != user.reads_on or send["reason"] == "PROBE":
            return None
        reads = delivered if send["channel"] == "APP" else not send["device_id"]
        return self.read_delay if reads else None

    def document(self) -> dict[str, Any]:
        """This population as the provider simulator's population file: each device's receipt
        probability per route, each account's read probability per channel."""
        devices = {u.device_id: {"receipt": {ROUTES[u.manufacturer]: float(u.original_works),
                                             **u.route_success}}
                   for u in self.users.values()}
        accounts = {u.account_id: {"read": {u.reads_on: 1.0},
                                   "addresses": [u.phone, f"o-{u.account_id}"]}
                    for u in self.users.values() if u.reads_on}
        return {"receipt": {"*": 0.5}, "read": {"*": 0.0}, "receipt_delay_ms": [20, 200],
                "read_delay_ms": [100, 400], "devices": devices, "accounts": accounts}

    def simulator(self, settings: Settings) -> DeviceSimulator:
        """A DeviceSimulator playing this population (not started)."""
        return DeviceSimulator(settings, self.receipt, self.read, start=False)

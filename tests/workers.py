"""Run real `pushcascade worker` processes for tests, and stop them with a bounded wait."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, TopicPartition

from connectors.producer import RecordProducer
from streams.kafka import consumer
from streams.settings import Settings


class Worker:
    """One `pushcascade worker` subprocess (its own pid, its own data dir and log)."""

    def __init__(self, env: dict[str, str], tmp: Path, name: str = "w") -> None:
        self.log = tmp / f"{name}-{uuid.uuid4().hex[:6]}.log"
        data = tmp / f"data-{name}-{uuid.uuid4().hex[:6]}"
        self.process = subprocess.Popen(
            [sys.executable, "-m", "streams.cli", "worker", "--loglevel", "info"],
            env={**env, "PUSHCASCADE_DATA_DIR": str(data)}, stdout=open(self.log, "wb"),  # noqa: SIM115
            stderr=subprocess.STDOUT, start_new_session=True)

    def kill(self) -> None:
        """SIGKILL: the crash case."""
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def stop(self, timeout: float = 8.0) -> None:
        """SIGTERM, then SIGKILL after timeout (a Faust worker can hang on shutdown)."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()

    def logs(self) -> str:
        """What the worker printed."""
        return self.log.read_text(errors="replace")


def worker_env(settings: Settings, **tuning: Any) -> dict[str, str]:
    """Environment for a worker on these settings' broker and topics, plus PUSHCASCADE_ values."""
    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": settings.connections.kafka_bootstrap_servers,
           "PUSHCASCADE_TOPIC_PREFIX": settings.tuning.topic_prefix}
    env.update({f"PUSHCASCADE_{k.upper()}": str(v) for k, v in tuning.items()})
    return env


class Tap:
    """Reads a topic from the beginning, incrementally, keeping every decoded record."""

    def __init__(self, settings: Settings, name: str, decode: Any = None,
                 full: str | None = None) -> None:
        from schemas import Codec

        self.name, self.full = name, full or settings.topic(name)
        codec = Codec()
        self.decode = decode or (lambda value: codec.decode(value, topic=name))
        self.records: list[Any] = []
        self.partitions: list[int] = []
        self.seen_at: list[float] = []
        # a short fetch wait: on Tansu an idle consumer otherwise sees new records ~0.5 s late,
        # which would be the instrument's lateness, not the pipeline's
        self.reader = consumer(settings.connections.kafka_bootstrap_servers,
                               f"tap-{uuid.uuid4().hex}", **{"fetch.wait.max.ms": 50})
        deadline = time.monotonic() + 30
        while self.full not in self.reader.list_topics(timeout=10).topics:
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.full} never appeared (did the worker start?)")
            time.sleep(0.2)
        parts = self.reader.list_topics(self.full, timeout=10).topics[self.full].partitions
        self.reader.assign([TopicPartition(self.full, p, OFFSET_BEGINNING) for p in parts])

    def poll(self, seconds: float = 0.2) -> None:
        """Read what arrived within `seconds`."""
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            msg = self.reader.poll(0.05)
            if msg is not None and not msg.error():
                self.records.append(self.decode(msg.value()))
                self.partitions.append(msg.partition())
                self.seen_at.append(time.time())

    def wait_for(self, predicate: Any, timeout: float = 30.0) -> list[Any]:
        """Poll until predicate(records) is true; returns the records (fails on timeout)."""
        end = time.monotonic() + timeout
        while not predicate(self.records):
            if time.monotonic() > end:
                raise AssertionError(f"{self.name}: condition not met in {timeout}s; "
                                     f"have {len(self.records)} records: {self.records[-5:]}")
            self.poll(0.2)
        return self.records

    def where(self, **fields: Any) -> list[Any]:
        """Records whose fields equal the given values."""
        return [r for r in self.records if all(r.get(k) == v for k, v in fields.items())]

    def close(self) -> None:
        """Close the consumer."""
        self.reader.close()


def accounts_tap(settings: Settings) -> Tap:
    """A tap on the router's `accounts` table changelog: the state as written."""
    return changelog_tap(settings, "accounts")


def now_ms() -> int:
    """Epoch milliseconds."""
    return int(time.time() * 1000)


def register(producer: RecordProducer, account: str, devices: int = 1,
             wechat: bool = True, sms: bool = True, email: bool = False) -> None:
    """Give an account devices and addresses (enabling APP, WECHAT, SMS, EMAIL as asked)."""
    for i in range(devices):
        producer.send("device.registry", {
            "device_id": f"{account}-d{i}", "account_id": account, "manufacturer": "Xiaomi",
            "model": "14", "routes": ["XIAOMI", "JPUSH"], "active": True,
            "registered_at": now_ms()})
    producer.send("account.profiles", {
        "account_id": account, "phone": "+8613800000000" if sms else None,
        "wechat_openid": f"o-{account}" if wechat else None,
        "email": f"{account}@example.com" if email else None, "updated_at": now_ms()})
    producer.flush()


def request(message_id: str, account: str, importance: str = "HIGH") -> dict[str, Any]:
    """A valid PushRequest."""
    return {"message_id": message_id, "account_id": account, "importance": importance,
            "title": "t", "body": "b", "read_action": "BUTTON", "campaign_id": None,
            "device_ids": [], "created_at": now_ms()}


def read_ack(message_id: str, account: str, channel: str) -> dict[str, Any]:
    """A READ ack."""
    return {"message_id": message_id, "account_id": account, "channel": channel, "kind": "READ",
            "device_id": None, "route": None, "send_id": None, "acked_at": now_ms()}


class DeviceSimulator:
    """Plays the devices: answers device-level sends with RECEIPT acks when `rule(send)` says so."""

    def __init__(self, settings: Settings, rule: Any) -> None:
        import threading

        self.rule = rule
        self.sends = Tap(settings, "push.sends")
        self.producer = RecordProducer(settings.connections.kafka_bootstrap_servers,
                                       topic_prefix=settings.tuning.topic_prefix)
        self.answered: list[dict[str, Any]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        done = 0
        while not self._stop.is_set():
            self.sends.poll(0.1)
            for send in self.sends.records[done:]:
                if send["device_id"] and self.rule(send):
                    self.producer.send("push.acks", {
                        "message_id": send["message_id"], "account_id": send["account_id"],
                        "channel": "APP", "kind": "RECEIPT", "device_id": send["device_id"],
                        "route": send["route"], "send_id": send["send_id"],
                        "acked_at": now_ms()})
                    self.answered.append(send)
            done = len(self.sends.records)
            self.producer.flush()

    def records(self) -> list[dict[str, Any]]:
        """Every send seen so far (a copy)."""
        return list(self.sends.records)

    def wait_for(self, predicate: Any, timeout: float = 30.0) -> list[dict[str, Any]]:
        """Wait until predicate(sends) holds."""
        end = time.monotonic() + timeout
        while not predicate(self.records()):
            if time.monotonic() > end:
                raise AssertionError(f"sends: condition not met in {timeout}s; "
                                     f"last: {self.records()[-5:]}")
            time.sleep(0.1)
        return self.records()

    def stop(self) -> None:
        """Stop answering and close."""
        self._stop.set()
        self._thread.join(5)
        self.sends.close()


def changelog_tap(settings: Settings, table: str) -> Tap:
    """A tap on one of the router's table changelogs (JSON values), once the worker made it."""
    return Tap(settings, table, decode=lambda value: json.loads(value) if value else None,
               full=f"{settings.tuning.topic_prefix}pushcascade-{table}-changelog")


def device(account: str, device_id: str, routes: list[str], manufacturer: str = "Xiaomi",
           active: bool = True) -> dict[str, Any]:
    """A DeviceRegistration."""
    return {"device_id": device_id, "account_id": account, "manufacturer": manufacturer,
            "model": "14", "routes": routes, "active": active, "registered_at": now_ms()}

"""The address book: where each account's and device's sends go (personal data, memory only).

Follows the compacted `account.profiles` and `device.registry` topics outside any consumer
group, so every dispatcher holds every address. Values are never logged."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from confluent_kafka import Message

from schemas import Codec, SchemaError
from streams.follow import Follower
from streams.settings import Settings

#: The profile field that addresses each account-level channel.
CHANNEL_FIELD = {"SMS": "phone", "WECHAT": "wechat_openid", "EMAIL": "email"}


class AddressBook:
    """Profiles by account and devices by id, kept current from their topics."""

    def __init__(self, settings: Settings, codec: Codec) -> None:
        self.settings, self.codec = settings, codec
        self.profiles: dict[str, dict[str, Any]] = {}
        self.devices: dict[str, dict[str, Any]] = {}
        self.undecodable = 0
        topics = [settings.topic("account.profiles"), settings.topic("device.registry")]
        self._follower = Follower(settings.connections.kafka_bootstrap_servers,
                                  settings.topic("addresses"), topics, self.apply, "address-book")
        self.ready = self._follower.ready

    def __repr__(self) -> str:  # never the addresses themselves
        return f"AddressBook(profiles={len(self.profiles)}, devices={len(self.devices)})"

    def address(self, send: Mapping[str, Any]) -> str | None:
        """The address of a ChannelSend: a profile field, or a device's push token for the
        route (its device_id when the registration names none); None when unknown."""
        if send["channel"] == "APP":
            device = self.devices.get(send.get("device_id") or "")
            if device is None or device["account_id"] != send["account_id"]:
                return None
            tokens = device.get("push_tokens") or {}
            return str(tokens.get(send.get("route") or "") or device["device_id"])
        field = CHANNEL_FIELD.get(send["channel"])
        profile = self.profiles.get(send["account_id"])
        value = profile.get(field) if profile and field else None
        return str(value) if value else None

    def apply(self, msg: Message) -> None:
        """One record of either topic."""
        topic = (msg.topic() or "")[len(self.settings.tuning.topic_prefix):]
        try:
            name, record = self.codec.decode_named(msg.value(), topic=topic)
        except SchemaError:
            self.undecodable += 1  # the router dead-letters it; nothing to address here
            return
        if name == "AccountProfile":
            self.profiles[record["account_id"]] = record
        elif name == "DeviceRegistration":
            if record.get("active", True):
                self.devices[record["device_id"]] = record
            else:
                self.devices.pop(record["device_id"], None)

    def start(self) -> AddressBook:
        """Read both topics to their end in the background, then keep following them."""
        self._follower.start()
        return self

    def stop(self) -> None:
        """Stop following."""
        self._follower.stop()

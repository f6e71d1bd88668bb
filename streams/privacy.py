"""Personal data stays on its own topic: what the processors copy elsewhere is masked."""

from __future__ import annotations

from typing import Any

from schemas import Codec, SchemaError

#: Fields of AccountProfile that hold an address (personal data).
ADDRESS_FIELDS = ("phone", "wechat_openid", "email")
#: Personal fields of each record that carries some (present or not is all a processor needs).
PERSONAL = {"AccountProfile": ADDRESS_FIELDS, "DeviceRegistration": ("push_tokens",)}
#: Topics whose undecodable bytes may hold personal data: dropped, not copied.
PERSONAL_TOPICS = ("account.profiles", "device.registry")
MASKED = "***"


def _mask(value: Any) -> Any:
    """A personal value with its content replaced (a map keeps its keys, e.g. route names)."""
    if isinstance(value, dict):
        return dict.fromkeys(value, MASKED)
    return MASKED if value else value


def masked(codec: Codec, value: bytes | None, topic: str) -> bytes | None:
    """The record bytes to copy to another topic: a profile's addresses and a device's push
    tokens masked; undecodable bytes of a topic with personal data are dropped."""
    if value is None:
        return None
    try:
        name, record = codec.decode_named(value, topic=topic)
    except SchemaError:
        return None if topic in PERSONAL_TOPICS else value
    fields = PERSONAL.get(name)
    if not fields:
        return value
    return codec.encode(name, {**record, **{f: _mask(record.get(f)) for f in fields}})

"""Personal data stays on the profile topic: what the processors copy elsewhere is masked."""

from __future__ import annotations

from schemas import Codec, SchemaError

#: Fields of AccountProfile that hold an address (personal data).
ADDRESS_FIELDS = ("phone", "wechat_openid", "email")
MASKED = "***"
PROFILES = "account.profiles"


def masked(codec: Codec, value: bytes | None, topic: str) -> bytes | None:
    """The record bytes to copy to another topic: a profile with its addresses masked (present
    or not is all a processor needs); undecodable bytes of the profile topic are dropped."""
    if value is None:
        return None
    try:
        name, record = codec.decode_named(value, topic=topic)
    except SchemaError:
        return None if topic == PROFILES else value
    if name != "AccountProfile":
        return value
    return codec.encode(name, {**record, **{f: MASKED for f in ADDRESS_FIELDS if record.get(f)}})

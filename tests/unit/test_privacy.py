"""What the processors copy of a record holding personal data."""

from __future__ import annotations

from schemas import Codec
from streams.privacy import masked

CODEC = Codec()


def test_a_device_registration_is_copied_with_its_push_tokens_masked() -> None:
    device = {"device_id": "d1", "account_id": "a1", "manufacturer": "HUAWEI", "model": "P60",
              "routes": ["HUAWEI", "GETUI"], "push_tokens": {"HUAWEI": "IQAAAACy0kYh"},
              "registered_at": 1700000000000}
    copied = masked(CODEC, CODEC.encode("DeviceRegistration", device), "device.registry")
    assert copied is not None
    record = CODEC.decode(copied, topic="device.registry")
    assert record["push_tokens"] == {"HUAWEI": "***"}
    assert record["routes"] == ["HUAWEI", "GETUI"]


def test_a_profile_keeps_which_addresses_exist_not_what_they_are() -> None:
    profile = {"account_id": "a1", "phone": "+8613800000000", "wechat_openid": None,
               "email": "a@example.com", "updated_at": 1700000000000}
    copied = masked(CODEC, CODEC.encode("AccountProfile", profile), "account.profiles")
    assert copied is not None
    record = CODEC.decode(copied, topic="account.profiles")
    assert (record["phone"], record["wechat_openid"], record["email"]) == ("***", None, "***")


def test_undecodable_bytes_of_a_personal_topic_are_dropped_others_kept() -> None:
    assert masked(CODEC, b"\x00\x00\x00\x00\x05+8613800000000", "device.registry") is None
    assert masked(CODEC, b"garbage", "push.acks") == b"garbage"

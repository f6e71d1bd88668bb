"""Signed ack tokens: forged, expired, tampered and rotated-out tokens are refused."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from connectors.settings import ConnectorSettings
from connectors.tokens import MAX_LENGTH, AckToken, Signer, TokenError

KEYS = {"k1": "first-secret-of-thirty-two-characters", "k2": "second-secret-of-thirty-two-chars!"}
T0 = 1_800_000_000.0
SEND = {"send_id": "s1", "message_id": "m1", "account_id": "a1", "channel": "APP",
        "device_id": "d1", "route": "HUAWEI", "link": "https://shop.example/m1"}


def test_a_token_round_trips_to_the_ack_it_stands_for() -> None:
    signer = Signer(KEYS, "k2", ttl=60)
    token = signer.verify(signer.sign(AckToken.for_send("READ", SEND), T0), "READ", now=T0 + 59)
    assert token.link == "https://shop.example/m1"
    assert token.ack(T0 + 1) == {"message_id": "m1", "account_id": "a1", "channel": "APP",
                                 "kind": "READ", "device_id": "d1", "route": "HUAWEI",
                                 "send_id": "s1", "acked_at": round((T0 + 1) * 1000)}


def test_a_receipt_token_carries_no_link_and_cannot_record_a_read() -> None:
    signer = Signer(KEYS, "k1", ttl=60)
    text = signer.sign(AckToken.for_send("RECEIPT", SEND), T0)
    assert signer.verify(text, "RECEIPT", now=T0).link is None
    with pytest.raises(TokenError, match="cannot record a READ"):
        signer.verify(text, "READ", now=T0)


def test_expired_tokens_are_refused() -> None:
    signer = Signer(KEYS, "k1", ttl=60)
    text = signer.sign(AckToken.for_send("READ", SEND), T0)
    with pytest.raises(TokenError, match="expired"):
        signer.verify(text, now=T0 + 61)


def test_rotation_old_key_still_verifies_until_it_is_removed() -> None:
    old = Signer(KEYS, "k1", ttl=60).sign(AckToken.for_send("READ", SEND), T0)
    assert Signer(KEYS, "k2", ttl=60).verify(old, now=T0).send_id == "s1"
    with pytest.raises(TokenError, match="unknown key"):
        Signer({"k2": KEYS["k2"]}, "k2", ttl=60).verify(old, now=T0)


def test_a_token_signed_with_another_secret_under_a_known_key_id_is_forged() -> None:
    forged = Signer({"k1": "an-attackers-own-secret-of-32-characters"}, "k1", ttl=60).sign(
        AckToken.for_send("READ", SEND), T0)
    with pytest.raises(TokenError, match="invalid token"):
        Signer(KEYS, "k1", ttl=60).verify(forged, now=T0)


def test_oversized_tokens_are_refused_before_parsing() -> None:
    with pytest.raises(TokenError, match="longer than"):
        Signer(KEYS, "k1", ttl=60).verify("a" * (MAX_LENGTH + 1))


@settings(max_examples=200, deadline=None)
@given(st.integers(min_value=0), st.integers(min_value=0, max_value=255))
def test_any_single_byte_change_is_refused(position: int, byte: int) -> None:
    signer = Signer(KEYS, "k1", ttl=60)
    text = signer.sign(AckToken.for_send("READ", SEND), T0)
    i = position % len(text)
    tampered = text[:i] + chr(byte) + text[i + 1:]
    if tampered == text:
        return
    try:
        token = signer.verify(tampered, now=T0)
    except TokenError:
        return
    # base64url padding bits may change without changing the decoded token: then it is the same
    assert token == signer.verify(text, now=T0)


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=300))
def test_arbitrary_text_is_refused_with_a_token_error(text: str) -> None:
    with pytest.raises(TokenError):
        Signer(KEYS, "k1", ttl=60).verify(text, now=T0)


def test_settings_refuse_short_or_malformed_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PUSHCASCADE_ACK_KEYS", '{"k": "short"}')
    with pytest.raises(ValueError, match="32"):
        ConnectorSettings()
    keys = '{"a": "thirty-two-characters-secret-one", "b": "thirty-two-characters-secret-two"}'
    monkeypatch.setenv("PUSHCASCADE_ACK_KEYS", keys)
    monkeypatch.setenv("PUSHCASCADE_ACK_KEY_ID", "b")
    assert ConnectorSettings().signing_key_id == "b"
    assert "secret-one" not in repr(ConnectorSettings())


def test_the_read_token_of_a_send_at_every_cap_is_accepted() -> None:
    """4-byte characters in every field at its cap: the longest token a capped send signs to."""
    from schemas import validation as v

    def full(limit: int) -> str:
        return "😀" * (limit // 4)

    send = {"send_id": full(v.ID_BYTES), "message_id": full(v.ID_BYTES),
            "account_id": full(v.ID_BYTES), "channel": "APP", "device_id": full(v.ID_BYTES),
            "route": full(v.ROUTE_BYTES), "link": "https://x.example/" + full(v.LINK_BYTES - 20)}
    signer = Signer(KEYS, "k1", ttl=60)
    text = signer.sign(AckToken.for_send("READ", send), T0)
    assert 4096 < len(text) <= MAX_LENGTH
    assert signer.verify(text, "READ", now=T0).link == send["link"]


@given(kind=st.sampled_from(["READ", "RECEIPT"]), ids=st.lists(st.text(max_size=30), min_size=4,
                                                               max_size=4),
       device=st.none() | st.text(max_size=20), link=st.none() | st.text(max_size=60),
       now=st.floats(min_value=0, max_value=4e9))
def test_a_signature_is_the_one_pyjwt_makes(kind: str, ids: list[str], device: str | None,
                                            link: str | None, now: float) -> None:
    import jwt

    send = {"send_id": ids[0], "message_id": ids[1], "account_id": ids[2], "channel": ids[3],
            "device_id": device, "route": "HUAWEI" if device else None, "link": link}
    token, signer = AckToken.for_send(kind, send), Signer(KEYS, "k1", ttl=600)
    claims = {k: v for k, v in vars(token).items() if v is not None}
    claims["exp"] = int(now + signer.ttl)
    assert signer.sign(token, now=now) == jwt.encode(claims, KEYS["k1"], algorithm="HS256",
                                                     headers={"kid": "k1"})

"""Dead letters always fit a message: the router's, the sink's and the dispatcher's letters are
all built by streams.domain.records.dead_letter, which leaves out what would not fit."""

from __future__ import annotations

import pytest
from confluent_kafka import KafkaException, Producer
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from schemas import Codec
from streams.domain.records import ERROR_CHARS, LETTER_FRAMING, MESSAGE_MAX_BYTES, dead_letter

CODEC = Codec()
TOPIC = "t0123456789.push.requests"
SIZES = st.one_of(st.integers(0, 2_000), st.integers(0, MESSAGE_MAX_BYTES),
                  st.integers(MESSAGE_MAX_BYTES - 2_000, MESSAGE_MAX_BYTES))


@pytest.fixture(scope="module")
def local() -> Producer:
    """A producer that never connects: librdkafka refuses an oversized message at produce()."""
    return Producer({"bootstrap.servers": "127.0.0.1:9", "log_level": 0,
                     "message.timeout.ms": 1000})


def test_a_small_record_is_kept_whole() -> None:
    letter = dead_letter(b"acct", b"\x01bytes", TOPIC, 3, 7, "bad magic byte", 1.0)
    assert (letter["key"], letter["value"], letter["omitted_value_bytes"]) == (
        b"acct", b"\x01bytes", None)
    assert CODEC.decode(CODEC.encode("DeadLetter", letter), "push.dlq") == letter


def test_the_value_of_a_record_near_the_limit_is_left_out_and_its_size_kept(
        local: Producer) -> None:
    value = b"\x01" + b"x" * 999_900  # fits a message alone; with its letter's fields it would not
    letter = dead_letter(b"acct", value, TOPIC, 2, 0, "push.requests: bad magic byte 0x01", 1.0)
    assert (letter["value"], letter["omitted_value_bytes"]) == (None, len(value))
    assert letter["error"] == "push.requests: bad magic byte 0x01"
    local.produce("push.dlq", key=b"acct", value=CODEC.encode("DeadLetter", letter))


def test_a_long_reason_is_cut_and_says_so() -> None:
    letter = dead_letter(None, b"v", TOPIC, 0, 0, "e" * (ERROR_CHARS + 10), 1.0)
    assert letter["error"] == "e" * ERROR_CHARS + " ... (10 more characters cut)"


@settings(max_examples=60, deadline=None)
@given(key=st.one_of(st.none(), SIZES), value=st.one_of(st.none(), SIZES),
       error=st.integers(0, 3 * ERROR_CHARS), wide=st.booleans())
def test_every_dead_letter_fits_a_message(local: Producer, key: int | None, value: int | None,
                                          error: int, wide: bool) -> None:
    """Any record that fit a message (key and value), with any reason: its letter, sent with
    the original key as every writer sends it, is taken by librdkafka (but for a key within
    LETTER_FRAMING bytes and a reason's marker of the limit, which no letter can carry)."""
    assume((key or 0) + (value or 0) <= MESSAGE_MAX_BYTES - 100)  # the record was produced
    assume((key or 0) <= MESSAGE_MAX_BYTES - LETTER_FRAMING - len(TOPIC) - 100)
    original_key = None if key is None else b"k" * key
    original = None if value is None else b"v" * value
    letter = dead_letter(original_key, original, TOPIC, 1, 2,
                         ("\U0001f600" if wide else "e") * error, 1.0)
    encoded = CODEC.encode("DeadLetter", letter)
    try:
        local.produce("push.dlq", key=original_key or b"", value=encoded)
    except KafkaException as exc:
        raise AssertionError(f"a letter of {len(encoded)} bytes refused: {exc}") from None
    local.purge()
    if letter["value"] is None and original is not None:
        assert letter["omitted_value_bytes"] == len(original)
    else:
        assert letter["value"] == original and letter["omitted_value_bytes"] is None

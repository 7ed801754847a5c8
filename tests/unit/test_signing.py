"""Tests of the webhook signature header: its format, verification and rejections."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from replytracker.signing import sign, verify

SECRET = "webhook-secret"
BODY = b'{"event":"reply.detected","deliveryId":"d-1"}'
SENT_AT = 1_700_000_000


def test_sign_header_format() -> None:
    header = sign(BODY, secret=SECRET, timestamp=SENT_AT)

    expected_digest = hmac.new(SECRET.encode(), f"{SENT_AT}.".encode() + BODY, hashlib.sha256).hexdigest()
    assert header == f"t={SENT_AT},v1={expected_digest}"


def test_verify_accepts_own_signature() -> None:
    header = sign(BODY, secret=SECRET, timestamp=SENT_AT)

    assert verify(header, BODY, secret=SECRET, now=SENT_AT)


def test_verify_uses_current_time_by_default() -> None:
    old_header = sign(BODY, secret=SECRET, timestamp=SENT_AT)

    assert not verify(old_header, BODY, secret=SECRET)


def test_verify_rejects_changed_body() -> None:
    header = sign(BODY, secret=SECRET, timestamp=SENT_AT)

    assert not verify(header, BODY + b" ", secret=SECRET, now=SENT_AT)


def test_verify_rejects_wrong_secret() -> None:
    header = sign(BODY, secret=SECRET, timestamp=SENT_AT)

    assert not verify(header, BODY, secret="other-secret", now=SENT_AT)


def test_verify_rejects_changed_timestamp() -> None:
    digest = sign(BODY, secret=SECRET, timestamp=SENT_AT).split("v1=")[1]
    replayed_header = f"t={SENT_AT + 10},v1={digest}"

    assert not verify(replayed_header, BODY, secret=SECRET, now=SENT_AT)


@pytest.mark.parametrize(
    ("now", "accepted"),
    [
        (SENT_AT + 300, True),
        (SENT_AT - 300, True),
        (SENT_AT + 301, False),
        (SENT_AT - 301, False),
    ],
)
def test_verify_timestamp_tolerance(now: int, accepted: bool) -> None:
    header = sign(BODY, secret=SECRET, timestamp=SENT_AT)

    assert verify(header, BODY, secret=SECRET, now=now) is accepted


def test_verify_custom_tolerance() -> None:
    header = sign(BODY, secret=SECRET, timestamp=SENT_AT)

    assert verify(header, BODY, secret=SECRET, now=SENT_AT + 5, tolerance_seconds=5)
    assert not verify(header, BODY, secret=SECRET, now=SENT_AT + 6, tolerance_seconds=5)


def test_verify_negative_tolerance_raises() -> None:
    header = sign(BODY, secret=SECRET, timestamp=SENT_AT)

    with pytest.raises(ValueError, match="tolerance_seconds"):
        verify(header, BODY, secret=SECRET, now=SENT_AT, tolerance_seconds=-1)


def test_verify_accepts_any_matching_entry() -> None:
    new_digest = sign(BODY, secret=SECRET, timestamp=SENT_AT).split("v1=")[1]
    old_digest = sign(BODY, secret="old-secret", timestamp=SENT_AT).split("v1=")[1]
    header = f"t={SENT_AT},v1={old_digest},v1={new_digest}"

    assert verify(header, BODY, secret=SECRET, now=SENT_AT)
    assert verify(header, BODY, secret="old-secret", now=SENT_AT)
    assert not verify(header, BODY, secret="third-secret", now=SENT_AT)


def test_verify_ignores_other_versions() -> None:
    digest = sign(BODY, secret=SECRET, timestamp=SENT_AT).split("v1=")[1]

    assert verify(f"t={SENT_AT},v0=abc,v1={digest}", BODY, secret=SECRET, now=SENT_AT)
    assert not verify(f"t={SENT_AT},v2={digest}", BODY, secret=SECRET, now=SENT_AT)


def test_verify_tolerates_spaces_between_entries() -> None:
    digest = sign(BODY, secret=SECRET, timestamp=SENT_AT).split("v1=")[1]

    assert verify(f"t={SENT_AT}, v1={digest}", BODY, secret=SECRET, now=SENT_AT)


@pytest.mark.parametrize(
    "header",
    [
        "",
        "garbage",
        f"t={SENT_AT}",
        "v1=abcdef",
        "t=not-a-number,v1=abcdef",
        "t=,v1=abcdef",
        f"t={SENT_AT},v1=",
        f"t={SENT_AT},t={SENT_AT},v1=abcdef",
        f"t={SENT_AT},v1=ünïcode",
        f"t={SENT_AT};v1=abcdef",
    ],
)
def test_verify_rejects_malformed_header(header: str) -> None:
    assert not verify(header, BODY, secret=SECRET, now=SENT_AT)


def test_verify_rejects_duplicate_timestamp_even_if_valid() -> None:
    header = sign(BODY, secret=SECRET, timestamp=SENT_AT)
    with_second_timestamp = f"{header},t={SENT_AT}"

    assert not verify(with_second_timestamp, BODY, secret=SECRET, now=SENT_AT)

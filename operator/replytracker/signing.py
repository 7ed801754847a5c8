"""HMAC-SHA256 signatures for the webhooks that the operator sends.

The header value has the form ``t=<unix seconds>,v1=<hex digest>``. The digest
covers ``f"{timestamp}."`` followed by the raw request body, so a receiver can
reject both a changed body and a replayed old delivery. A header may carry
several ``v1=`` entries, so that a secret can be rotated: the sender signs with
the old and the new secret, and the receiver accepts either one.
"""

from __future__ import annotations

import hashlib
import hmac
import time

SIGNATURE_HEADER = "X-Replytracker-Signature"
EVENT_HEADER = "X-Replytracker-Event"
DELIVERY_HEADER = "X-Replytracker-Delivery"

SIGNATURE_VERSION = "v1"


def compute_digest(body: bytes, *, secret: str, timestamp: int) -> str:
    """Return the hex HMAC-SHA256 of ``f"{timestamp}."`` and ``body``, keyed by ``secret``."""
    signed_payload = f"{timestamp}.".encode() + body
    return hmac.new(secret.encode(), signed_payload, hashlib.sha256).hexdigest()


def sign(body: bytes, *, secret: str, timestamp: int) -> str:
    """Return the signature header value for ``body`` sent at ``timestamp`` (Unix seconds)."""
    digest = compute_digest(body, secret=secret, timestamp=timestamp)
    return f"t={timestamp},{SIGNATURE_VERSION}={digest}"


def verify(
    header: str,
    body: bytes,
    *,
    secret: str,
    now: int | None = None,
    tolerance_seconds: int = 300,
) -> bool:
    """Check a signature header against ``body`` and ``secret``.

    Returns False for a missing or malformed header, for a timestamp more than
    ``tolerance_seconds`` away from ``now`` (default: the current time) in
    either direction, and when no ``v1=`` entry matches. Entries of other
    versions are ignored. Every entry is compared in constant time.
    """
    if tolerance_seconds < 0:
        raise ValueError(f"tolerance_seconds must be 0 or more, got {tolerance_seconds}")
    if not header:
        return False

    timestamp: int | None = None
    candidates: list[str] = []
    for item in header.split(","):
        key, separator, value = item.strip().partition("=")
        if not separator or not value:
            return False
        if key == "t":
            if timestamp is not None:
                return False
            try:
                timestamp = int(value)
            except ValueError:
                return False
        elif key == SIGNATURE_VERSION:
            candidates.append(value)

    if timestamp is None or not candidates:
        return False

    current_time = int(time.time()) if now is None else now
    if abs(current_time - timestamp) > tolerance_seconds:
        return False

    expected = compute_digest(body, secret=secret, timestamp=timestamp).encode()
    # Compare against every entry without stopping early, so the time taken
    # does not reveal which entry matched.
    matched = False
    for candidate in candidates:
        if hmac.compare_digest(expected, candidate.encode()):
            matched = True
    return matched

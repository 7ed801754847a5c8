"""Verify a reply-tracker webhook signature, with the standard library only.

Copy ``verify`` into your receiver. As a command:
    python verify_webhook.py "$SIGNATURE_HEADER" "$SIGNING_KEY" < body.json
exits 0 for a valid signature and 1 otherwise.
"""

import hashlib
import hmac
import sys
import time


def verify(header: str, body: bytes, secret: str, *, tolerance_seconds: int = 300) -> bool:
    """Check ``X-Replytracker-Signature`` against the raw request body.

    The header is ``t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">``.
    A timestamp older or newer than the tolerance is rejected, so a captured
    request cannot be replayed later.
    """
    timestamp = None
    signatures = []
    for part in header.split(","):
        key, _, value = part.strip().partition("=")
        if key == "t":
            timestamp = value
        elif key == "v1":
            signatures.append(value)
    if timestamp is None or not timestamp.isdigit() or not signatures:
        return False
    if abs(time.time() - int(timestamp)) > tolerance_seconds:
        return False
    expected = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return any(hmac.compare_digest(expected, candidate) for candidate in signatures)


if __name__ == "__main__":
    sys.exit(0 if verify(sys.argv[1], sys.stdin.buffer.read(), sys.argv[2]) else 1)

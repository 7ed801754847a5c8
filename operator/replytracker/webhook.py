"""Webhook payloads and delivery.

A delivery's body is a deterministic function of the tracker and the reply,
so the bytes are the same on every attempt, including attempts made by an
operator that restarted in between. Only the signature's timestamp changes.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from datetime import datetime

import httpx

from replytracker import signing
from replytracker.messages import Message
from replytracker.models import MessageTracker

REPLY_EVENT = "reply.detected"
EXPIRED_EVENT = "tracker.expired"

# Fixed namespace for delivery ids, so the same tracker and reply always give the same id.
_DELIVERY_NAMESPACE = uuid.UUID("4f7c1a52-6f4e-4c55-9f0c-2a3e5b7d9c11")


def delivery_id(*, tracker_uid: str, event: str, reply_key: str | None) -> str:
    """Return the stable delivery id for one tracker and one outcome."""
    return str(uuid.uuid5(_DELIVERY_NAMESPACE, f"{tracker_uid}/{event}/{reply_key or ''}"))


def reply_key(reply: Message) -> str:
    """Identify a reply: its message id, else its sender and time."""
    if reply.message_id:
        return reply.message_id
    sent = reply.sent_at.isoformat() if reply.sent_at else ""
    return f"{reply.sender_profile_id or ''}@{sent}"


def _time(value: datetime | None) -> str | None:
    if value is None:
        return None
    return value.replace(microsecond=0).isoformat().replace("+00:00", "Z")


def build_body(
    tracker: MessageTracker,
    *,
    event: str,
    delivery: str,
    occurred_at: datetime | None,
    reply: Message | None,
) -> bytes:
    """Serialize the payload once; the caller signs and sends these exact bytes."""
    spec = tracker.spec
    payload = {
        "event": event,
        "deliveryId": delivery,
        "occurredAt": _time(occurred_at),
        "tracker": {
            "namespace": tracker.namespace,
            "name": tracker.name,
            "uid": tracker.uid,
            "accountId": spec.account_id,
            "threadId": spec.thread_id,
            "profileId": spec.profile_id,
            "messageId": spec.message_id,
        },
        "reply": None
        if reply is None
        else {
            "messageId": reply.message_id,
            "sender": {"profileId": reply.sender_profile_id, "name": reply.sender_name},
            "text": reply.text,
            "sentAt": _time(reply.sent_at),
        },
    }
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


@dataclass(frozen=True)
class DeliveryResult:
    """Outcome of one attempt. ``permanent`` failures are not retried."""

    delivered: bool
    status_code: int | None
    error: str | None
    permanent: bool


def classify(status_code: int) -> DeliveryResult:
    """Map a receiver's HTTP status to an outcome: 2xx delivered; 408, 429 and 5xx retried; other 4xx permanent."""
    if 200 <= status_code < 300:
        return DeliveryResult(delivered=True, status_code=status_code, error=None, permanent=False)
    permanent = 400 <= status_code < 500 and status_code not in (408, 429)
    return DeliveryResult(
        delivered=False, status_code=status_code, error=f"receiver returned HTTP {status_code}", permanent=permanent
    )


async def deliver(
    client: httpx.AsyncClient,
    *,
    url: str,
    body: bytes,
    event: str,
    delivery: str,
    secret: str | None,
    now: float | None = None,
) -> DeliveryResult:
    """Make one delivery attempt; never raises for network or HTTP errors."""
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "reply-tracker",
        signing.EVENT_HEADER: event,
        signing.DELIVERY_HEADER: delivery,
    }
    if secret:
        timestamp = int(now if now is not None else time.time())
        headers[signing.SIGNATURE_HEADER] = signing.sign(body, secret=secret, timestamp=timestamp)
    try:
        response = await client.post(url, content=body, headers=headers)
    except (httpx.InvalidURL, httpx.UnsupportedProtocol) as exc:
        # Retrying cannot fix the URL itself.
        return DeliveryResult(
            delivered=False, status_code=None, error=f"invalid webhook URL {url!r}: {exc}", permanent=True
        )
    except httpx.TimeoutException as exc:
        return DeliveryResult(delivered=False, status_code=None, error=f"timed out ({type(exc).__name__})", permanent=False)
    except httpx.HTTPError as exc:
        return DeliveryResult(
            delivered=False, status_code=None, error=f"request failed: {type(exc).__name__}: {exc}", permanent=False
        )
    return classify(response.status_code)

"""Webhook payloads, delivery ids and delivery against the receiver on loopback."""

from __future__ import annotations

import asyncio
import json
from datetime import datetime, timezone

import httpx
import pytest

from replytracker import signing, webhook
from replytracker.messages import Message
from replytracker.models import MessageTracker, MessageTrackerSpec
from replytracker.receiver import WebhookReceiver

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=timezone.utc)
TRACKER = MessageTracker(
    namespace="ns", name="bob", uid="uid-1", created_at=T0,
    spec=MessageTrackerSpec(account_id="acc", thread_id="thr", profile_id="bob", message_id="m0"),
)
REPLY = Message(
    position=1, message_id="m1", sender_profile_id="bob", sender_name="Bob", from_owner=False, text="Yes", sent_at=T0
)


def test_delivery_id_is_stable_per_tracker_and_reply():
    first = webhook.delivery_id(tracker_uid="uid-1", event=webhook.REPLY_EVENT, reply_key="m1")
    assert first == webhook.delivery_id(tracker_uid="uid-1", event=webhook.REPLY_EVENT, reply_key="m1")
    assert first != webhook.delivery_id(tracker_uid="uid-2", event=webhook.REPLY_EVENT, reply_key="m1")
    assert first != webhook.delivery_id(tracker_uid="uid-1", event=webhook.REPLY_EVENT, reply_key="m2")


def test_body_is_deterministic_and_complete():
    body = webhook.build_body(TRACKER, event=webhook.REPLY_EVENT, delivery="d", occurred_at=T0, reply=REPLY)
    again = webhook.build_body(TRACKER, event=webhook.REPLY_EVENT, delivery="d", occurred_at=T0, reply=REPLY)
    payload = json.loads(body)

    assert body == again
    assert payload["event"] == "reply.detected"
    assert payload["deliveryId"] == "d"
    assert payload["occurredAt"] == "2026-01-01T12:00:00Z"
    assert payload["tracker"] == {
        "namespace": "ns", "name": "bob", "uid": "uid-1", "accountId": "acc",
        "threadId": "thr", "profileId": "bob", "messageId": "m0",
    }
    assert payload["reply"] == {
        "messageId": "m1", "sender": {"profileId": "bob", "name": "Bob"}, "text": "Yes", "sentAt": "2026-01-01T12:00:00Z",
    }


@pytest.mark.parametrize(
    ("code", "delivered", "permanent"),
    [(200, True, False), (204, True, False), (400, False, True), (404, False, True), (410, False, True),
     (408, False, False), (429, False, False), (500, False, False), (503, False, False)],
)
def test_classify(code, delivered, permanent):
    result = webhook.classify(code)
    assert result.delivered is delivered
    assert result.permanent is permanent


def test_deliver_signs_body_and_sets_headers():
    body = webhook.build_body(TRACKER, event=webhook.REPLY_EVENT, delivery="d-1", occurred_at=T0, reply=REPLY)

    async def go(url):
        async with httpx.AsyncClient() as client:
            return await webhook.deliver(
                client, url=url, body=body, event=webhook.REPLY_EVENT, delivery="d-1", secret="key"
            )

    with WebhookReceiver(secret="key") as receiver:
        result = asyncio.run(go(receiver.url))
        delivery = receiver.wait_for(1, timeout=5)[0]

    assert result.delivered is True
    assert delivery.body == body
    assert delivery.signature_valid is True
    assert delivery.delivery_id == "d-1"
    assert delivery.event == "reply.detected"
    assert delivery.headers["content-type"] == "application/json"
    assert signing.verify(delivery.headers["x-replytracker-signature"], body, secret="key")


def test_deliver_reports_connection_errors():
    async def go():
        async with httpx.AsyncClient(timeout=2) as client:
            return await webhook.deliver(
                client, url="http://127.0.0.1:9/hook", body=b"{}", event="e", delivery="d", secret=None
            )

    result = asyncio.run(go())
    assert result.delivered is False
    assert result.permanent is False
    assert result.status_code is None


@pytest.mark.parametrize("url", ["ftp://127.0.0.1/hook", "http://[::1/hook"])
def test_deliver_invalid_url_is_permanent(url):
    async def go():
        async with httpx.AsyncClient(timeout=2) as client:
            return await webhook.deliver(client, url=url, body=b"{}", event="e", delivery="d", secret=None)

    result = asyncio.run(go())
    assert result.delivered is False
    assert result.permanent is True
    assert "invalid webhook URL" in result.error

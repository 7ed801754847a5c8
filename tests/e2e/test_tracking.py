"""The operator end to end: a real API server, the fake provider and a webhook receiver over loopback."""

from __future__ import annotations

import json
import time

import pytest
from support import ACCOUNT, WEBHOOK_SECRET, apply, condition, get_tracker, tracker_manifest, tracker_status, wait_for, wait_for_status

from replytracker import signing

pytestmark = pytest.mark.e2e

THREAD = "thread-1"
# 0.001 hours is 3.6 seconds: short enough to watch several checks in a test.
FAST = 0.001


def now_ms() -> int:
    return int(time.time() * 1000)


def add_reply(provider, *, thread=THREAD, message_id="reply-1", text="Thanks, let's talk on Monday.") -> None:
    provider.provider.add_message(
        ACCOUNT,
        thread,
        {
            "message_id": message_id,
            "sender_profile_id": "bob",
            "sender_name": "Bob Example",
            "is_sender": False,
            "text": text,
            "created_at": now_ms(),
        },
    )


def seed_thread(provider, *, thread=THREAD) -> None:
    provider.provider.add_message(
        ACCOUNT,
        thread,
        {
            "message_id": "sent-1",
            "sender_profile_id": "me",
            "sender_name": "Me",
            "is_sender": True,
            "text": "Hello Bob",
            "created_at": now_ms() - 60_000,
        },
    )


def checks_of(provider, thread=THREAD):
    return [c for c in provider.provider.calls(path="personal_messages") if c.thread_id == thread]


def webhook_spec(receiver, secret_name):
    return {"url": receiver.url, "secretRef": {"name": secret_name, "key": "key"}}


def test_reply_detected_and_webhook_signed(control_plane, namespace, provider, receiver, webhook_secret, start_operator):
    seed_thread(provider)
    start_operator()
    apply(
        control_plane,
        tracker_manifest(
            "bob", namespace, accountId=ACCOUNT, threadId=THREAD, profileId="bob", messageId="sent-1",
            frequency=FAST, webhook=webhook_spec(receiver, webhook_secret),
        ),
    )
    wait_for_status(
        control_plane, namespace, "bob", lambda s: s.get("checkCount", 0) >= 1 and s.get("phase") == "Tracking",
        what="the first check",
    )
    add_reply(provider)

    control_plane.kubectl("wait", "--for=condition=Replied", "mt/bob", "-n", namespace, "--timeout=30s")
    status = wait_for_status(
        control_plane, namespace, "bob", lambda s: (s.get("webhook") or {}).get("deliveredTime"),
        what="the webhook delivery to be recorded",
    )
    deliveries = receiver.wait_for(1, timeout=10)
    delivery = deliveries[0]
    body = json.loads(delivery.body)

    assert status["phase"] == "Replied"
    assert status["reply"]["messageId"] == "reply-1"
    assert status["reply"]["senderProfileId"] == "bob"
    assert status["reply"]["senderName"] == "Bob Example"
    assert "nextCheckTime" not in status
    assert "Monday" not in json.dumps(status), "the message text must not be stored in status"
    assert condition(status, "Replied")["status"] == "True"
    assert condition(status, "WebhookDelivered")["status"] == "True"
    assert condition(status, "Ready")["observedGeneration"] == 1
    assert status["webhook"]["attempts"] == 1
    assert status["webhook"]["lastStatusCode"] == 200

    assert delivery.signature_valid is True
    assert delivery.event == "reply.detected"
    assert delivery.headers["x-replytracker-event"] == "reply.detected"
    assert delivery.delivery_id == status["webhook"]["deliveryId"]
    assert signing.verify(delivery.headers["x-replytracker-signature"], delivery.body, secret=WEBHOOK_SECRET)
    assert body["event"] == "reply.detected"
    assert body["deliveryId"] == delivery.delivery_id
    assert body["tracker"]["namespace"] == namespace
    assert body["tracker"]["name"] == "bob"
    assert body["tracker"]["accountId"] == ACCOUNT
    assert body["tracker"]["threadId"] == THREAD
    assert body["tracker"]["messageId"] == "sent-1"
    assert body["reply"]["messageId"] == "reply-1"
    assert body["reply"]["sender"] == {"profileId": "bob", "name": "Bob Example"}
    assert body["reply"]["text"] == "Thanks, let's talk on Monday."

    # Tracking has stopped: no more checks after the reply.
    calls_after_reply = len(checks_of(provider))
    apply(control_plane, tracker_manifest("barrier", namespace, accountId=ACCOUNT, threadId="other", frequency=FAST))
    wait_for_status(control_plane, namespace, "barrier", lambda s: s.get("checkCount", 0) >= 3, what="three checks of another tracker")
    assert len(checks_of(provider)) == calls_after_reply
    assert len(receiver.deliveries) == 1


def test_no_reply_keeps_checking_at_frequency(control_plane, namespace, provider, start_operator):
    seed_thread(provider)
    start_operator()
    apply(control_plane, tracker_manifest("quiet", namespace, accountId=ACCOUNT, threadId=THREAD, frequency=FAST))
    status = wait_for_status(
        control_plane, namespace, "quiet", lambda s: s.get("checkCount", 0) >= 3, timeout=40, what="three checks"
    )
    calls = checks_of(provider)
    gaps = [later.time - earlier.time for earlier, later in zip(calls, calls[1:])]

    assert status["phase"] == "Tracking"
    assert status["consecutiveFailures"] == 0
    assert condition(status, "Ready")["status"] == "True"
    assert condition(status, "Replied")["status"] == "False"
    assert status["nextCheckTime"] > status["lastCheckTime"]
    assert len(calls) >= 3
    assert min(gaps) >= 3.0, f"checks came closer than the 3.6 s frequency: {gaps}"


def test_frequency_below_minimum_is_clamped(control_plane, namespace, provider, start_operator):
    start_operator(min_frequency_seconds="3")
    apply(control_plane, tracker_manifest("eager", namespace, accountId=ACCOUNT, threadId=THREAD, frequency=0.0001))
    status = wait_for_status(control_plane, namespace, "eager", lambda s: s.get("checkCount", 0) >= 2, what="two checks")
    calls = checks_of(provider)

    assert "REPLYTRACKER_MIN_FREQUENCY_SECONDS" in condition(status, "Ready")["message"]
    assert calls[1].time - calls[0].time >= 2.5


def test_suspend_and_resume(control_plane, namespace, provider, start_operator):
    start_operator()
    apply(control_plane, tracker_manifest("pause", namespace, accountId=ACCOUNT, threadId=THREAD, frequency=FAST))
    wait_for_status(control_plane, namespace, "pause", lambda s: s.get("checkCount", 0) >= 1, what="the first check")

    control_plane.kubectl("patch", "mt", "pause", "-n", namespace, "--type=merge", "-p", '{"spec":{"suspend":true}}')
    status = wait_for_status(
        control_plane, namespace, "pause", lambda s: s.get("phase") == "Suspended", what="phase Suspended"
    )
    assert status["observedGeneration"] == 2
    assert condition(status, "Ready")["reason"] == "Suspended"
    suspended_count = status["checkCount"]
    suspended_calls = len(checks_of(provider))

    # Another tracker checking three times shows that time passed with the operator running.
    apply(control_plane, tracker_manifest("clock", namespace, accountId=ACCOUNT, threadId="other", frequency=FAST))
    wait_for_status(control_plane, namespace, "clock", lambda s: s.get("checkCount", 0) >= 3, timeout=40, what="three checks of another tracker")
    assert len(checks_of(provider)) == suspended_calls
    assert tracker_status(control_plane, namespace, "pause")["checkCount"] == suspended_count

    control_plane.kubectl("patch", "mt", "pause", "-n", namespace, "--type=merge", "-p", '{"spec":{"suspend":false}}')
    status = wait_for_status(
        control_plane, namespace, "pause", lambda s: s.get("checkCount", 0) > suspended_count, what="a check after resuming"
    )
    assert status["phase"] == "Tracking"
    assert status["observedGeneration"] == 3


def test_frequency_change_takes_effect(control_plane, namespace, provider, start_operator):
    start_operator()
    apply(control_plane, tracker_manifest("slow", namespace, accountId=ACCOUNT, threadId=THREAD, frequency=1))
    first = wait_for_status(control_plane, namespace, "slow", lambda s: s.get("checkCount", 0) >= 1, what="the first check")
    control_plane.kubectl("patch", "mt", "slow", "-n", namespace, "--type=merge", "-p", json.dumps({"spec": {"frequency": FAST}}))
    status = wait_for_status(
        control_plane, namespace, "slow", lambda s: s.get("checkCount", 0) >= 2, what="a check at the new frequency"
    )
    assert first["nextCheckTime"] > status["lastCheckTime"], "the second check came before the old schedule"
    assert status["observedGeneration"] == 2


def test_delete_stops_checks(control_plane, namespace, provider, start_operator):
    operator = start_operator()
    apply(control_plane, tracker_manifest("gone", namespace, accountId=ACCOUNT, threadId=THREAD, frequency=FAST))
    wait_for_status(control_plane, namespace, "gone", lambda s: s.get("checkCount", 0) >= 1, what="the first check")
    tracker = get_tracker(control_plane, namespace, "gone")
    assert not tracker["metadata"].get("finalizers"), "the operator must not add finalizers"

    control_plane.kubectl("delete", "mt", "gone", "-n", namespace, "--timeout=10s")
    calls_at_delete = len(checks_of(provider))
    apply(control_plane, tracker_manifest("clock", namespace, accountId=ACCOUNT, threadId="other", frequency=FAST))
    wait_for_status(control_plane, namespace, "clock", lambda s: s.get("checkCount", 0) >= 3, timeout=40, what="three checks of another tracker")
    assert len(checks_of(provider)) <= calls_at_delete + 1, "checks went on after the delete"
    assert "Stopped tracking" in operator.log()


def test_timeout_expires(control_plane, namespace, provider, receiver, webhook_secret, start_operator):
    start_operator()
    apply(
        control_plane,
        tracker_manifest(
            "late", namespace, accountId=ACCOUNT, threadId=THREAD, frequency=1, timeoutHours=0.001,
            webhook=webhook_spec(receiver, webhook_secret),
        ),
    )
    status = wait_for_status(
        control_plane, namespace, "late", lambda s: s.get("phase") == "Expired" and (s.get("webhook") or {}).get("deliveredTime"),
        what="phase Expired with the webhook delivered",
    )
    delivery = receiver.wait_for(1, timeout=10)[0]
    body = json.loads(delivery.body)

    assert status["completionTime"]
    assert condition(status, "Replied")["reason"] == "Expired"
    assert delivery.event == "tracker.expired"
    assert delivery.signature_valid is True
    assert body["reply"] is None
    assert body["tracker"]["name"] == "late"


def test_unauthorized_checks_at_normal_frequency(control_plane, namespace, provider, start_operator):
    start_operator(api_secret="wrong-secret")
    apply(control_plane, tracker_manifest("denied", namespace, accountId=ACCOUNT, threadId=THREAD, frequency=FAST))
    status = wait_for_status(
        control_plane, namespace, "denied", lambda s: s.get("consecutiveFailures", 0) >= 2, timeout=40, what="two failed checks"
    )
    calls = checks_of(provider)
    ready = condition(status, "Ready")

    assert ready["status"] == "False"
    assert ready["reason"] == "Unauthorized"
    assert "wrong-secret" not in json.dumps(status)
    assert all(c.status_code == 401 for c in calls)
    assert calls[1].time - calls[0].time >= 3.0, "a 401 must not be retried faster than the frequency"


def test_rate_limit_waits_for_retry_after(control_plane, namespace, provider, start_operator):
    provider.provider.inject_fault(status=429, retry_after=5, times=1)
    start_operator()
    apply(control_plane, tracker_manifest("limited", namespace, accountId=ACCOUNT, threadId=THREAD, frequency=FAST))
    wait_for_status(
        control_plane, namespace, "limited", lambda s: (condition(s, "Ready") or {}).get("reason") == "RateLimited",
        what="Ready=False RateLimited",
    )
    status = wait_for_status(
        control_plane, namespace, "limited", lambda s: s.get("checkCount", 0) >= 2 and s.get("consecutiveFailures") == 0,
        timeout=30, what="a successful check after the rate limit",
    )
    calls = checks_of(provider)

    assert calls[0].status_code == 429
    assert calls[1].status_code == 200
    assert calls[1].time - calls[0].time >= 4.5, "the operator did not wait for Retry-After"
    assert condition(status, "Ready")["status"] == "True"


def test_server_errors_back_off_and_recover(control_plane, namespace, provider, start_operator):
    provider.provider.inject_fault(status=500, times=3)
    start_operator()
    apply(control_plane, tracker_manifest("flaky", namespace, accountId=ACCOUNT, threadId=THREAD, frequency=0.01))
    failing = wait_for_status(
        control_plane, namespace, "flaky", lambda s: s.get("consecutiveFailures", 0) >= 2, timeout=30, what="two failures"
    )
    assert condition(failing, "Ready")["reason"] == "ProviderError"
    assert "HTTP 500" in condition(failing, "Ready")["message"]

    recovered = wait_for_status(
        control_plane, namespace, "flaky", lambda s: s.get("checkCount", 0) >= 4 and s.get("consecutiveFailures") == 0,
        timeout=40, what="recovery after three failures",
    )
    calls = checks_of(provider)
    gaps = [later.time - earlier.time for earlier, later in zip(calls, calls[1:])]

    assert condition(recovered, "Ready")["status"] == "True"
    assert [c.status_code for c in calls[:4]] == [500, 500, 500, 200]
    # Backoff from the 1 s minimum interval: about 1, 2 and 4 seconds.
    assert gaps[0] >= 0.5
    assert gaps[1] >= 1.5
    assert gaps[2] >= 3.5


def test_malformed_answer_is_a_failed_check(control_plane, namespace, provider, start_operator):
    provider.provider.inject_fault(malformed=True, times=1)
    start_operator()
    apply(control_plane, tracker_manifest("garbled", namespace, accountId=ACCOUNT, threadId=THREAD, frequency=FAST))
    status = wait_for_status(
        control_plane, namespace, "garbled", lambda s: s.get("consecutiveFailures", 0) >= 1, what="a failed check"
    )
    assert condition(status, "Ready")["reason"] == "ProviderError"
    assert "not JSON" in condition(status, "Ready")["message"]


def test_async_answers_and_other_field_names(control_plane, namespace, provider, receiver, webhook_secret, start_operator):
    provider.provider.set_mode("async", pending_polls=2)
    provider.provider.add_message(
        ACCOUNT, THREAD, {"id": "m1", "sender_id": "me", "from_me": True, "body": "Hi", "timestamp": now_ms() - 60_000}
    )
    provider.provider.add_message(
        ACCOUNT,
        THREAD,
        {
            "id": "m2",
            "from": {"profile_id": "carol", "name": "Carol"},
            "message": "Sure",
            "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 1)),
        },
    )
    start_operator()
    apply(
        control_plane,
        tracker_manifest(
            "async", namespace, accountId=ACCOUNT, threadId=THREAD, messageId="m1", frequency=FAST,
            webhook=webhook_spec(receiver, webhook_secret),
        ),
    )
    status = wait_for_status(
        control_plane, namespace, "async", lambda s: s.get("phase") == "Replied", what="phase Replied"
    )
    body = json.loads(receiver.wait_for(1, timeout=10)[0].body)

    assert status["reply"]["messageId"] == "m2"
    assert status["reply"]["senderName"] == "Carol"
    assert len(provider.provider.calls(path="get_response")) >= 2
    assert body["reply"]["text"] == "Sure"


def test_missing_credentials_secret(control_plane, namespace, provider, start_operator):
    start_operator()
    apply(
        control_plane,
        tracker_manifest(
            "creds", namespace, accountId=ACCOUNT, threadId=THREAD, frequency=FAST,
            credentialsSecretRef={"name": "welink"},
        ),
    )
    status = wait_for_status(
        control_plane, namespace, "creds", lambda s: (condition(s, "Ready") or {}).get("reason") == "SecretNotFound",
        what="Ready=False SecretNotFound",
    )
    assert f"{namespace}/welink" in condition(status, "Ready")["message"]
    assert checks_of(provider) == []

    control_plane.kubectl(
        "create", "secret", "generic", "welink", "-n", namespace,
        "--from-literal=apiKey=test-key", "--from-literal=apiSecret=test-secret",
    )
    status = wait_for_status(
        control_plane, namespace, "creds", lambda s: (condition(s, "Ready") or {}).get("status") == "True",
        timeout=30, what="Ready=True once the Secret exists",
    )
    assert status["consecutiveFailures"] == 0


def test_webhook_client_error_is_permanent(control_plane, namespace, provider, receiver, webhook_secret, start_operator):
    receiver.respond_with(410)
    add_reply(provider)
    start_operator()
    apply(
        control_plane,
        tracker_manifest(
            "rejected", namespace, accountId=ACCOUNT, threadId=THREAD, sentAt="2020-01-01T00:00:00Z",
            frequency=FAST, webhook=webhook_spec(receiver, webhook_secret),
        ),
    )
    status = wait_for_status(
        control_plane, namespace, "rejected",
        lambda s: (condition(s, "WebhookDelivered") or {}).get("reason") == "DeliveryFailed",
        what="WebhookDelivered=False DeliveryFailed",
    )
    assert status["phase"] == "Replied"
    assert status["webhook"]["attempts"] == 1
    assert status["webhook"]["lastStatusCode"] == 410
    assert len(receiver.deliveries) == 1


def test_webhook_retries_until_delivered(control_plane, namespace, provider, receiver, webhook_secret, start_operator):
    receiver.respond_with(503, 500)
    add_reply(provider)
    start_operator()
    apply(
        control_plane,
        tracker_manifest(
            "retry", namespace, accountId=ACCOUNT, threadId=THREAD, sentAt="2020-01-01T00:00:00Z",
            frequency=FAST, webhook=webhook_spec(receiver, webhook_secret),
        ),
    )
    status = wait_for_status(
        control_plane, namespace, "retry", lambda s: (s.get("webhook") or {}).get("deliveredTime"), what="delivery"
    )
    deliveries = receiver.deliveries

    assert status["webhook"]["attempts"] == 3
    assert len(deliveries) == 3
    assert len({d.delivery_id for d in deliveries}) == 1
    assert len({d.body for d in deliveries}) == 1, "every attempt must send the same bytes"
    assert all(d.signature_valid for d in deliveries)


def test_finished_tracker_records_spec_edit(control_plane, namespace, provider, start_operator):
    add_reply(provider)
    start_operator()
    apply(
        control_plane,
        tracker_manifest("done", namespace, accountId=ACCOUNT, threadId=THREAD, sentAt="2020-01-01T00:00:00Z", frequency=FAST),
    )
    replied = wait_for_status(control_plane, namespace, "done", lambda s: s.get("phase") == "Replied", what="phase Replied")
    control_plane.kubectl("patch", "mt", "done", "-n", namespace, "--type=merge", "-p", '{"spec":{"frequency":2}}')
    status = wait_for_status(
        control_plane, namespace, "done", lambda s: s.get("observedGeneration") == 2, what="observedGeneration 2"
    )

    assert status["phase"] == "Replied"
    assert status["checkCount"] == replied["checkCount"]
    assert all(c["observedGeneration"] == 2 for c in status["conditions"])
    control_plane.kubectl("wait", "--for=condition=Ready", "mt/done", "-n", namespace, "--timeout=10s")

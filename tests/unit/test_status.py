"""Status transitions: conditions, counters and the schedule they record."""

from datetime import datetime, timedelta, timezone

from replytracker import status as st
from replytracker.messages import Message
from replytracker.models import ConditionStatus, MessageTracker, MessageTrackerSpec, MessageTrackerStatus, Phase

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=timezone.utc)


def tracker(status=None, generation=1):
    return MessageTracker(
        namespace="ns",
        name="t",
        uid="u",
        generation=generation,
        created_at=T0,
        spec=MessageTrackerSpec(account_id="a", thread_id="t", timeout_hours=2),
        status=status or MessageTrackerStatus(),
    )


def condition(status, type):
    found = st.get_condition(status, type)
    assert found is not None, f"no {type} condition"
    return found


def test_no_reply_records_schedule_and_ready():
    result = st.after_no_reply(tracker(), now=T0, interval=timedelta(hours=1), clamped=False)
    assert result.phase == Phase.TRACKING
    assert result.check_count == 1
    assert result.next_check_time == T0 + timedelta(hours=1)
    assert result.observed_generation == 1
    ready = condition(result, "Ready")
    assert ready.status == ConditionStatus.TRUE
    assert ready.observed_generation == 1
    assert condition(result, "Replied").status == ConditionStatus.FALSE


def test_clamp_is_explained_in_ready_message():
    result = st.after_no_reply(tracker(), now=T0, interval=timedelta(seconds=60), clamped=True)
    assert "REPLYTRACKER_MIN_FREQUENCY_SECONDS" in condition(result, "Ready").message


def test_transition_time_moves_only_on_status_change():
    first = st.after_no_reply(tracker(), now=T0, interval=timedelta(hours=1), clamped=False)
    second = st.after_no_reply(tracker(first), now=T0 + timedelta(hours=1), interval=timedelta(hours=1), clamped=False)
    assert condition(second, "Ready").last_transition_time == T0
    failed = st.after_failure(
        tracker(second), now=T0 + timedelta(hours=2), reason="ProviderError", message="boom.", next_check=T0 + timedelta(hours=3)
    )
    assert condition(failed, "Ready").last_transition_time == T0 + timedelta(hours=2)
    assert condition(failed, "Ready").reason == "ProviderError"
    assert failed.consecutive_failures == 1
    assert failed.check_count == 3


def test_reply_stops_tracking_and_keeps_no_text():
    reply = Message(
        position=3, message_id="m9", sender_profile_id="bob", sender_name="Bob", from_owner=False,
        text="secret words", sent_at=T0 + timedelta(minutes=3),
    )
    result = st.after_reply(tracker(), reply=reply, now=T0 + timedelta(minutes=5), delivery_id="d1", webhook_configured=True)
    assert result.phase == Phase.REPLIED
    assert result.next_check_time is None
    assert result.reply is not None
    assert result.reply.message_id == "m9"
    assert result.webhook is not None
    assert result.webhook.delivery_id == "d1"
    assert condition(result, "Replied").status == ConditionStatus.TRUE
    assert condition(result, "WebhookDelivered").reason == "Pending"
    assert "secret words" not in result.model_dump_json()


def test_reply_without_webhook_says_not_configured():
    reply = Message(position=0, message_id="m", sender_profile_id=None, sender_name=None, from_owner=False, text=None, sent_at=None)
    result = st.after_reply(tracker(), reply=reply, now=T0, delivery_id="d", webhook_configured=False)
    assert result.webhook is None
    assert condition(result, "WebhookDelivered").reason == "NotConfigured"


def test_delivery_outcomes():
    reply = Message(position=0, message_id="m", sender_profile_id="b", sender_name="B", from_owner=False, text="x", sent_at=T0)
    replied = st.after_reply(tracker(), reply=reply, now=T0, delivery_id="d", webhook_configured=True)
    retry = st.after_delivery(
        tracker(replied), now=T0, status_code=503, error="receiver returned HTTP 503",
        delivered=False, permanent=False, max_attempts=3, next_attempt=T0 + timedelta(seconds=10),
    )
    assert retry.webhook is not None
    assert retry.webhook.attempts == 1
    assert condition(retry, "WebhookDelivered").reason == "Retrying"
    done = st.after_delivery(
        tracker(retry), now=T0, status_code=204, error=None, delivered=True, permanent=False, max_attempts=3, next_attempt=None
    )
    assert done.webhook is not None
    assert done.webhook.delivered_time == T0
    assert done.webhook.last_error is None
    assert condition(done, "WebhookDelivered").status == ConditionStatus.TRUE
    gone = st.after_delivery(
        tracker(retry), now=T0, status_code=410, error="receiver returned HTTP 410",
        delivered=False, permanent=True, max_attempts=3, next_attempt=None,
    )
    assert condition(gone, "WebhookDelivered").reason == "DeliveryFailed"


def test_blocked_delivery_gives_up_after_max_attempts():
    reply = Message(position=0, message_id="m", sender_profile_id="b", sender_name="B", from_owner=False, text="x", sent_at=T0)
    current = st.after_reply(tracker(), reply=reply, now=T0, delivery_id="d", webhook_configured=True)
    for _ in range(2):
        current = st.after_delivery_blocked(tracker(current), now=T0, reason="SecretNotFound", message="missing.", max_attempts=2)
    assert condition(current, "WebhookDelivered").reason == "DeliveryFailed"


def test_expiry():
    result = st.after_expiry(tracker(), now=T0 + timedelta(hours=2), delivery_id="e", webhook_configured=True)
    assert result.phase == Phase.EXPIRED
    assert result.webhook is not None
    assert result.webhook.event == "tracker.expired"
    assert condition(result, "Replied").reason == "Expired"


def test_acknowledge_records_generation_only():
    expired = st.after_expiry(tracker(), now=T0, delivery_id="e", webhook_configured=False)
    result = st.after_acknowledge(tracker(expired, generation=3))
    assert result.observed_generation == 3
    assert all(c.observed_generation == 3 for c in result.conditions)
    assert result.phase == Phase.EXPIRED
    assert [c.last_transition_time for c in result.conditions] == [c.last_transition_time for c in expired.conditions]

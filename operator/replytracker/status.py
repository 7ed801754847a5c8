"""Status transitions of a tracker after each step: pure functions, no I/O.

Each function takes the tracker as last observed and returns the complete
new status, which the engine writes as is.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from replytracker.messages import Message
from replytracker.models import (
    Condition,
    ConditionStatus,
    MessageTracker,
    MessageTrackerStatus,
    Phase,
    ReplyStatus,
    WebhookStatus,
)

READY = "Ready"
REPLIED = "Replied"
WEBHOOK_DELIVERED = "WebhookDelivered"


def _stamp(value: datetime) -> datetime:
    """Drop sub-second precision, as Kubernetes timestamps have none."""
    return value.replace(microsecond=0)


def _stamp_up(value: datetime) -> datetime:
    """Round a due time up to the whole second, so that rounding never shortens an interval."""
    if value.microsecond == 0:
        return value
    return value.replace(microsecond=0) + timedelta(seconds=1)


def set_condition(
    conditions: list[Condition],
    *,
    type: str,
    status: bool | None,
    reason: str,
    message: str,
    generation: int,
    now: datetime,
) -> list[Condition]:
    """Return ``conditions`` with one condition set; lastTransitionTime moves only when status changes."""
    if status is None:
        value = ConditionStatus.UNKNOWN
    elif status:
        value = ConditionStatus.TRUE
    else:
        value = ConditionStatus.FALSE
    previous = next((c for c in conditions if c.type == type), None)
    transition = previous.last_transition_time if previous is not None and previous.status == value else _stamp(now)
    updated = Condition(
        type=type,
        status=value,
        reason=reason,
        message=message,
        observed_generation=generation,
        last_transition_time=transition,
    )
    others = [c for c in conditions if c.type != type]
    order = {READY: 0, REPLIED: 1, WEBHOOK_DELIVERED: 2}
    return sorted([*others, updated], key=lambda c: order.get(c.type, 99))


def get_condition(status: MessageTrackerStatus, type: str) -> Condition | None:
    return next((c for c in status.conditions if c.type == type), None)


def _base(tracker: MessageTracker) -> MessageTrackerStatus:
    return tracker.status.model_copy(deep=True, update={"observed_generation": tracker.generation})


def _format(value: datetime) -> str:
    return _stamp(value).isoformat().replace("+00:00", "Z")


def _clamp_note(clamped: bool, interval: timedelta) -> str:
    if not clamped:
        return ""
    return (
        f" spec.frequency is below the operator's minimum interval, so checks run every "
        f"{interval.total_seconds():g} s (REPLYTRACKER_MIN_FREQUENCY_SECONDS)."
    )


def after_no_reply(
    tracker: MessageTracker, *, now: datetime, interval: timedelta, clamped: bool
) -> MessageTrackerStatus:
    """Return the status after a successful check that found no reply."""
    status = _base(tracker)
    next_check = _stamp_up(now + interval)
    status.phase = Phase.TRACKING
    status.last_check_time = _stamp(now)
    status.next_check_time = next_check
    status.check_count += 1
    status.consecutive_failures = 0
    generation = tracker.generation
    status.conditions = set_condition(
        status.conditions,
        type=READY,
        status=True,
        reason="CheckSucceeded",
        message=f"Last check found no reply; next check at {_format(next_check)}."
        + _clamp_note(clamped, interval),
        generation=generation,
        now=now,
    )
    status.conditions = set_condition(
        status.conditions,
        type=REPLIED,
        status=False,
        reason="NoReplyYet",
        message="No reply as of the last check.",
        generation=generation,
        now=now,
    )
    return status


def _webhook_waiting_condition(
    conditions: list[Condition], *, webhook_configured: bool, generation: int, now: datetime
) -> list[Condition]:
    if webhook_configured:
        return set_condition(
            conditions,
            type=WEBHOOK_DELIVERED,
            status=False,
            reason="Pending",
            message="Delivery not attempted yet.",
            generation=generation,
            now=now,
        )
    return set_condition(
        conditions,
        type=WEBHOOK_DELIVERED,
        status=False,
        reason="NotConfigured",
        message="No spec.webhook and no REPLYTRACKER_WEBHOOK_URL; the outcome is recorded in status only.",
        generation=generation,
        now=now,
    )


def after_reply(
    tracker: MessageTracker,
    *,
    reply: Message,
    now: datetime,
    delivery_id: str,
    webhook_configured: bool,
) -> MessageTrackerStatus:
    """Return the status after a check found a reply: tracking ends, and a delivery starts if a webhook is set."""
    status = _base(tracker)
    generation = tracker.generation
    status.phase = Phase.REPLIED
    status.last_check_time = _stamp(now)
    status.next_check_time = None
    status.check_count += 1
    status.consecutive_failures = 0
    status.completion_time = _stamp(now)
    status.reply = ReplyStatus(
        message_id=reply.message_id,
        sender_profile_id=reply.sender_profile_id,
        sender_name=reply.sender_name,
        sent_at=_stamp(reply.sent_at) if reply.sent_at else None,
    )
    status.webhook = (
        WebhookStatus(delivery_id=delivery_id, event="reply.detected", attempts=0) if webhook_configured else None
    )
    sender = reply.sender_name or reply.sender_profile_id or "an unknown sender"
    status.conditions = set_condition(
        status.conditions,
        type=READY,
        status=True,
        reason="Completed",
        message="Reply detected; tracking stopped.",
        generation=generation,
        now=now,
    )
    status.conditions = set_condition(
        status.conditions,
        type=REPLIED,
        status=True,
        reason="ReplyDetected",
        message=f"Reply from {sender}"
        + (f" sent at {_format(reply.sent_at)}." if reply.sent_at else "."),
        generation=generation,
        now=now,
    )
    status.conditions = _webhook_waiting_condition(
        status.conditions, webhook_configured=webhook_configured, generation=generation, now=now
    )
    return status


def after_expiry(
    tracker: MessageTracker, *, now: datetime, delivery_id: str, webhook_configured: bool
) -> MessageTrackerStatus:
    """Return the status after the timeout passed without a reply: tracking ends."""
    status = _base(tracker)
    generation = tracker.generation
    status.phase = Phase.EXPIRED
    status.next_check_time = None
    status.completion_time = _stamp(now)
    status.webhook = (
        WebhookStatus(delivery_id=delivery_id, event="tracker.expired", attempts=0) if webhook_configured else None
    )
    status.conditions = set_condition(
        status.conditions,
        type=READY,
        status=True,
        reason="Expired",
        message=f"No reply within spec.timeoutHours={tracker.spec.timeout_hours:g}; tracking stopped.",
        generation=generation,
        now=now,
    )
    status.conditions = set_condition(
        status.conditions,
        type=REPLIED,
        status=False,
        reason="Expired",
        message="No reply before the timeout.",
        generation=generation,
        now=now,
    )
    status.conditions = _webhook_waiting_condition(
        status.conditions, webhook_configured=webhook_configured, generation=generation, now=now
    )
    return status


def after_failure(
    tracker: MessageTracker,
    *,
    now: datetime,
    reason: str,
    message: str,
    next_check: datetime,
    counted_as_check: bool = True,
) -> MessageTrackerStatus:
    """Return the status after a failed check (provider error, missing Secret). Tracking goes on at ``next_check``."""
    status = _base(tracker)
    status.phase = Phase.TRACKING
    if counted_as_check:
        status.last_check_time = _stamp(now)
        status.check_count += 1
    status.consecutive_failures += 1
    status.next_check_time = _stamp_up(next_check)
    status.conditions = set_condition(
        status.conditions,
        type=READY,
        status=False,
        reason=reason,
        message=f"{message.rstrip('. ')}. Next check at {_format(_stamp_up(next_check))}.",
        generation=tracker.generation,
        now=now,
    )
    return status


def after_invalid_spec(tracker: MessageTracker, *, now: datetime, message: str) -> MessageTrackerStatus:
    """Return the status for a spec that cannot be acted on. Nothing more happens until it changes."""
    status = _base(tracker)
    status.phase = Phase.FAILED
    status.next_check_time = None
    status.conditions = set_condition(
        status.conditions,
        type=READY,
        status=False,
        reason="InvalidSpec",
        message=message,
        generation=tracker.generation,
        now=now,
    )
    return status


def after_acknowledge(tracker: MessageTracker) -> MessageTrackerStatus:
    """Return the status of a finished tracker with the current generation recorded, and nothing else changed."""
    status = _base(tracker)
    status.conditions = [c.model_copy(update={"observed_generation": tracker.generation}) for c in status.conditions]
    return status


def after_suspend(tracker: MessageTracker, *, now: datetime) -> MessageTrackerStatus:
    status = _base(tracker)
    status.phase = Phase.SUSPENDED
    status.next_check_time = None
    status.conditions = set_condition(
        status.conditions,
        type=READY,
        status=True,
        reason="Suspended",
        message="Checks are suspended by spec.suspend; set it to false to resume.",
        generation=tracker.generation,
        now=now,
    )
    return status


def after_reschedule(
    tracker: MessageTracker, *, now: datetime, next_check: datetime, interval: timedelta, clamped: bool
) -> MessageTrackerStatus:
    """Return the status that records a new schedule after a spec change (frequency, resume)."""
    status = _base(tracker)
    status.phase = Phase.TRACKING
    status.next_check_time = _stamp_up(next_check)
    status.conditions = set_condition(
        status.conditions,
        type=READY,
        status=True,
        reason="Scheduled",
        message=f"Next check at {_format(next_check)}." + _clamp_note(clamped, interval),
        generation=tracker.generation,
        now=now,
    )
    return status


def after_delivery(
    tracker: MessageTracker,
    *,
    now: datetime,
    status_code: int | None,
    error: str | None,
    delivered: bool,
    permanent: bool,
    max_attempts: int,
    next_attempt: datetime | None,
) -> MessageTrackerStatus:
    """Return the status after one webhook delivery attempt."""
    status = _base(tracker)
    webhook = (status.webhook or WebhookStatus()).model_copy()
    webhook.attempts += 1
    webhook.last_attempt_time = _stamp(now)
    webhook.last_status_code = status_code
    webhook.last_error = None if delivered else error
    generation = tracker.generation
    if delivered:
        webhook.delivered_time = _stamp(now)
        condition = (True, "Delivered", f"Receiver returned HTTP {status_code} on attempt {webhook.attempts}.")
    elif permanent or webhook.attempts >= max_attempts:
        why = "a permanent error" if permanent else f"{webhook.attempts} attempts"
        condition = (False, "DeliveryFailed", f"Gave up after {why}: {error}")
    else:
        when = f" Next attempt at {_format(next_attempt)}." if next_attempt else ""
        condition = (False, "Retrying", f"Attempt {webhook.attempts} failed: {error}.{when}")
    status.webhook = webhook
    status.conditions = set_condition(
        status.conditions,
        type=WEBHOOK_DELIVERED,
        status=condition[0],
        reason=condition[1],
        message=condition[2],
        generation=generation,
        now=now,
    )
    return status


def after_delivery_blocked(
    tracker: MessageTracker, *, now: datetime, reason: str, message: str, max_attempts: int
) -> MessageTrackerStatus:
    """Return the status after a delivery that could not be attempted (missing signing Secret).

    It counts as an attempt.

    After ``max_attempts`` the delivery is given up with reason DeliveryFailed.
    """
    status = _base(tracker)
    webhook = (status.webhook or WebhookStatus()).model_copy()
    webhook.attempts += 1
    webhook.last_attempt_time = _stamp(now)
    webhook.last_error = message
    status.webhook = webhook
    if webhook.attempts >= max_attempts:
        reason, message = "DeliveryFailed", f"Gave up after {webhook.attempts} attempts: {message}"
    status.conditions = set_condition(
        status.conditions,
        type=WEBHOOK_DELIVERED,
        status=False,
        reason=reason,
        message=message,
        generation=tracker.generation,
        now=now,
    )
    return status

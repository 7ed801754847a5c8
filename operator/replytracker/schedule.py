"""When each tracker needs attention next, and what to do then: pure functions.

The schedule lives in ``status.nextCheckTime`` (and in the webhook status for
deliveries), so an operator restart reads it back instead of starting over.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from replytracker.models import MessageTracker, MessageTrackerSpec, Phase

# The largest exponent used for backoff, so 2**n stays a small float.
_MAX_BACKOFF_EXPONENT = 30


@dataclass(frozen=True)
class Timing:
    """Operator-wide timing settings, in seconds."""

    min_interval_seconds: float
    webhook_retry_base_seconds: float
    webhook_retry_max_seconds: float
    webhook_max_attempts: int


def check_interval(spec: MessageTrackerSpec, *, timing: Timing) -> tuple[timedelta, bool]:
    """Return the interval between checks and whether the minimum interval clamped it."""
    wanted = spec.frequency * 3600.0
    if wanted < timing.min_interval_seconds:
        return timedelta(seconds=timing.min_interval_seconds), True
    return timedelta(seconds=wanted), False


def failure_delay(*, consecutive_failures: int, interval: timedelta, timing: Timing) -> timedelta:
    """Return the wait after a transient failure: exponential from the minimum interval, capped at the interval."""
    exponent = min(max(consecutive_failures - 1, 0), _MAX_BACKOFF_EXPONENT)
    delay = timing.min_interval_seconds * (2**exponent)
    return timedelta(seconds=max(timing.min_interval_seconds, min(delay, interval.total_seconds())))


def webhook_retry_delay(*, attempts: int, timing: Timing) -> timedelta:
    """Return the wait before delivery attempt ``attempts + 1``."""
    exponent = min(max(attempts - 1, 0), _MAX_BACKOFF_EXPONENT)
    delay = timing.webhook_retry_base_seconds * (2**exponent)
    return timedelta(seconds=min(delay, timing.webhook_retry_max_seconds))


def expiry_time(tracker: MessageTracker) -> datetime | None:
    if tracker.spec.timeout_hours is None:
        return None
    return tracker.created_at + timedelta(hours=tracker.spec.timeout_hours)


def delivery_pending(tracker: MessageTracker) -> bool:
    """True while a webhook delivery has been started and has neither succeeded nor been given up."""
    webhook = tracker.status.webhook
    if webhook is None or webhook.delivery_id is None or webhook.delivered_time is not None:
        return False
    delivered = next((c for c in tracker.status.conditions if c.type == "WebhookDelivered"), None)
    return delivered is None or delivered.reason not in ("DeliveryFailed", "Delivered")


def next_delivery_time(tracker: MessageTracker, *, timing: Timing) -> datetime | None:
    webhook = tracker.status.webhook
    if webhook is None or webhook.attempts == 0 or webhook.last_attempt_time is None:
        return None
    return webhook.last_attempt_time + webhook_retry_delay(attempts=webhook.attempts, timing=timing)


def scheduled_check_time(tracker: MessageTracker, *, timing: Timing) -> datetime:
    """Return when the next check is due.

    ``status.nextCheckTime`` is used as written while the spec is unchanged.
    After a spec change (new frequency, resume) the next check is one new
    interval after the last check, so resuming keeps the old rhythm instead
    of checking at once.
    """
    status = tracker.status
    if status.last_check_time is None:
        return tracker.created_at
    if status.next_check_time is not None and status.observed_generation == tracker.generation:
        return status.next_check_time
    interval, _ = check_interval(tracker.spec, timing=timing)
    return status.last_check_time + interval


@dataclass(frozen=True)
class Wait:
    """Nothing to do until ``until``; None means until the object changes."""

    until: datetime | None


@dataclass(frozen=True)
class Check:
    """Check the thread now."""


@dataclass(frozen=True)
class Deliver:
    """Attempt the pending webhook delivery now."""


@dataclass(frozen=True)
class Expire:
    """The timeout passed without a reply."""


@dataclass(frozen=True)
class Suspend:
    """Record that checks are suspended."""


@dataclass(frozen=True)
class Acknowledge:
    """A finished tracker's spec changed: record the new generation, nothing else."""


@dataclass(frozen=True)
class Reschedule:
    """The spec changed: record the new schedule without checking yet."""

    next_check_time: datetime


Action = Wait | Check | Deliver | Expire | Suspend | Acknowledge | Reschedule


def decide(tracker: MessageTracker, *, now: datetime, timing: Timing) -> Action:
    """Return the one thing to do for ``tracker`` at ``now``."""
    phase = tracker.status.phase
    spec_changed = tracker.status.observed_generation != tracker.generation
    if phase in (Phase.REPLIED, Phase.EXPIRED):
        if not delivery_pending(tracker):
            # Tools such as kstatus wait for observedGeneration to catch up with
            # every edit, even of a tracker that has finished.
            return Acknowledge() if spec_changed else Wait(None)
        due = next_delivery_time(tracker, timing=timing)
        return Deliver() if due is None or due <= now else Wait(due)

    if phase == Phase.FAILED and not spec_changed:
        return Wait(None)

    if tracker.spec.suspend:
        if phase == Phase.SUSPENDED and not spec_changed:
            return Wait(None)
        return Suspend()

    expires = expiry_time(tracker)
    if expires is not None and expires <= now:
        return Expire()

    due = scheduled_check_time(tracker, timing=timing)
    if due <= now:
        return Check()
    if spec_changed or phase != Phase.TRACKING:
        return Reschedule(next_check_time=due)
    return Wait(min(due, expires) if expires is not None else due)

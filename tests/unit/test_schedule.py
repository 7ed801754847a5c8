"""Scheduling decisions: what is due, and when."""

from datetime import datetime, timedelta, timezone

import pytest

from replytracker import schedule
from replytracker.models import MessageTracker, MessageTrackerSpec, MessageTrackerStatus, Phase, WebhookStatus

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=timezone.utc)
TIMING = schedule.Timing(
    min_interval_seconds=60, webhook_retry_base_seconds=10, webhook_retry_max_seconds=3600, webhook_max_attempts=5
)


def tracker(*, generation=1, status=None, **spec):
    spec.setdefault("account_id", "acc")
    spec.setdefault("thread_id", "thr")
    return MessageTracker(
        namespace="ns",
        name="t",
        uid="uid-1",
        generation=generation,
        created_at=T0,
        spec=MessageTrackerSpec(**spec),
        status=status or MessageTrackerStatus(),
    )


def test_interval_from_hours():
    interval, clamped = schedule.check_interval(MessageTrackerSpec(account_id="a", thread_id="t", frequency=0.5), timing=TIMING)
    assert interval == timedelta(minutes=30)
    assert clamped is False


def test_interval_clamped_to_minimum():
    interval, clamped = schedule.check_interval(MessageTrackerSpec(account_id="a", thread_id="t", frequency=0.001), timing=TIMING)
    assert interval == timedelta(seconds=60)
    assert clamped is True


@pytest.mark.parametrize(("failures", "seconds"), [(1, 60), (2, 120), (3, 240), (10, 3600), (1000, 3600)])
def test_failure_backoff_capped_at_interval(failures, seconds):
    delay = schedule.failure_delay(consecutive_failures=failures, interval=timedelta(hours=1), timing=TIMING)
    assert delay == timedelta(seconds=seconds)


@pytest.mark.parametrize(("attempts", "seconds"), [(1, 10), (2, 20), (3, 40), (20, 3600)])
def test_webhook_backoff(attempts, seconds):
    assert schedule.webhook_retry_delay(attempts=attempts, timing=TIMING) == timedelta(seconds=seconds)


def test_new_tracker_checked_at_once():
    assert schedule.decide(tracker(), now=T0 + timedelta(seconds=1), timing=TIMING) == schedule.Check()


def test_waits_for_next_check_time():
    status = MessageTrackerStatus(
        phase=Phase.TRACKING, observed_generation=1, last_check_time=T0, next_check_time=T0 + timedelta(hours=1)
    )
    action = schedule.decide(tracker(status=status), now=T0 + timedelta(minutes=5), timing=TIMING)
    assert action == schedule.Wait(T0 + timedelta(hours=1))


def test_due_check_runs():
    status = MessageTrackerStatus(
        phase=Phase.TRACKING, observed_generation=1, last_check_time=T0, next_check_time=T0 + timedelta(hours=1)
    )
    action = schedule.decide(tracker(status=status), now=T0 + timedelta(hours=1), timing=TIMING)
    assert action == schedule.Check()


def test_frequency_change_reschedules_from_last_check():
    status = MessageTrackerStatus(
        phase=Phase.TRACKING, observed_generation=1, last_check_time=T0, next_check_time=T0 + timedelta(hours=1)
    )
    action = schedule.decide(tracker(generation=2, frequency=2, status=status), now=T0 + timedelta(minutes=5), timing=TIMING)
    assert action == schedule.Reschedule(next_check_time=T0 + timedelta(hours=2))


def test_suspend_then_idle():
    status = MessageTrackerStatus(phase=Phase.TRACKING, observed_generation=1, last_check_time=T0)
    assert schedule.decide(tracker(generation=2, suspend=True, status=status), now=T0, timing=TIMING) == schedule.Suspend()
    suspended = MessageTrackerStatus(phase=Phase.SUSPENDED, observed_generation=2, last_check_time=T0)
    assert schedule.decide(tracker(generation=2, suspend=True, status=suspended), now=T0, timing=TIMING) == schedule.Wait(None)


def test_resume_keeps_rhythm():
    suspended = MessageTrackerStatus(phase=Phase.SUSPENDED, observed_generation=2, last_check_time=T0)
    action = schedule.decide(tracker(generation=3, status=suspended), now=T0 + timedelta(minutes=10), timing=TIMING)
    assert action == schedule.Reschedule(next_check_time=T0 + timedelta(hours=1))


def test_resume_after_long_pause_checks_at_once():
    suspended = MessageTrackerStatus(phase=Phase.SUSPENDED, observed_generation=2, last_check_time=T0)
    action = schedule.decide(tracker(generation=3, status=suspended), now=T0 + timedelta(hours=3), timing=TIMING)
    assert action == schedule.Check()


def test_timeout_expires():
    status = MessageTrackerStatus(
        phase=Phase.TRACKING, observed_generation=1, last_check_time=T0, next_check_time=T0 + timedelta(hours=1)
    )
    action = schedule.decide(tracker(timeout_hours=0.5, status=status), now=T0 + timedelta(minutes=31), timing=TIMING)
    assert action == schedule.Expire()


def test_wait_stops_at_expiry():
    status = MessageTrackerStatus(
        phase=Phase.TRACKING, observed_generation=1, last_check_time=T0, next_check_time=T0 + timedelta(hours=1)
    )
    action = schedule.decide(tracker(timeout_hours=0.5, status=status), now=T0 + timedelta(minutes=1), timing=TIMING)
    assert action == schedule.Wait(T0 + timedelta(minutes=30))


def test_replied_with_pending_delivery_delivers():
    status = MessageTrackerStatus(phase=Phase.REPLIED, observed_generation=1, webhook=WebhookStatus(delivery_id="d"))
    assert schedule.decide(tracker(status=status), now=T0, timing=TIMING) == schedule.Deliver()


def test_delivery_retry_waits_for_backoff():
    webhook = WebhookStatus(delivery_id="d", attempts=2, last_attempt_time=T0)
    status = MessageTrackerStatus(phase=Phase.REPLIED, observed_generation=1, webhook=webhook)
    action = schedule.decide(tracker(status=status), now=T0 + timedelta(seconds=5), timing=TIMING)
    assert action == schedule.Wait(T0 + timedelta(seconds=20))


def test_delivered_tracker_is_idle():
    webhook = WebhookStatus(delivery_id="d", attempts=1, last_attempt_time=T0, delivered_time=T0)
    status = MessageTrackerStatus(phase=Phase.REPLIED, observed_generation=1, webhook=webhook)
    assert schedule.decide(tracker(status=status), now=T0, timing=TIMING) == schedule.Wait(None)


def test_replied_without_webhook_is_idle():
    status = MessageTrackerStatus(phase=Phase.REPLIED, observed_generation=1)
    assert schedule.decide(tracker(status=status), now=T0, timing=TIMING) == schedule.Wait(None)


def test_finished_tracker_acknowledges_spec_change():
    status = MessageTrackerStatus(phase=Phase.REPLIED, observed_generation=1)
    assert schedule.decide(tracker(generation=2, status=status), now=T0, timing=TIMING) == schedule.Acknowledge()


def test_finished_tracker_with_pending_delivery_delivers_first():
    status = MessageTrackerStatus(phase=Phase.EXPIRED, observed_generation=1, webhook=WebhookStatus(delivery_id="d"))
    assert schedule.decide(tracker(generation=2, status=status), now=T0, timing=TIMING) == schedule.Deliver()

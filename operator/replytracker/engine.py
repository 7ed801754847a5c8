"""The engine: one scheduler for all trackers, and the steps it runs.

kopf's watch feeds every MessageTracker event to ``Engine.observe``. The
engine keeps a small record per tracker and a heap of wake-up times, so tens
of thousands of trackers cost one asyncio task, not one each. No finalizer is
needed, because a deleted tracker is simply dropped from the heap.

The operator is the only writer of status. After its own write, the engine
keeps the status it wrote and ignores the status in later watch events, so
an event that was already in flight cannot bring back an older schedule.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

import httpx
import pydantic
from kubernetes.client.rest import ApiException

from replytracker import metrics, schedule, status, webhook
from replytracker.events import EventRecorder
from replytracker.kube import KubeClient, SecretProblem
from replytracker.messages import Message, ReplyCriteria, find_reply, parse_messages
from replytracker.models import MessageTracker, MessageTrackerStatus
from replytracker.provider import Credentials, ProviderClient, ProviderError, RateLimited
from replytracker.settings import Settings

logger = logging.getLogger(__name__)

# Delay before retrying a step whose status write failed (API server trouble).
_WRITE_RETRY = timedelta(seconds=10)
# The scheduler wakes at least this often, which bounds the cost of a missed wake-up.
_MAX_SLEEP_SECONDS = 30.0


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


@dataclass
class _Record:
    """Per-tracker state of the engine."""

    tracker: MessageTracker | None
    invalid: str | None = None
    status_written: bool = False
    due: datetime | None = None
    busy: bool = False
    dirty: bool = False
    body: tuple[str, bytes] | None = None  # (delivery id, payload bytes) of the pending delivery


@dataclass
class _WebhookTarget:
    url: str
    secret: str | None


@dataclass(order=True)
class _HeapItem:
    due: datetime
    seq: int
    uid: str = field(compare=False)


class Engine:
    """Schedules and runs checks and deliveries; ``run`` until cancelled."""

    def __init__(
        self,
        *,
        settings: Settings,
        kube: KubeClient,
        provider: ProviderClient,
        http: httpx.AsyncClient,
        events: EventRecorder | None = None,
    ) -> None:
        self._settings = settings
        self._events = events
        self._kube = kube
        self._provider = provider
        self._http = http
        self._timing = schedule.Timing(
            min_interval_seconds=settings.min_frequency_seconds,
            webhook_retry_base_seconds=settings.webhook_retry_base_seconds,
            webhook_retry_max_seconds=settings.webhook_retry_max_seconds,
            webhook_max_attempts=settings.webhook_max_attempts,
        )
        self._records: dict[str, _Record] = {}
        self._heap: list[_HeapItem] = []
        self._seq = itertools.count()
        self._wake = asyncio.Event()
        self._slots = asyncio.Semaphore(settings.max_concurrent_checks)
        self._tasks: set[asyncio.Task[None]] = set()

    # --- fed by the watch ---------------------------------------------------

    def observe(self, body: Any) -> None:
        """Take in the latest version of a tracker from a watch event."""
        meta = body.get("metadata", {})
        uid = meta.get("uid")
        if not uid:
            return
        if meta.get("deletionTimestamp"):
            self.forget(uid)
            return
        record = self._records.get(uid)
        try:
            tracker = MessageTracker.from_body(body)
        except pydantic.ValidationError as exc:
            problem = "; ".join(
                f"spec.{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()
            )
            invalid = _invalid_tracker(body)
            if record is None:
                record = self._records[uid] = _Record(tracker=invalid)
            else:
                record.tracker = invalid if not record.status_written else _with_status(invalid, record.tracker)
            record.invalid = problem
            self._schedule(uid, utcnow())
            return
        if record is None:
            self._records[uid] = _Record(tracker=tracker)
        else:
            if record.status_written and record.tracker is not None:
                tracker = tracker.model_copy(update={"status": record.tracker.status})
            record.tracker = tracker
            record.invalid = None
        self._schedule(uid, utcnow())

    def forget(self, uid: str) -> None:
        """Drop a deleted tracker; a step already running finds it gone and stops."""
        record = self._records.pop(uid, None)
        if self._events is not None:
            self._events.forget(uid)
        if record is not None and record.tracker is not None:
            logger.info("Stopped tracking %s: it was deleted.", record.tracker.ref)

    @property
    def tracked(self) -> int:
        return len(self._records)

    def phases(self) -> list[str]:
        """Return each tracker's phase, with Pending for one not checked yet, for the metrics gauge."""
        result = []
        for record in list(self._records.values()):
            phase = record.tracker.status.phase if record.tracker is not None else None
            result.append(phase.value if phase is not None else "Pending")
        return result

    async def _event(self, tracker: MessageTracker, *, warning: bool, reason: str, message: str) -> None:
        if self._events is not None:
            await self._events.post(tracker, type="Warning" if warning else "Normal", reason=reason, message=message)

    # --- the scheduler --------------------------------------------------------

    def _schedule(self, uid: str, when: datetime) -> None:
        record = self._records.get(uid)
        if record is None:
            return
        if record.busy:
            record.dirty = True
            return
        if record.due is not None and record.due <= when:
            return
        record.due = when
        heapq.heappush(self._heap, _HeapItem(due=when, seq=next(self._seq), uid=uid))
        self._wake.set()

    async def run(self) -> None:
        """Start due steps until cancelled; on cancellation, cancel the running steps too."""
        try:
            while True:
                now = utcnow()
                while self._heap and self._heap[0].due <= now:
                    item = heapq.heappop(self._heap)
                    record = self._records.get(item.uid)
                    if record is None or record.due != item.due:
                        continue  # deleted, or superseded by an earlier wake-up
                    record.due = None
                    record.busy = True
                    task = asyncio.create_task(self._run_step(item.uid))
                    self._tasks.add(task)
                    task.add_done_callback(self._tasks.discard)
                timeout = _MAX_SLEEP_SECONDS
                if self._heap:
                    timeout = min(timeout, max(0.0, (self._heap[0].due - utcnow()).total_seconds()))
                self._wake.clear()
                try:
                    await asyncio.wait_for(self._wake.wait(), timeout=timeout)
                except asyncio.TimeoutError:
                    pass
        finally:
            for task in list(self._tasks):
                task.cancel()
            if self._tasks:
                await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _run_step(self, uid: str) -> None:
        retry_at: datetime | None = None
        try:
            async with self._slots:
                retry_at = await self._step(uid)
        except asyncio.CancelledError:
            raise
        except ApiException as exc:
            record = self._records.get(uid)
            ref = record.tracker.ref if record and record.tracker else uid
            logger.error("Writing the status of %s failed: HTTP %s %s; retrying.", ref, exc.status, exc.reason)
            retry_at = utcnow() + _WRITE_RETRY
        except Exception:
            record = self._records.get(uid)
            ref = record.tracker.ref if record and record.tracker else uid
            logger.exception("Unexpected error while handling %s; retrying.", ref)
            retry_at = utcnow() + _WRITE_RETRY
        finally:
            record = self._records.get(uid)
            if record is not None:
                record.busy = False
                if record.dirty:
                    record.dirty = False
                    retry_at = utcnow()
                if retry_at is not None:
                    self._schedule(uid, retry_at)

    async def _step(self, uid: str) -> datetime | None:
        """Do the one thing due for a tracker; return when to look at it again, or None."""
        record = self._records.get(uid)
        if record is None or record.tracker is None:
            return None
        tracker = record.tracker
        now = utcnow()

        if record.invalid is not None:
            already = status.get_condition(tracker.status, status.READY)
            if (
                already is not None
                and already.reason == "InvalidSpec"
                and tracker.status.observed_generation == tracker.generation
            ):
                return None
            logger.warning("Tracker %s has an invalid spec: %s", tracker.ref, record.invalid)
            await self._write(record, status.after_invalid_spec(tracker, now=now, message=record.invalid))
            return None

        action = schedule.decide(tracker, now=now, timing=self._timing)
        if isinstance(action, schedule.Wait):
            return action.until
        if isinstance(action, schedule.Suspend):
            logger.info("Suspended %s.", tracker.ref)
            await self._write(record, status.after_suspend(tracker, now=now))
        elif isinstance(action, schedule.Acknowledge):
            await self._write(record, status.after_acknowledge(tracker))
        elif isinstance(action, schedule.Reschedule):
            interval, clamped = schedule.check_interval(tracker.spec, timing=self._timing)
            logger.info("Rescheduled %s: next check at %s.", tracker.ref, action.next_check_time.isoformat())
            await self._write(
                record,
                status.after_reschedule(
                    tracker, now=now, next_check=action.next_check_time, interval=interval, clamped=clamped
                ),
            )
        elif isinstance(action, schedule.Expire):
            await self._expire(record, tracker, now=now)
        elif isinstance(action, schedule.Check):
            await self._check(record, tracker, now=now)
        elif isinstance(action, schedule.Deliver):
            await self._deliver(record, tracker, now=now)
        return utcnow()  # look again: the new status decides what comes next

    async def _write(self, record: _Record, new_status: MessageTrackerStatus) -> None:
        tracker = record.tracker
        assert tracker is not None
        # Dump without dropping None, so that a merge patch removes fields that no longer apply.
        wire = new_status.model_dump(mode="json", by_alias=True)
        found = await self._kube.patch_status(namespace=tracker.namespace, name=tracker.name, status=wire)
        if not found:
            self.forget(tracker.uid)
            return
        if record.tracker is not None and record.tracker.uid == tracker.uid:
            record.tracker = record.tracker.model_copy(update={"status": new_status})
            record.status_written = True

    # --- the steps --------------------------------------------------------------

    async def _credentials(self, tracker: MessageTracker) -> Credentials:
        ref = tracker.spec.credentials_secret_ref
        if ref is not None:
            field_name = "spec.credentialsSecretRef"
            key = await self._kube.read_secret_key(
                namespace=tracker.namespace, name=ref.name, key="apiKey", field=field_name
            )
            secret = await self._kube.read_secret_key(
                namespace=tracker.namespace, name=ref.name, key="apiSecret", field=field_name
            )
            return Credentials(api_key=key, api_secret=secret)
        if self._settings.api_key is None or self._settings.api_secret is None:
            raise SecretProblem(
                "CredentialsMissing",
                "No spec.credentialsSecretRef and no REPLYTRACKER_API_KEY/REPLYTRACKER_API_SECRET are set.",
            )
        return Credentials(
            api_key=self._settings.api_key.get_secret_value(),
            api_secret=self._settings.api_secret.get_secret_value(),
        )

    async def _fetch(self, tracker: MessageTracker) -> list[Message]:
        credentials = await self._credentials(tracker)
        raw = await self._provider.fetch_messages(
            account_id=tracker.spec.account_id, thread_id=tracker.spec.thread_id, credentials=credentials
        )
        return parse_messages(raw)

    async def _check(self, record: _Record, tracker: MessageTracker, *, now: datetime) -> None:
        interval, clamped = schedule.check_interval(tracker.spec, timing=self._timing)
        try:
            with metrics.CHECK_DURATION.time():
                messages = await self._fetch(tracker)
        except SecretProblem as exc:
            delay = schedule.failure_delay(
                consecutive_failures=tracker.status.consecutive_failures + 1, interval=interval, timing=self._timing
            )
            logger.warning("Check of %s skipped: %s", tracker.ref, exc.message)
            metrics.CHECKS.labels(result="failed", reason=exc.reason).inc()
            await self._write(
                record,
                status.after_failure(tracker, now=now, reason=exc.reason, message=exc.message, next_check=now + delay),
            )
            await self._event(tracker, warning=True, reason=exc.reason, message=exc.message)
            return
        except ProviderError as exc:
            delay = self._failure_delay(tracker, exc, interval=interval)
            logger.warning(
                "Check of %s failed (%s): %s; next check in %.0f s.",
                tracker.ref,
                exc.reason,
                exc.message,
                delay.total_seconds(),
            )
            metrics.CHECKS.labels(result="failed", reason=exc.reason).inc()
            await self._write(
                record,
                status.after_failure(tracker, now=now, reason=exc.reason, message=exc.message, next_check=now + delay),
            )
            await self._event(tracker, warning=True, reason=exc.reason, message=exc.message)
            return

        criteria = ReplyCriteria(
            profile_id=tracker.spec.profile_id,
            message_id=tracker.spec.message_id,
            sent_at=tracker.spec.sent_at,
            created_at=tracker.created_at,
        )
        reply = find_reply(messages, criteria=criteria)
        if reply is None:
            logger.debug("Checked %s: %d messages, no reply.", tracker.ref, len(messages))
            metrics.CHECKS.labels(result="no_reply", reason="").inc()
            await self._write(record, status.after_no_reply(tracker, now=now, interval=interval, clamped=clamped))
            return

        target_configured = self._webhook_url(tracker) is not None
        delivery = webhook.delivery_id(
            tracker_uid=tracker.uid, event=webhook.REPLY_EVENT, reply_key=webhook.reply_key(reply)
        )
        new_status = status.after_reply(
            tracker, reply=reply, now=now, delivery_id=delivery, webhook_configured=target_configured
        )
        record.body = (
            delivery,
            webhook.build_body(
                tracker, event=webhook.REPLY_EVENT, delivery=delivery, occurred_at=new_status.completion_time, reply=reply
            ),
        )
        logger.info(
            "Reply detected for %s: message %s from %s; tracking stopped.",
            tracker.ref,
            reply.message_id,
            reply.sender_name or reply.sender_profile_id,
        )
        metrics.CHECKS.labels(result="reply", reason="").inc()
        metrics.REPLIES.inc()
        await self._write(record, new_status)
        sender = reply.sender_name or reply.sender_profile_id or "an unknown sender"
        await self._event(tracker, warning=False, reason="ReplyDetected", message=f"Reply from {sender}; tracking stopped.")

    def _failure_delay(self, tracker: MessageTracker, exc: ProviderError, *, interval: timedelta) -> timedelta:
        """Return the wait after a provider error: at the frequency for errors a retry cannot fix, else backoff."""
        if not exc.transient:
            return interval
        delay = schedule.failure_delay(
            consecutive_failures=tracker.status.consecutive_failures + 1, interval=interval, timing=self._timing
        )
        if isinstance(exc, RateLimited) and exc.retry_after is not None:
            delay = max(delay, timedelta(seconds=exc.retry_after))
        return delay

    async def _expire(self, record: _Record, tracker: MessageTracker, *, now: datetime) -> None:
        configured = self._webhook_url(tracker) is not None
        delivery = webhook.delivery_id(tracker_uid=tracker.uid, event=webhook.EXPIRED_EVENT, reply_key=None)
        new_status = status.after_expiry(tracker, now=now, delivery_id=delivery, webhook_configured=configured)
        record.body = (
            delivery,
            webhook.build_body(
                tracker, event=webhook.EXPIRED_EVENT, delivery=delivery, occurred_at=new_status.completion_time, reply=None
            ),
        )
        logger.info("Tracker %s expired after %g hours without a reply.", tracker.ref, tracker.spec.timeout_hours)
        metrics.EXPIRED.inc()
        await self._write(record, new_status)
        await self._event(
            tracker,
            warning=False,
            reason="Expired",
            message=f"No reply within spec.timeoutHours={tracker.spec.timeout_hours:g}; tracking stopped.",
        )

    def _webhook_url(self, tracker: MessageTracker) -> str | None:
        if tracker.spec.webhook is not None:
            return tracker.spec.webhook.url
        return self._settings.webhook_url

    async def _webhook_target(self, tracker: MessageTracker) -> _WebhookTarget | None:
        """Return the URL and signing key; the default key signs only the default webhook."""
        spec = tracker.spec.webhook
        if spec is not None:
            secret = None
            if spec.secret_ref is not None:
                secret = await self._kube.read_secret_key(
                    namespace=tracker.namespace,
                    name=spec.secret_ref.name,
                    key=spec.secret_ref.key,
                    field="spec.webhook.secretRef",
                )
            return _WebhookTarget(url=spec.url, secret=secret)
        if self._settings.webhook_url is None:
            return None
        default_secret = self._settings.webhook_secret
        return _WebhookTarget(
            url=self._settings.webhook_url,
            secret=default_secret.get_secret_value() if default_secret is not None else None,
        )

    async def _payload(self, record: _Record, tracker: MessageTracker) -> bytes:
        """Return the delivery's body, rebuilding it after a restart from the provider's copy of the reply."""
        webhook_status = tracker.status.webhook
        assert webhook_status is not None and webhook_status.delivery_id is not None
        delivery = webhook_status.delivery_id
        if record.body is not None and record.body[0] == delivery:
            return record.body[1]
        event = webhook_status.event or webhook.REPLY_EVENT
        reply: Message | None = None
        if event == webhook.REPLY_EVENT:
            reply = await self._refetch_reply(tracker)
        body = webhook.build_body(
            tracker, event=event, delivery=delivery, occurred_at=tracker.status.completion_time, reply=reply
        )
        record.body = (delivery, body)
        return body

    async def _refetch_reply(self, tracker: MessageTracker) -> Message:
        """Read the reply again, since its text is kept only in memory and never in status."""
        messages = await self._fetch(tracker)
        stored = tracker.status.reply
        for message in messages:
            if stored is not None and stored.message_id is not None and message.message_id == stored.message_id:
                return message
        criteria = ReplyCriteria(
            profile_id=tracker.spec.profile_id,
            message_id=tracker.spec.message_id,
            sent_at=tracker.spec.sent_at,
            created_at=tracker.created_at,
        )
        found = find_reply(messages, criteria=criteria)
        if found is None:
            raise ProviderError("the detected reply is no longer in the thread")
        return found

    async def _deliver(self, record: _Record, tracker: MessageTracker, *, now: datetime) -> None:
        webhook_status = tracker.status.webhook
        assert webhook_status is not None and webhook_status.delivery_id is not None
        max_attempts = self._timing.webhook_max_attempts
        try:
            target = await self._webhook_target(tracker)
            if target is None:
                await self._write(
                    record,
                    status.after_delivery(
                        tracker,
                        now=now,
                        status_code=None,
                        error="no webhook is configured any more",
                        delivered=False,
                        permanent=True,
                        max_attempts=max_attempts,
                        next_attempt=None,
                    ),
                )
                return
            body = await self._payload(record, tracker)
        except SecretProblem as exc:
            logger.warning("Webhook delivery for %s blocked: %s", tracker.ref, exc.message)
            await self._write(
                record,
                status.after_delivery_blocked(
                    tracker, now=now, reason=exc.reason, message=exc.message, max_attempts=max_attempts
                ),
            )
            await self._event(tracker, warning=True, reason=exc.reason, message=exc.message)
            return
        except ProviderError as exc:
            logger.warning("Webhook delivery for %s waits: re-reading the reply failed: %s", tracker.ref, exc.message)
            await self._write(
                record,
                status.after_delivery_blocked(
                    tracker,
                    now=now,
                    reason="ReplyUnavailable",
                    message=f"Re-reading the reply from the provider failed: {exc.message}",
                    max_attempts=max_attempts,
                ),
            )
            return

        result = await webhook.deliver(
            self._http,
            url=target.url,
            body=body,
            event=webhook_status.event or webhook.REPLY_EVENT,
            delivery=webhook_status.delivery_id,
            secret=target.secret,
        )
        attempts = webhook_status.attempts + 1
        next_attempt = now + schedule.webhook_retry_delay(attempts=attempts, timing=self._timing)
        gave_up = not result.delivered and (result.permanent or attempts >= max_attempts)
        if result.delivered:
            outcome = "delivered"
        elif gave_up:
            outcome = "failed"
        else:
            outcome = "retrying"
        metrics.WEBHOOK_ATTEMPTS.labels(result=outcome).inc()
        if outcome != "retrying":
            metrics.WEBHOOK_DELIVERIES.labels(result=outcome).inc()
            metrics.WEBHOOK_ATTEMPTS_PER_DELIVERY.observe(attempts)
        if result.delivered:
            logger.info(
                "Webhook %s for %s delivered (HTTP %s, attempt %d).",
                webhook_status.delivery_id,
                tracker.ref,
                result.status_code,
                attempts,
            )
            record.body = None
        else:
            logger.warning(
                "Webhook %s for %s failed on attempt %d: %s%s",
                webhook_status.delivery_id,
                tracker.ref,
                attempts,
                result.error,
                "; giving up." if gave_up else "; will retry.",
            )
        await self._write(
            record,
            status.after_delivery(
                tracker,
                now=now,
                status_code=result.status_code,
                error=result.error,
                delivered=result.delivered,
                permanent=result.permanent,
                max_attempts=max_attempts,
                next_attempt=next_attempt,
            ),
        )
        if result.delivered:
            await self._event(
                tracker,
                warning=False,
                reason="WebhookDelivered",
                message=f"Webhook {webhook_status.delivery_id} delivered on attempt {attempts}.",
            )
        else:
            await self._event(
                tracker,
                warning=True,
                reason="WebhookFailed" if gave_up else "WebhookRetrying",
                message=f"Webhook attempt {attempts} failed: {result.error}"
                + ("; giving up." if gave_up else "; will retry."),
            )


def _invalid_tracker(body: Any) -> MessageTracker:
    """Build a tracker with a placeholder spec, so an invalid one can still get a status."""
    meta = body["metadata"]
    raw_status = dict(body.get("status") or {})
    try:
        parsed_status = MessageTrackerStatus.model_validate(raw_status)
    except pydantic.ValidationError:
        parsed_status = MessageTrackerStatus()
    return MessageTracker.model_construct(
        namespace=meta["namespace"],
        name=meta["name"],
        uid=meta["uid"],
        generation=meta.get("generation") or 1,
        created_at=utcnow(),
        spec=None,
        status=parsed_status,
    )


def _with_status(tracker: MessageTracker, previous: MessageTracker | None) -> MessageTracker:
    if previous is None:
        return tracker
    return tracker.model_copy(update={"status": previous.status})

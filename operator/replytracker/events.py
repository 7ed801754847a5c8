"""Kubernetes Events on trackers, at most one per tracker and reason per period.

A tracker whose credentials stay wrong is checked every hour for weeks. One
Warning per period reports it without flooding ``kubectl describe`` or etcd.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Literal

from replytracker.kube import KubeClient
from replytracker.models import MessageTracker

logger = logging.getLogger(__name__)

EventType = Literal["Normal", "Warning"]


class EventRecorder:
    """Posts Events; a failure to post is logged and never raised."""

    def __init__(self, kube: KubeClient, *, period_seconds: float, clock: Callable[[], float] | None = None) -> None:
        self._kube = kube
        self._period = period_seconds
        self._clock = clock or time.monotonic
        self._last: dict[tuple[str, str], float] = {}

    # NOTE: the last-posted times live in memory only, so an operator restart
    # can post a cause's Event again within the period.
    def should_post(self, uid: str, reason: str) -> bool:
        """Return True, and remember the time, unless the same uid and reason posted within the period."""
        now = self._clock()
        last = self._last.get((uid, reason))
        if last is not None and now - last < self._period:
            return False
        self._last[(uid, reason)] = now
        return True

    def forget(self, uid: str) -> None:
        for key in [key for key in self._last if key[0] == uid]:
            del self._last[key]

    async def post(self, tracker: MessageTracker, *, type: EventType, reason: str, message: str) -> None:
        if not self.should_post(tracker.uid, reason):
            return
        try:
            await self._kube.create_event(
                namespace=tracker.namespace,
                name=tracker.name,
                uid=tracker.uid,
                type=type,
                reason=reason,
                message=message,
            )
        except Exception as exc:  # noqa: BLE001  (an Event is best effort; the status has the facts)
            logger.warning("Posting Event %s on %s failed: %s", reason, tracker.ref, exc)


"""Prometheus metrics of the operator, served on a port of their own.

Counters are process-wide and start at zero on each start, as Prometheus
expects; ``rate()`` and ``increase()`` handle the resets.
"""

from __future__ import annotations

from collections import Counter as Tally
from collections.abc import Callable, Iterable, Iterator

from prometheus_client import Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import REGISTRY, Collector

CHECKS = Counter(
    "replytracker_checks_total",
    "Thread checks by result: no_reply, reply, or failed (with the condition reason).",
    ["result", "reason"],
)
CHECK_DURATION = Histogram(
    "replytracker_check_duration_seconds",
    "Time one check took, from reading credentials to the answer, polling included.",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
)
REPLIES = Counter("replytracker_replies_detected_total", "Replies detected.")
EXPIRED = Counter("replytracker_trackers_expired_total", "Trackers that reached timeoutHours without a reply.")
WEBHOOK_ATTEMPTS = Counter(
    "replytracker_webhook_attempts_total",
    "Webhook delivery attempts by result: delivered, retrying, or failed (given up).",
    ["result"],
)
WEBHOOK_DELIVERIES = Counter(
    "replytracker_webhook_deliveries_total",
    "Finished webhook deliveries by result: delivered or failed.",
    ["result"],
)
WEBHOOK_ATTEMPTS_PER_DELIVERY = Histogram(
    "replytracker_webhook_attempts_per_delivery",
    "Attempts that a finished delivery took.",
    buckets=(1, 2, 3, 5, 8, 13, 21),
)
PROVIDER_RESPONSES = Counter(
    "replytracker_provider_responses_total",
    "Provider HTTP answers by call and status code; code is 'none' when no answer came.",
    ["call", "code"],
)


class TrackerPhases(Collector):
    """Gauge of tracked objects by phase, computed at scrape time from the engine's records."""

    def __init__(self, phases: Callable[[], Iterable[str]]) -> None:
        self._phases = phases

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "replytracker_trackers", "MessageTrackers the operator watches, by status.phase.", labels=["phase"]
        )
        counts = Tally(self._phases())
        for phase in ("Pending", "Tracking", "Replied", "Expired", "Suspended", "Failed"):
            family.add_metric([phase], counts.get(phase, 0))
        yield family


def register_trackers(phases: Callable[[], Iterable[str]]) -> TrackerPhases:
    collector = TrackerPhases(phases)
    REGISTRY.register(collector)
    return collector


def unregister(collector: Collector) -> None:
    REGISTRY.unregister(collector)

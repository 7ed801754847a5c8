"""Prometheus metrics and Kubernetes Events, observed from outside the operator."""

from __future__ import annotations

import json

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from support import ACCOUNT, apply, tracker_manifest, wait_for, wait_for_status
from test_tracking import FAST, add_reply, webhook_spec

from replytracker.controlplane import free_port

pytestmark = pytest.mark.e2e


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Return every sample of the metrics endpoint, keyed by name and sorted labels."""
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def events_of(control_plane, namespace: str, name: str) -> list[dict]:
    result = control_plane.kubectl(
        "get", "events", "-n", namespace, "--field-selector", f"involvedObject.name={name}", "-o", "json"
    )
    return json.loads(result.stdout)["items"]


def test_metrics_move(control_plane, namespace, provider, receiver, webhook_secret, start_operator):
    port = free_port()
    start_operator(metrics_port=str(port), metrics_address="127.0.0.1")
    before = wait_for(lambda: _try_scrape(port), timeout=30, what="the metrics endpoint")

    provider.provider.inject_fault(status=429, retry_after=1, times=1)
    add_reply(provider)
    apply(
        control_plane,
        tracker_manifest(
            "bob", namespace, accountId=ACCOUNT, threadId="thread-1", sentAt="2020-01-01T00:00:00Z",
            frequency=FAST, webhook=webhook_spec(receiver, webhook_secret),
        ),
    )
    wait_for_status(
        control_plane, namespace, "bob", lambda s: (s.get("webhook") or {}).get("deliveredTime"), what="delivery"
    )
    after = scrape(port)

    assert value(before, "replytracker_replies_detected_total") == 0
    assert value(after, "replytracker_replies_detected_total") == 1
    assert value(after, "replytracker_checks_total", result="reply", reason="") == 1
    assert value(after, "replytracker_checks_total", result="failed", reason="RateLimited") == 1
    assert value(after, "replytracker_provider_responses_total", call="personal_messages", code="429") == 1
    assert value(after, "replytracker_provider_responses_total", call="personal_messages", code="200") == 1
    assert value(after, "replytracker_webhook_attempts_total", result="delivered") == 1
    assert value(after, "replytracker_webhook_deliveries_total", result="delivered") == 1
    assert value(after, "replytracker_webhook_attempts_per_delivery_count") == 1
    assert value(after, "replytracker_check_duration_seconds_count") == 2
    assert value(after, "replytracker_trackers", phase="Replied") == 1
    assert value(after, "replytracker_trackers", phase="Tracking") == 0


def _try_scrape(port: int):
    try:
        return scrape(port)
    except httpx.HTTPError:
        return None


def test_events_posted_once_per_cause(control_plane, namespace, provider, receiver, webhook_secret, start_operator):
    start_operator()
    control_plane.kubectl(
        "create", "secret", "generic", "wrong-creds", "-n", namespace,
        "--from-literal=apiKey=test-key", "--from-literal=apiSecret=not-the-secret",
    )
    apply(
        control_plane,
        tracker_manifest(
            "denied", namespace, accountId=ACCOUNT, threadId="thread-1", frequency=0.0003,
            credentialsSecretRef={"name": "wrong-creds"},
        ),
    )
    add_reply(provider, thread="thread-2")
    apply(
        control_plane,
        tracker_manifest(
            "answered", namespace, accountId=ACCOUNT, threadId="thread-2", sentAt="2020-01-01T00:00:00Z",
            frequency=FAST, webhook=webhook_spec(receiver, webhook_secret),
        ),
    )
    wait_for_status(
        control_plane, namespace, "denied", lambda s: s.get("consecutiveFailures", 0) >= 3, timeout=40,
        what="three failed checks",
    )
    wait_for_status(
        control_plane, namespace, "answered", lambda s: (s.get("webhook") or {}).get("deliveredTime"), what="delivery"
    )
    answered = wait_for(
        lambda: (found := events_of(control_plane, namespace, "answered")) and len(found) >= 2 and found,
        timeout=20, what="two Events on the answered tracker",
    )
    denied = events_of(control_plane, namespace, "denied")

    assert sorted(e["reason"] for e in answered) == ["ReplyDetected", "WebhookDelivered"]
    assert all(e["type"] == "Normal" for e in answered)
    assert [e["reason"] for e in denied] == ["Unauthorized"]
    assert denied[0]["type"] == "Warning"
    assert denied[0]["involvedObject"]["kind"] == "MessageTracker"
    assert "not-the-secret" not in json.dumps(denied)


def test_liveness_endpoint_reports_scheduler(control_plane, namespace, provider, start_operator):
    port = free_port()
    start_operator(liveness=f"http://127.0.0.1:{port}/healthz")
    apply(control_plane, tracker_manifest("one", namespace, accountId=ACCOUNT, threadId="t", frequency=1))
    wait_for_status(control_plane, namespace, "one", lambda s: s.get("checkCount", 0) >= 1, what="the first check")

    response = wait_for(lambda: _try_get(f"http://127.0.0.1:{port}/healthz"), timeout=30, what="the liveness endpoint")

    assert response.status_code == 200
    assert response.json() == {"scheduler": 1}


def _try_get(url: str):
    try:
        return httpx.get(url, timeout=5)
    except httpx.HTTPError:
        return None

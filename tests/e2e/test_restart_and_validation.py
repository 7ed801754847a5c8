"""Operator restarts, and manifests the API server must reject."""

from __future__ import annotations

import json

import pytest
from support import apply, condition, tracker_manifest, tracker_status, wait_for_status
from test_tracking import ACCOUNT, FAST, THREAD, add_reply, checks_of, webhook_spec

pytestmark = pytest.mark.e2e


def test_restart_keeps_schedule_and_delivers_once(
    control_plane, namespace, provider, receiver, webhook_secret, start_operator
):
    # The reply is there before the tracker, so its first check finds it.
    add_reply(provider, thread="answered")
    operator = start_operator()
    apply(control_plane, tracker_manifest("hourly", namespace, accountId=ACCOUNT, threadId=THREAD, frequency=1))
    apply(
        control_plane,
        tracker_manifest(
            "answered", namespace, accountId=ACCOUNT, threadId="answered", sentAt="2020-01-01T00:00:00Z",
            frequency=FAST, webhook=webhook_spec(receiver, webhook_secret),
        ),
    )
    before = wait_for_status(control_plane, namespace, "hourly", lambda s: s.get("checkCount") == 1, what="the first check")
    wait_for_status(
        control_plane, namespace, "answered", lambda s: (s.get("webhook") or {}).get("deliveredTime"), what="delivery"
    )

    operator.restart()
    # A tracker created after the restart is checked only once the operator has
    # listed, and so looked at, every tracker that existed before it.
    apply(control_plane, tracker_manifest("after", namespace, accountId=ACCOUNT, threadId="after", frequency=FAST))
    wait_for_status(control_plane, namespace, "after", lambda s: s.get("checkCount", 0) >= 2, timeout=40, what="checks after the restart")
    after = tracker_status(control_plane, namespace, "hourly")

    assert after["checkCount"] == 1
    assert after["nextCheckTime"] == before["nextCheckTime"]
    assert len(checks_of(provider, THREAD)) == 1
    assert len(checks_of(provider, "answered")) == 1
    assert len(receiver.deliveries) == 1


def test_restart_during_delivery_keeps_delivery_id(
    control_plane, namespace, provider, receiver, webhook_secret, start_operator
):
    receiver.respond_with(500)
    add_reply(provider)
    # A long retry delay keeps the second attempt from running before the crash.
    first = start_operator(webhook_retry_base_seconds="600", webhook_retry_max_seconds="600")
    apply(
        control_plane,
        tracker_manifest(
            "crash", namespace, accountId=ACCOUNT, threadId=THREAD, sentAt="2020-01-01T00:00:00Z",
            frequency=FAST, webhook=webhook_spec(receiver, webhook_secret),
        ),
    )
    failed = wait_for_status(
        control_plane, namespace, "crash", lambda s: (s.get("webhook") or {}).get("attempts") == 1,
        what="a first failed delivery attempt",
    )
    assert condition(failed, "WebhookDelivered")["reason"] == "Retrying"
    first.stop(kill=True)

    start_operator()
    status = wait_for_status(
        control_plane, namespace, "crash", lambda s: (s.get("webhook") or {}).get("deliveredTime"),
        what="delivery by the restarted operator",
    )
    deliveries = receiver.deliveries

    assert status["webhook"]["attempts"] == 2
    assert len(deliveries) == 2
    assert deliveries[0].delivery_id == deliveries[1].delivery_id == status["webhook"]["deliveryId"]
    assert deliveries[0].body == deliveries[1].body, "the restarted operator must send the same bytes"
    assert all(d.signature_valid for d in deliveries)


def rejected(control_plane, manifest) -> str:
    result = apply(control_plane, manifest, check=False)
    assert result.returncode != 0, f"the API server accepted an invalid manifest: {result.stdout}"
    return result.stderr


def test_missing_account_id_rejected(control_plane, crd, namespace):
    message = rejected(control_plane, tracker_manifest("bad", namespace, threadId=THREAD))
    assert "spec.accountId" in message
    assert "Required value" in message


def test_zero_frequency_rejected(control_plane, crd, namespace):
    message = rejected(control_plane, tracker_manifest("bad", namespace, accountId=ACCOUNT, threadId=THREAD, frequency=0))
    assert "spec.frequency" in message
    assert "greater than 0" in message


def test_bad_webhook_url_rejected(control_plane, crd, namespace):
    manifest = tracker_manifest(
        "bad", namespace, accountId=ACCOUNT, threadId=THREAD, webhook={"url": "ftp://example.invalid/hook"}
    )
    message = rejected(control_plane, manifest)
    assert "spec.webhook.url" in message
    assert "http or https" in message


def test_thread_id_is_immutable(control_plane, crd, namespace):
    apply(control_plane, tracker_manifest("fixed", namespace, accountId=ACCOUNT, threadId=THREAD, suspend=True))
    message = rejected(control_plane, tracker_manifest("fixed", namespace, accountId=ACCOUNT, threadId="other", suspend=True))
    assert "spec.threadId" in message
    assert "immutable" in message


def test_defaults_and_explain(control_plane, crd, namespace):
    apply(control_plane, tracker_manifest("plain", namespace, accountId=ACCOUNT, threadId=THREAD, suspend=True))
    stored = json.loads(control_plane.kubectl("get", "mt", "plain", "-n", namespace, "-o", "json").stdout)
    explain = control_plane.kubectl("explain", "messagetracker.spec").stdout
    columns = control_plane.kubectl("get", "mt", "-n", namespace).stdout.splitlines()[0].split()

    assert stored["spec"]["frequency"] == 1
    assert "frequency" in explain
    assert "Hours between checks" in explain
    assert columns[:4] == ["NAME", "ACCOUNT", "THREAD", "FREQUENCY"]
    assert "PHASE" in columns

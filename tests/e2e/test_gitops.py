"""How GitOps tools see trackers on a real API server: kubectl wait, kstatus, Argo CD's health check, field selectors.

kstatus verdicts come from the Go command in tools/kstatus (cli-utils
v0.37.2), run on trackers fetched from the test API server. Argo CD verdicts
come from docs/argocd/health.lua, run with the Lua 5.1 harness of
tests/unit/test_argocd_health.py.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from support import ACCOUNT, apply, condition, get_tracker, tracker_manifest, wait_for_status

pytestmark = pytest.mark.e2e

REPO_ROOT = Path(__file__).resolve().parents[2]
KSTATUS_BUILD = REPO_ROOT / "tools" / "kstatus" / "build.sh"
CONFIGMAP_PATCH = REPO_ROOT / "docs" / "argocd" / "argocd-cm-patch.yaml"
HEALTH_SCRIPT = REPO_ROOT / "docs" / "argocd" / "health.lua"
CONFIGMAP_KEY = "resource.customizations.health.replytracker.dev_MessageTracker"

THREAD = "thread-1"
OTHER_ACCOUNT = "acc-2"
# 0.001 hours is 3.6 seconds, so a tracker checks several times within a test.
FAST = 0.001


# --- kstatus and the Argo CD health check ------------------------------------------


@pytest.fixture(scope="module")
def kstatus_binary() -> Path:
    """Path of the kstatus command, built by tools/kstatus/build.sh on the first run on a machine."""
    if shutil.which("go") is None:
        pytest.skip("the go command is missing, so tools/kstatus cannot be built; install Go 1.24 or newer")
    result = subprocess.run(["bash", str(KSTATUS_BUILD)], capture_output=True, text=True, timeout=600, check=False)
    assert result.returncode == 0, f"{KSTATUS_BUILD} failed:\n{result.stderr}"
    return Path(result.stdout.strip().splitlines()[-1])


def kstatus(binary: Path, obj: dict[str, Any]) -> dict[str, Any]:
    """Return kstatus's verdict on ``obj``: status, message and the conditions it would add."""
    result = subprocess.run([str(binary)], input=json.dumps(obj), capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode == 0, f"kstatus failed: {result.stderr}"
    return json.loads(result.stdout)


@pytest.fixture(scope="module")
def argocd_health() -> ModuleType:
    """The unit tests' module, whose ``run_health_check`` runs health.lua as Argo CD does."""
    path = REPO_ROOT / "tests" / "unit" / "test_argocd_health.py"
    spec = importlib.util.spec_from_file_location("argocd_health_harness", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    # dataclasses look the module up in sys.modules while the module runs.
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def kubectl_wait(control_plane, namespace: str, name: str, *, condition_spec: str, timeout: str = "30s"):
    return control_plane.kubectl(
        "wait", f"--for=condition={condition_spec}", f"mt/{name}", "-n", namespace, f"--timeout={timeout}", check=False
    )


# --- kubectl wait ------------------------------------------------------------------


def test_wait_ready_succeeds_for_healthy_tracker(
    control_plane, namespace, provider, start_operator, kstatus_binary, argocd_health
):
    start_operator()
    apply(control_plane, tracker_manifest("healthy", namespace, accountId=ACCOUNT, threadId=THREAD, frequency=FAST))

    waited = kubectl_wait(control_plane, namespace, "healthy", condition_spec="Ready")
    tracker = get_tracker(control_plane, namespace, "healthy")
    verdict = kstatus(kstatus_binary, tracker)
    health = argocd_health.run_health_check(tracker)

    assert waited.returncode == 0, waited.stderr
    assert "condition met" in waited.stdout
    assert tracker["status"]["phase"] == "Tracking"
    assert condition(tracker["status"], "Ready")["reason"] == "CheckSucceeded"
    assert verdict["status"] == "Current"
    assert verdict["message"] == "Resource is Ready"
    assert health.status == "Healthy"


def test_bad_credentials_make_ready_false(
    control_plane, namespace, provider, start_operator, kstatus_binary, argocd_health
):
    start_operator(api_secret="wrong-secret")
    apply(control_plane, tracker_manifest("denied", namespace, accountId=ACCOUNT, threadId=THREAD, frequency=FAST))

    waited_false = kubectl_wait(control_plane, namespace, "denied", condition_spec="Ready=False")
    # Ready never turns True with wrong credentials, so this wait must end in its timeout.
    waited_true = kubectl_wait(control_plane, namespace, "denied", condition_spec="Ready", timeout="2s")
    tracker = get_tracker(control_plane, namespace, "denied")
    ready = condition(tracker["status"], "Ready")
    verdict = kstatus(kstatus_binary, tracker)
    health = argocd_health.run_health_check(tracker)

    assert waited_false.returncode == 0, waited_false.stderr
    assert waited_true.returncode != 0
    assert "timed out" in waited_true.stderr
    assert ready["status"] == "False"
    assert ready["reason"] == "Unauthorized"
    # kstatus reads Ready=False on a custom resource as InProgress, never Failed:
    # only a Stalled=True condition makes it Failed.
    assert verdict["status"] == "InProgress"
    assert verdict["message"] == ready["message"]
    assert verdict["conditions"] == [
        {"type": "Reconciling", "status": "True", "reason": "Unauthorized", "message": ready["message"]}
    ]
    assert health.status == "Degraded"
    assert health.message == f"Unauthorized: {ready['message']}"


# --- kstatus over a tracker's life ----------------------------------------------------


def test_kstatus_first_check_and_generation_lag(
    control_plane, namespace, provider, start_operator, kstatus_binary, argocd_health
):
    apply(control_plane, tracker_manifest("lifecycle", namespace, accountId=ACCOUNT, threadId=THREAD, frequency=1))
    unchecked = get_tracker(control_plane, namespace, "lifecycle")
    unchecked_verdict = kstatus(kstatus_binary, unchecked)
    # No operator runs, so Ready cannot appear and this wait must end in its timeout.
    unchecked_wait = kubectl_wait(control_plane, namespace, "lifecycle", condition_spec="Ready", timeout="1s")

    assert "status" not in unchecked, "no operator runs yet, so nothing may have written a status"
    assert unchecked_wait.returncode != 0
    assert "timed out" in unchecked_wait.stderr
    # kstatus has no rule that catches a custom resource before its controller's first
    # status write: without conditions or observedGeneration it assumes Current.
    assert unchecked_verdict["status"] == "Current"
    assert unchecked_verdict["message"] == "Resource is current"
    assert argocd_health.run_health_check(unchecked).status == "Progressing"

    operator = start_operator()
    waited = kubectl_wait(control_plane, namespace, "lifecycle", condition_spec="Ready")
    assert waited.returncode == 0, waited.stderr
    assert kstatus(kstatus_binary, get_tracker(control_plane, namespace, "lifecycle"))["status"] == "Current"

    # With the operator stopped, a spec change leaves status.observedGeneration behind.
    operator.stop()
    control_plane.kubectl("patch", "mt", "lifecycle", "-n", namespace, "--type=merge", "-p", '{"spec":{"frequency":2}}')
    lagging = get_tracker(control_plane, namespace, "lifecycle")
    lagging_verdict = kstatus(kstatus_binary, lagging)
    lagging_health = argocd_health.run_health_check(lagging)
    # kubectl wait skips a condition whose observedGeneration is older than metadata.generation.
    lagging_wait = kubectl_wait(control_plane, namespace, "lifecycle", condition_spec="Ready", timeout="1s")

    assert lagging["metadata"]["generation"] == 2
    assert lagging["status"]["observedGeneration"] == 1
    assert lagging_verdict["status"] == "InProgress"
    assert lagging_verdict["message"] == "MessageTracker generation is 2, but latest observed generation is 1"
    assert lagging_verdict["conditions"][0]["reason"] == "LatestGenerationNotObserved"
    assert lagging_health.status == "Progressing"
    assert lagging_health.message == "Waiting for the operator to act on generation 2 (observed: 1)."
    assert condition(lagging["status"], "Ready")["status"] == "True"
    assert lagging_wait.returncode != 0
    assert "timed out" in lagging_wait.stderr

    start_operator()
    caught_up = wait_for_status(
        control_plane, namespace, "lifecycle", lambda s: s.get("observedGeneration") == 2,
        what="observedGeneration 2 after the restart",
    )
    current = get_tracker(control_plane, namespace, "lifecycle")
    caught_up_wait = kubectl_wait(control_plane, namespace, "lifecycle", condition_spec="Ready")

    assert condition(caught_up, "Ready")["status"] == "True"
    assert caught_up_wait.returncode == 0, caught_up_wait.stderr
    assert kstatus(kstatus_binary, current)["status"] == "Current"
    assert argocd_health.run_health_check(current).status == "Healthy"


def test_kstatus_replied_tracker_is_current(
    control_plane, namespace, provider, start_operator, kstatus_binary, argocd_health
):
    provider.provider.add_message(
        ACCOUNT,
        THREAD,
        {
            "message_id": "reply-1",
            "sender_profile_id": "bob",
            "sender_name": "Bob Example",
            "is_sender": False,
            "text": "Sounds good.",
            "created_at": int(time.time() * 1000),
        },
    )
    start_operator()
    apply(
        control_plane,
        tracker_manifest(
            "answered", namespace, accountId=ACCOUNT, threadId=THREAD, sentAt="2020-01-01T00:00:00Z", frequency=FAST
        ),
    )

    waited = kubectl_wait(control_plane, namespace, "answered", condition_spec="Replied")
    waited_ready = kubectl_wait(control_plane, namespace, "answered", condition_spec="Ready")
    tracker = get_tracker(control_plane, namespace, "answered")
    verdict = kstatus(kstatus_binary, tracker)
    health = argocd_health.run_health_check(tracker)

    assert waited.returncode == 0, waited.stderr
    assert waited_ready.returncode == 0, waited_ready.stderr
    assert tracker["status"]["phase"] == "Replied"
    assert condition(tracker["status"], "Ready")["reason"] == "Completed"
    assert verdict["status"] == "Current"
    assert health.status == "Healthy"
    assert health.message.startswith("ReplyDetected: Reply from Bob Example")


def test_kstatus_suspended_tracker_is_current(
    control_plane, namespace, provider, start_operator, kstatus_binary, argocd_health
):
    start_operator()
    apply(control_plane, tracker_manifest("paused", namespace, accountId=ACCOUNT, threadId=THREAD, suspend=True))

    status = wait_for_status(
        control_plane, namespace, "paused", lambda s: s.get("phase") == "Suspended", what="phase Suspended"
    )
    waited = kubectl_wait(control_plane, namespace, "paused", condition_spec="Ready")
    tracker = get_tracker(control_plane, namespace, "paused")
    verdict = kstatus(kstatus_binary, tracker)
    health = argocd_health.run_health_check(tracker)

    assert condition(status, "Ready")["status"] == "True"
    assert waited.returncode == 0, waited.stderr
    assert verdict["status"] == "Current"
    assert health.status == "Suspended"


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("expired", "Current"),
        ("expired_webhook_failed", "Current"),
        ("replied_webhook_failed", "Current"),
        ("rate_limited", "InProgress"),
        ("invalid_spec", "InProgress"),
    ],
)
def test_kstatus_on_operator_written_statuses(case, expected, kstatus_binary, argocd_health):
    """States that are slow or impossible to reach through the API server, built with the operator's status functions."""
    harness = argocd_health
    builders = {
        "expired": harness.expired,
        "expired_webhook_failed": lambda: harness.delivery(harness.expired(), code=404, delivered=False, permanent=True),
        "replied_webhook_failed": lambda: harness.delivery(
            harness.replied(webhook_configured=True), code=410, delivered=False, permanent=True
        ),
        "rate_limited": lambda: harness.failed_check("RateLimited", "The provider answered HTTP 429."),
        "invalid_spec": lambda: harness.st.after_invalid_spec(harness.tracker(), now=harness.T0, message="bad spec"),
    }

    verdict = kstatus(kstatus_binary, harness.as_object(builders[case]()))

    assert verdict["status"] == expected


# --- field selector ------------------------------------------------------------------


def test_field_selector_lists_one_accounts_trackers(control_plane, namespace):
    # Suspended trackers with no operator running: only the stored spec matters here.
    for name, account in (("alice", ACCOUNT), ("bob", ACCOUNT), ("carol", OTHER_ACCOUNT)):
        apply(control_plane, tracker_manifest(name, namespace, accountId=account, threadId=f"t-{name}", suspend=True))

    first = control_plane.kubectl("get", "mt", "-n", namespace, "--field-selector", f"spec.accountId={ACCOUNT}", "-o", "name")
    second = control_plane.kubectl(
        "get", "mt", "-n", namespace, "--field-selector", f"spec.accountId={OTHER_ACCOUNT}", "-o", "name"
    )
    unknown = control_plane.kubectl("get", "mt", "-n", namespace, "--field-selector", "spec.accountId=acc-none", "-o", "name")
    table = control_plane.kubectl("get", "mt", "-n", namespace, "--field-selector", f"spec.accountId={ACCOUNT}")

    assert sorted(first.stdout.split()) == [
        "messagetracker.replytracker.dev/alice",
        "messagetracker.replytracker.dev/bob",
    ]
    assert second.stdout.split() == ["messagetracker.replytracker.dev/carol"]
    assert unknown.stdout.strip() == ""
    assert table.stdout.split()[:3] == ["NAME", "ACCOUNT", "THREAD"]
    assert "PHASE" in table.stdout.splitlines()[0]


def test_field_selector_rejects_other_fields(control_plane, namespace):
    result = control_plane.kubectl(
        "get", "mt", "-n", namespace, "--field-selector", "spec.threadId=thread-1", check=False
    )

    assert result.returncode != 0
    assert "field label not supported" in result.stderr


# --- the argocd-cm patch ---------------------------------------------------------------


def test_argocd_configmap_patch_applies(control_plane, namespace):
    control_plane.kubectl("create", "configmap", "argocd-cm", "-n", namespace, "--from-literal=url=https://argocd.example")

    control_plane.kubectl("patch", "configmap", "argocd-cm", "-n", namespace, "--patch-file", str(CONFIGMAP_PATCH))
    data = json.loads(control_plane.kubectl("get", "configmap", "argocd-cm", "-n", namespace, "-o", "json").stdout)["data"]

    assert data[CONFIGMAP_KEY] == HEALTH_SCRIPT.read_text()
    assert data["url"] == "https://argocd.example", "the patch must keep the ConfigMap's other keys"

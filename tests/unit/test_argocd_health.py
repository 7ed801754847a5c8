"""The Argo CD health check in docs/argocd/health.lua, run in Lua 5.1 the way Argo CD runs it.

Argo CD (util/lua/lua.go) evaluates health scripts with gopher-lua, a Lua
5.1 implementation. For scripts from argocd-cm it opens only the package,
base and table libraries and an ``os`` table with ``time`` and ``date``. It
passes the object as the global ``obj``, decoded from JSON: objects become
tables keyed by string, arrays become tables indexed from 1, numbers become
Lua numbers and null becomes nil. It reads the returned table's ``status``
and ``message`` and turns a status outside its list into Unknown.
``run_health_check`` reproduces those steps with lupa's Lua 5.1 runtime.

The sample trackers are built with the operator's own status functions, so
they carry exactly the phases, reasons and messages that the operator writes.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import lupa.lua51
import pytest
import yaml

from replytracker import status as st
from replytracker.messages import Message
from replytracker.models import MessageTracker, MessageTrackerSpec, MessageTrackerStatus

REPO_ROOT = Path(__file__).resolve().parents[2]
HEALTH_SCRIPT = REPO_ROOT / "docs" / "argocd" / "health.lua"
CONFIGMAP_PATCH = REPO_ROOT / "docs" / "argocd" / "argocd-cm-patch.yaml"
CONFIGMAP_KEY = "resource.customizations.health.replytracker.dev_MessageTracker"

# Health statuses that Argo CD accepts from a script (gitops-engine's HealthStatusCode).
ARGOCD_HEALTH_STATUSES = {"Healthy", "Progressing", "Degraded", "Suspended", "Missing", "Unknown"}
ARGOCD_INVALID_STATUS_MESSAGE = "Lua returned an invalid health status"

# Globals that Argo CD's Lua state lacks for argocd-cm scripts: libraries it does not
# open, and lupa's bridge to Python.
_GLOBALS_ABSENT_IN_ARGOCD = ("string", "math", "io", "debug", "coroutine", "python")

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=timezone.utc)


# --- Argo CD's Lua environment ------------------------------------------------


def _to_lua(runtime: lupa.lua51.LuaRuntime, value: Any) -> Any:
    """Convert a decoded JSON value to Lua values, as Argo CD's decodeValue does."""
    if isinstance(value, dict):
        table = runtime.table()
        for key, item in value.items():
            if item is not None:
                table[key] = _to_lua(runtime, item)
        return table
    if isinstance(value, list):
        table = runtime.table()
        for index, item in enumerate(value, start=1):
            table[index] = _to_lua(runtime, item)
        return table
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, (int, float)):
        # Lua 5.1 has one number type, a double, as gopher-lua's LNumber is.
        return float(value)
    raise TypeError(f"{type(value).__name__} is not a JSON value: {value!r}")


def _argocd_runtime() -> lupa.lua51.LuaRuntime:
    """Return a Lua 5.1 state with the libraries that Argo CD opens for argocd-cm scripts."""
    runtime = lupa.lua51.LuaRuntime(register_eval=False, register_builtins=False)
    # Without Lua's string library, strings have no methods (("x"):upper() fails).
    runtime.execute('debug.setmetatable("", nil)')
    runtime.execute("os = { time = os.time, date = os.date }")
    lua_globals = runtime.globals()
    for name in _GLOBALS_ABSENT_IN_ARGOCD:
        lua_globals[name] = None
    return runtime


def run_lua(script: str, obj: dict[str, Any]) -> Any:
    runtime = _argocd_runtime()
    runtime.globals()["obj"] = _to_lua(runtime, obj)
    return runtime.execute(script)


@dataclass(frozen=True)
class Health:
    status: str
    message: str


def run_health_check(obj: dict[str, Any]) -> Health:
    """Run docs/argocd/health.lua on ``obj`` and read the result as Argo CD does."""
    returned = run_lua(HEALTH_SCRIPT.read_text(), obj)
    assert lupa.lua51.lua_type(returned) == "table", f"the script returned {returned!r}, not a table"
    status = returned["status"]
    message = returned["message"] or ""
    if status not in ARGOCD_HEALTH_STATUSES:
        return Health("Unknown", ARGOCD_INVALID_STATUS_MESSAGE)
    return Health(status, message)


# --- sample trackers ------------------------------------------------------------------


def tracker(*, generation: int = 1, status: MessageTrackerStatus | None = None) -> MessageTracker:
    return MessageTracker(
        namespace="sales",
        name="bob",
        uid="0b6d4f3e-uid",
        generation=generation,
        created_at=T0,
        spec=MessageTrackerSpec(account_id="acc-1", thread_id="thread-1", timeout_hours=2),
        status=status or MessageTrackerStatus(),
    )


def as_object(status: MessageTrackerStatus | None, *, generation: int = 1) -> dict[str, Any]:
    """Return the tracker as the API server serves it, with ``status`` as the operator wrote it.

    The operator writes a merge patch in which unset fields are null, so the
    stored status has no null fields: ``to_wire`` drops them too.
    """
    body: dict[str, Any] = {
        "apiVersion": "replytracker.dev/v1alpha1",
        "kind": "MessageTracker",
        "metadata": {
            "name": "bob",
            "namespace": "sales",
            "uid": "0b6d4f3e-uid",
            "generation": generation,
            "creationTimestamp": "2026-01-01T12:00:00Z",
        },
        "spec": {"accountId": "acc-1", "threadId": "thread-1", "frequency": 1.0, "suspend": False, "timeoutHours": 2},
    }
    if status is not None:
        body["status"] = status.to_wire()
    return body


def described(status: MessageTrackerStatus, condition_type: str) -> str:
    condition = st.get_condition(status, condition_type)
    assert condition is not None, f"no {condition_type} condition"
    return f"{condition.reason}: {condition.message}"


def tracking() -> MessageTrackerStatus:
    return st.after_no_reply(tracker(), now=T0, interval=timedelta(hours=1), clamped=False)


def failed_check(reason: str, message: str) -> MessageTrackerStatus:
    return st.after_failure(
        tracker(status=tracking()), now=T0 + timedelta(hours=1), reason=reason, message=message,
        next_check=T0 + timedelta(hours=2),
    )


def replied(*, webhook_configured: bool) -> MessageTrackerStatus:
    reply = Message(
        position=1, message_id="reply-1", sender_profile_id="bob", sender_name="Bob Example",
        from_owner=False, text="Thanks", sent_at=T0 + timedelta(minutes=30),
    )
    return st.after_reply(
        tracker(status=tracking()), reply=reply, now=T0 + timedelta(hours=1), delivery_id="d-1",
        webhook_configured=webhook_configured,
    )


def expired() -> MessageTrackerStatus:
    return st.after_expiry(tracker(status=tracking()), now=T0 + timedelta(hours=2), delivery_id="d-1", webhook_configured=True)


def delivery(previous: MessageTrackerStatus, *, code: int, delivered: bool, permanent: bool) -> MessageTrackerStatus:
    return st.after_delivery(
        tracker(status=previous), now=T0 + timedelta(hours=3), status_code=code,
        error=None if delivered else f"HTTP {code}", delivered=delivered, permanent=permanent,
        max_attempts=10, next_attempt=None if delivered or permanent else T0 + timedelta(hours=4),
    )


# --- the cases ----------------------------------------------------------------


def test_new_tracker_without_status_is_progressing():
    health = run_health_check(as_object(None))

    assert health.status == "Progressing"
    assert health.message == "Waiting for the operator's first check."


def test_empty_status_is_progressing():
    obj = as_object(None)
    obj["status"] = {}

    assert run_health_check(obj).status == "Progressing"


def test_tracking_with_successful_check_is_healthy():
    status = tracking()

    health = run_health_check(as_object(status))

    assert health.status == "Healthy"
    assert health.message == described(status, "Ready")
    assert health.message.startswith("CheckSucceeded: Last check found no reply")


def test_rescheduled_tracker_is_healthy():
    status = st.after_reschedule(
        tracker(status=tracking(), generation=2), now=T0, next_check=T0 + timedelta(hours=2),
        interval=timedelta(hours=2), clamped=False,
    )

    health = run_health_check(as_object(status, generation=2))

    assert health.status == "Healthy"
    assert health.message.startswith("Scheduled: Next check at")


def test_lagging_observed_generation_is_progressing():
    health = run_health_check(as_object(tracking(), generation=2))

    assert health.status == "Progressing"
    assert health.message == "Waiting for the operator to act on generation 2 (observed: 1)."


def test_missing_observed_generation_is_progressing():
    obj = as_object(tracking())
    del obj["status"]["observedGeneration"]

    health = run_health_check(obj)

    assert health.status == "Progressing"
    assert health.message == "Waiting for the operator to act on generation 1 (observed: none)."


@pytest.mark.parametrize(
    ("reason", "message"),
    [
        ("Unauthorized", "The provider rejected the credentials (HTTP 401)."),
        ("RateLimited", "The provider answered HTTP 429."),
        ("ProviderError", "The provider answered HTTP 500."),
        ("SecretNotFound", "Secret sales/welink not found."),
        ("AccountNotFound", "Account acc-1 not found."),
    ],
)
def test_ready_false_is_degraded_with_reason(reason, message):
    status = failed_check(reason, message)

    health = run_health_check(as_object(status))

    assert health.status == "Degraded"
    assert health.message == described(status, "Ready")
    assert health.message.startswith(f"{reason}: {message} Next check at ")


def test_invalid_spec_is_degraded():
    status = st.after_invalid_spec(tracker(), now=T0, message="spec.frequency: Input should be greater than 0")

    health = run_health_check(as_object(status))

    assert status.phase.value == "Failed"
    assert health.status == "Degraded"
    assert health.message == "InvalidSpec: spec.frequency: Input should be greater than 0"


def test_failed_phase_with_newer_spec_is_progressing():
    status = st.after_invalid_spec(tracker(), now=T0, message="bad")

    assert run_health_check(as_object(status, generation=2)).status == "Progressing"


def test_suspended_tracker_is_suspended():
    status = st.after_suspend(tracker(status=tracking(), generation=2), now=T0)

    health = run_health_check(as_object(status, generation=2))

    assert health.status == "Suspended"
    assert health.message == described(status, "Ready")
    assert "spec.suspend" in health.message


def test_reply_without_webhook_is_healthy():
    status = replied(webhook_configured=False)

    health = run_health_check(as_object(status))

    assert health.status == "Healthy"
    assert health.message == described(status, "Replied")
    assert health.message.startswith("ReplyDetected: Reply from Bob Example")


def test_pending_webhook_reply_healthy():
    status = replied(webhook_configured=True)

    health = run_health_check(as_object(status))

    assert health.status == "Healthy"
    assert health.message.startswith("ReplyDetected: Reply from Bob Example")
    assert health.message.endswith(" Webhook delivery Pending: Delivery not attempted yet.")


def test_reply_with_delivered_webhook_is_healthy():
    status = delivery(replied(webhook_configured=True), code=200, delivered=True, permanent=False)

    health = run_health_check(as_object(status))

    assert health.status == "Healthy"
    assert health.message == described(status, "Replied")


def test_reply_with_retrying_webhook_is_healthy():
    status = delivery(replied(webhook_configured=True), code=503, delivered=False, permanent=False)

    health = run_health_check(as_object(status))

    assert health.status == "Healthy"
    assert "Webhook delivery Retrying: Attempt 1 failed: HTTP 503." in health.message


def test_reply_with_blocked_webhook_is_healthy():
    status = st.after_delivery_blocked(
        tracker(status=replied(webhook_configured=True)), now=T0 + timedelta(hours=2),
        reason="SecretNotFound", message="Secret sales/webhook-signing not found.", max_attempts=10,
    )

    health = run_health_check(as_object(status))

    assert health.status == "Healthy"
    assert health.message.endswith(" Webhook delivery SecretNotFound: Secret sales/webhook-signing not found.")


def test_reply_with_failed_webhook_is_degraded():
    status = delivery(replied(webhook_configured=True), code=410, delivered=False, permanent=True)

    health = run_health_check(as_object(status))

    assert health.status == "Degraded"
    assert health.message == "Replied; webhook delivery failed. Gave up after a permanent error: HTTP 410"


def test_expired_tracker_is_healthy():
    status = expired()

    health = run_health_check(as_object(status))

    assert health.status == "Healthy"
    assert health.message.startswith("Expired: No reply within spec.timeoutHours=2; tracking stopped.")


def test_expired_tracker_with_failed_webhook_is_degraded():
    status = delivery(expired(), code=404, delivered=False, permanent=True)

    health = run_health_check(as_object(status))

    assert health.status == "Degraded"
    assert health.message.startswith("Expired; webhook delivery failed. ")


@pytest.mark.parametrize("finished", ["replied", "expired"])
def test_finished_tracker_spec_edit(finished):
    status = replied(webhook_configured=False) if finished == "replied" else expired()
    acknowledged = st.after_acknowledge(tracker(status=status, generation=3))

    assert run_health_check(as_object(status, generation=3)).status == "Progressing"
    assert run_health_check(as_object(acknowledged, generation=3)).status == "Healthy"


def test_tracking_without_ready_true_is_progressing():
    obj = as_object(tracking())
    obj["status"]["conditions"][0]["status"] = "Unknown"

    assert run_health_check(obj).status == "Progressing"


def test_unrecognized_phase_is_unknown():
    obj = as_object(tracking())
    obj["status"]["phase"] = "Archived"

    health = run_health_check(obj)

    assert health.status == "Unknown"
    assert health.message == "Unrecognized status.phase Archived."


# --- the harness and the ConfigMap patch ---------------------------------------------


def test_harness_lacks_string_library():
    assert run_lua("return string == nil and math == nil and io == nil", {}) is True
    with pytest.raises(lupa.lua51.LuaError):
        run_lua('return ("x"):upper()', {})


def test_harness_passes_lists_from_index_one():
    obj = {"items": [{"name": "first"}, {"name": "second"}]}

    assert run_lua("return obj.items[1].name .. ',' .. obj.items[2].name .. ',' .. #obj.items", obj) == "first,second,2"


def test_configmap_patch_embeds_the_script():
    patch = yaml.safe_load(CONFIGMAP_PATCH.read_text())

    assert patch["kind"] == "ConfigMap"
    assert patch["metadata"]["name"] == "argocd-cm"
    assert patch["data"][CONFIGMAP_KEY] == HEALTH_SCRIPT.read_text()

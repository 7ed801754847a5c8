"""The MessageTracker resource: spec and status as pydantic models.

These models are the single source of the CRD schema (see ``crd.py``) and
the operator parses every object through them. Field names are camelCase on
the wire, as Kubernetes APIs are.
"""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

GROUP = "replytracker.dev"
VERSION = "v1alpha1"
KIND = "MessageTracker"
PLURAL = "messagetrackers"
SINGULAR = "messagetracker"
SHORT_NAMES = ["mt"]


class _Model(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="ignore",
        use_enum_values=False,
    )

    def to_wire(self) -> dict[str, Any]:
        """Dump with camelCase keys, dropping unset optional fields."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


Name = Annotated[str, Field(min_length=1, max_length=253)]


class SecretKeyRef(_Model):
    """A key of a Secret in the tracker's own namespace."""

    name: Name = Field(description="Name of a Secret in the tracker's namespace.")
    key: Annotated[str, Field(min_length=1, max_length=253)] = Field(
        description="Key within the Secret whose value is the webhook signing key."
    )


class WebhookSpec(_Model):
    """Webhook that receives the reply notification."""

    url: Annotated[str, Field(min_length=1, max_length=2048)] = Field(
        description="http or https URL that receives a JSON POST when a reply is detected "
        "or the tracker expires.",
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "isURL(self) && url(self).getScheme() in ['http', 'https']",
                    "message": "must be an absolute http or https URL",
                }
            ]
        },
    )
    secret_ref: SecretKeyRef | None = Field(
        default=None,
        description="Secret key holding the HMAC-SHA256 signing key; when set, each "
        "delivery carries an X-Replytracker-Signature header.",
    )


class SecretRef(_Model):
    """A Secret in the tracker's own namespace."""

    name: Name = Field(
        description="Name of a Secret in the tracker's namespace with the keys apiKey and apiSecret."
    )


def _immutable(field: str) -> dict[str, Any]:
    return {
        "x-kubernetes-validations": [
            {"rule": "self == oldSelf", "message": f"{field} is immutable"}
        ]
    }


class MessageTrackerSpec(_Model):
    """Thread to watch, check schedule and notification target."""

    account_id: Annotated[str, Field(min_length=1, max_length=256)] = Field(
        description="Provider account that sent the tracked message. Immutable.",
        json_schema_extra=_immutable("accountId"),
    )
    thread_id: Annotated[str, Field(min_length=1, max_length=512)] = Field(
        description="Conversation (thread) to watch for a reply. Immutable.",
        json_schema_extra=_immutable("threadId"),
    )
    profile_id: Annotated[str, Field(min_length=1, max_length=256)] | None = Field(
        default=None,
        description="Recipient's profile id; a message from this profile counts as a reply.",
    )
    message_id: Annotated[str, Field(min_length=1, max_length=512)] | None = Field(
        default=None,
        description="The tracked message; only messages after it in the thread count as replies.",
    )
    sent_at: datetime | None = Field(
        default=None,
        description="When the tracked message was sent (RFC 3339); used when messageId is "
        "not given or not found. Without either, messages after the tracker's creation count.",
    )
    frequency: Annotated[float, Field(gt=0, le=8760)] = Field(
        default=1.0,
        description="Hours between checks, default 1; may be fractional. The operator never checks "
        "more often than its minimum interval (REPLYTRACKER_MIN_FREQUENCY_SECONDS, default 60 s).",
    )
    suspend: bool = Field(
        default=False,
        description="Stop checking without deleting the tracker; set back to false to resume on schedule.",
    )
    timeout_hours: Annotated[float, Field(gt=0, le=87600)] | None = Field(
        default=None,
        description="Stop tracking after this many hours without a reply (phase Expired). "
        "Unset means track until a reply arrives.",
    )
    webhook: WebhookSpec | None = Field(
        default=None,
        description="Webhook to call on a reply; defaults to the operator-wide REPLYTRACKER_WEBHOOK_URL.",
    )
    credentials_secret_ref: SecretRef | None = Field(
        default=None,
        description="Secret with the provider credentials (keys apiKey and apiSecret); "
        "defaults to the operator-wide credentials.",
    )


class Phase(str, enum.Enum):
    TRACKING = "Tracking"
    REPLIED = "Replied"
    EXPIRED = "Expired"
    SUSPENDED = "Suspended"
    FAILED = "Failed"


class ConditionStatus(str, enum.Enum):
    TRUE = "True"
    FALSE = "False"
    UNKNOWN = "Unknown"


class Condition(_Model):
    """A condition, following the Kubernetes API conventions."""

    type: Annotated[str, Field(min_length=1, max_length=316)] = Field(
        description="Condition type: Ready, Replied or WebhookDelivered."
    )
    status: ConditionStatus = Field(description="True, False or Unknown.")
    observed_generation: Annotated[int, Field(ge=0)] | None = Field(
        default=None, description="metadata.generation the condition was set for."
    )
    last_transition_time: datetime = Field(
        description="When the condition last changed status."
    )
    reason: Annotated[str, Field(min_length=1, max_length=1024)] = Field(
        description="CamelCase reason for the condition's last transition."
    )
    message: Annotated[str, Field(max_length=32768)] = Field(
        default="", description="Human-readable details."
    )


class ReplyStatus(_Model):
    """The reply that was detected; the message text is never stored."""

    message_id: str | None = Field(default=None, description="Provider id of the reply message.")
    sender_profile_id: str | None = Field(default=None, description="Profile id of the sender.")
    sender_name: str | None = Field(default=None, description="Display name of the sender.")
    sent_at: datetime | None = Field(default=None, description="When the reply was sent.")


class WebhookStatus(_Model):
    """Progress of the webhook delivery for the reply or expiry."""

    delivery_id: str | None = Field(
        default=None, description="Stable id of this delivery, sent as X-Replytracker-Delivery."
    )
    event: str | None = Field(default=None, description="Event delivered: reply.detected or tracker.expired.")
    attempts: int = Field(default=0, description="Delivery attempts made so far.")
    last_attempt_time: datetime | None = Field(default=None, description="Time of the latest attempt.")
    delivered_time: datetime | None = Field(
        default=None, description="When the receiver accepted the delivery (2xx)."
    )
    last_status_code: int | None = Field(default=None, description="HTTP status of the latest attempt.")
    last_error: str | None = Field(default=None, description="Error of the latest failed attempt.")


class MessageTrackerStatus(_Model):
    """Observed state, written only by the operator."""

    phase: Phase | None = Field(
        default=None, description="Tracking, Replied, Expired, Suspended or Failed."
    )
    observed_generation: int | None = Field(
        default=None, description="metadata.generation the operator last acted on."
    )
    conditions: list[Condition] = Field(
        default_factory=list,
        description="Ready, Replied and WebhookDelivered conditions.",
        json_schema_extra={
            "x-kubernetes-list-type": "map",
            "x-kubernetes-list-map-keys": ["type"],
        },
    )
    last_check_time: datetime | None = Field(default=None, description="Time of the latest check.")
    next_check_time: datetime | None = Field(
        default=None, description="When the next check is due; survives operator restarts."
    )
    check_count: int = Field(default=0, description="Checks made so far, failed ones included.")
    consecutive_failures: int = Field(
        default=0, description="Failed checks since the last successful one."
    )
    reply: ReplyStatus | None = Field(default=None, description="The detected reply, once seen.")
    webhook: WebhookStatus | None = Field(default=None, description="Webhook delivery progress.")
    completion_time: datetime | None = Field(
        default=None, description="When the tracker reached Replied or Expired."
    )


class MessageTracker(_Model):
    """A parsed MessageTracker object: identity, spec and status."""

    namespace: str
    name: str
    uid: str
    generation: int = 1
    created_at: datetime
    spec: MessageTrackerSpec
    status: MessageTrackerStatus = Field(default_factory=MessageTrackerStatus)

    @classmethod
    def from_body(cls, body: Any) -> "MessageTracker":
        """Parse a Kubernetes object (dict-like); raise pydantic's ValidationError on a bad spec."""
        meta = body["metadata"]
        return cls(
            namespace=meta["namespace"],
            name=meta["name"],
            uid=meta["uid"],
            generation=meta.get("generation") or 1,
            created_at=meta["creationTimestamp"],
            spec=MessageTrackerSpec.model_validate(dict(body.get("spec") or {})),
            status=MessageTrackerStatus.model_validate(dict(body.get("status") or {})),
        )

    @property
    def ref(self) -> str:
        return f"{self.namespace}/{self.name}"

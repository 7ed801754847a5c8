"""Provider messages and reply detection: pure functions, no I/O.

The provider does not document the fields of a message, so each field is
read under every name it is known to use. The first name listed is the one
the project assumes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

_ID_FIELDS = ("message_id", "id")
_SENDER_ID_FIELDS = ("sender_profile_id", "sender_id", "profile_id", "from.profile_id", "sender.profile_id")
_SENDER_NAME_FIELDS = ("sender_name", "full_name", "from.name", "sender.name")
_OWNER_FLAG_FIELDS = ("is_sender", "from_me")
_TEXT_FIELDS = ("text", "body", "message")
_TIME_FIELDS = ("created_at", "sent_at", "timestamp")

# A Unix time above this many units is in milliseconds: 10^11 seconds is
# the year 5138, while 10^11 milliseconds is 1973.
_MILLISECONDS_THRESHOLD = 10**11


@dataclass(frozen=True)
class Message:
    """One message of a thread, normalised from the provider's fields."""

    position: int
    message_id: str | None
    sender_profile_id: str | None
    sender_name: str | None
    from_owner: bool | None
    text: str | None
    sent_at: datetime | None


def _lookup(raw: Mapping[str, Any], dotted: str) -> Any:
    value: Any = raw
    for part in dotted.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return None
        value = value[part]
    return value


def _first(raw: Mapping[str, Any], names: Sequence[str]) -> Any:
    for name in names:
        value = _lookup(raw, name)
        if value is not None and value != "":
            return value
    return None


def parse_time(value: Any) -> datetime | None:
    """Parse Unix seconds, Unix milliseconds or an ISO 8601 string into an aware UTC datetime.

    Return None for any other value, so that one odd message does not fail
    the whole check.
    """
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, str):
        text = value.strip()
        if not text:
            return None
        try:
            number = float(text)
        except ValueError:
            try:
                parsed = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
            except ValueError:
                return None
            if parsed.tzinfo is None:
                parsed = parsed.replace(tzinfo=timezone.utc)
            return parsed.astimezone(timezone.utc)
        value = number
    if isinstance(value, (int, float)):
        seconds = value / 1000 if value > _MILLISECONDS_THRESHOLD else value
        try:
            return datetime.fromtimestamp(seconds, tz=timezone.utc)
        except (OverflowError, OSError, ValueError):
            return None
    return None


def _as_text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    return None


def _as_flag(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    return None


def parse_message(raw: Mapping[str, Any], *, position: int) -> Message:
    """Normalise one provider message; unknown or missing fields become None."""
    text = _first(raw, _TEXT_FIELDS)
    return Message(
        position=position,
        message_id=_as_text(_first(raw, _ID_FIELDS)),
        sender_profile_id=_as_text(_first(raw, _SENDER_ID_FIELDS)),
        sender_name=_as_text(_first(raw, _SENDER_NAME_FIELDS)),
        from_owner=next(
            (flag for name in _OWNER_FLAG_FIELDS if (flag := _as_flag(_lookup(raw, name))) is not None),
            None,
        ),
        text=text if isinstance(text, str) else None,
        sent_at=parse_time(_first(raw, _TIME_FIELDS)),
    )


def parse_messages(raw_messages: Sequence[Any]) -> list[Message]:
    """Normalise a thread and put it in chronological order.

    The provider does not document the order of ``result.messages``. When
    every message has a time, they are sorted by it (stable, so equal times
    keep the provider's order); otherwise the provider's order is kept.
    """
    parsed = [parse_message(raw, position=i) for i, raw in enumerate(raw_messages) if isinstance(raw, Mapping)]
    if parsed and all(m.sent_at is not None for m in parsed):
        parsed.sort(key=lambda m: m.sent_at)  # type: ignore[arg-type, return-value]
    return parsed


@dataclass(frozen=True)
class ReplyCriteria:
    """Criteria that make a message count as a reply for one tracker."""

    profile_id: str | None
    message_id: str | None
    sent_at: datetime | None
    created_at: datetime


def _candidates(messages: Sequence[Message], criteria: ReplyCriteria) -> tuple[list[Message], str | None]:
    """Return the messages after the tracked one, and the owner's profile id when known."""
    if criteria.message_id is not None:
        for index, message in enumerate(messages):
            if message.message_id == criteria.message_id:
                return list(messages[index + 1 :]), message.sender_profile_id
        # NOTE: a tracked message that is not in the answer (for example one
        # older than the messages the provider returns) falls back to sentAt
        # or the creation time, which may miss a reply sent in between.
    cutoff = criteria.sent_at or criteria.created_at
    return [m for m in messages if m.sent_at is not None and m.sent_at > cutoff], None


def is_reply(message: Message, *, criteria: ReplyCriteria, owner_profile_id: str | None) -> bool:
    """Decide whether one message (already known to be after the tracked one) is a reply."""
    if message.from_owner is not None:
        return not message.from_owner
    sender = message.sender_profile_id
    if sender is None:
        return False
    if criteria.profile_id is not None and sender == criteria.profile_id:
        return True
    if owner_profile_id is not None:
        return sender != owner_profile_id
    # Without the owner flag or the owner's profile id, a set profileId limits
    # replies to that profile, and otherwise any sender counts.
    return criteria.profile_id is None


def find_reply(messages: Sequence[Message], *, criteria: ReplyCriteria) -> Message | None:
    """Return the first reply in chronological order, or None."""
    candidates, owner = _candidates(messages, criteria)
    for message in candidates:
        if is_reply(message, criteria=criteria, owner_profile_id=owner):
            return message
    return None

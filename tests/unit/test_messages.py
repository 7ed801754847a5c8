"""Reply detection over every accepted field spelling."""

from datetime import datetime, timezone

import pytest

from replytracker.messages import ReplyCriteria, find_reply, parse_message, parse_messages, parse_time

CREATED = datetime(2026, 1, 1, 12, 0, tzinfo=timezone.utc)


def criteria(**overrides):
    values = {"profile_id": None, "message_id": None, "sent_at": None, "created_at": CREATED}
    values.update(overrides)
    return ReplyCriteria(**values)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (1767268800, datetime(2026, 1, 1, 12, 0, tzinfo=timezone.utc)),
        (1767268800000, datetime(2026, 1, 1, 12, 0, tzinfo=timezone.utc)),
        ("1767268800", datetime(2026, 1, 1, 12, 0, tzinfo=timezone.utc)),
        ("2026-01-01T12:00:00Z", datetime(2026, 1, 1, 12, 0, tzinfo=timezone.utc)),
        ("2026-01-01T14:00:00+02:00", datetime(2026, 1, 1, 12, 0, tzinfo=timezone.utc)),
        ("2026-01-01T12:00:00", datetime(2026, 1, 1, 12, 0, tzinfo=timezone.utc)),
        ("yesterday", None),
        (None, None),
        (True, None),
        ({"a": 1}, None),
    ],
)
def test_parse_time_forms(value, expected):
    assert parse_time(value) == expected


@pytest.mark.parametrize(
    "raw",
    [
        {"message_id": "m", "sender_profile_id": "p", "sender_name": "Ann", "is_sender": False, "text": "t", "created_at": 1767268800},
        {"id": "m", "sender_id": "p", "full_name": "Ann", "from_me": False, "body": "t", "sent_at": 1767268800},
        {"id": "m", "profile_id": "p", "from": {"name": "Ann"}, "from_me": "false", "message": "t", "timestamp": 1767268800},
        {"id": "m", "from": {"profile_id": "p", "name": "Ann"}, "is_sender": False, "text": "t", "timestamp": 1767268800000},
        {"id": "m", "sender": {"profile_id": "p", "name": "Ann"}, "is_sender": False, "text": "t", "timestamp": "2026-01-01T12:00:00Z"},
    ],
)
def test_parse_message_accepts_every_spelling(raw):
    message = parse_message(raw, position=0)
    assert message.message_id == "m"
    assert message.sender_profile_id == "p"
    assert message.sender_name == "Ann"
    assert message.from_owner is False
    assert message.text == "t"
    assert message.sent_at == CREATED


def test_thread_sorted_by_time():
    messages = parse_messages([{"id": "b", "created_at": 20}, {"id": "a", "created_at": 10}])
    assert [m.message_id for m in messages] == ["a", "b"]


def test_thread_order_kept_without_times():
    messages = parse_messages([{"id": "b", "created_at": 20}, {"id": "a"}, "not a message"])
    assert [m.message_id for m in messages] == ["b", "a"]


def thread(*rows):
    return parse_messages(list(rows))


def test_reply_after_tracked_message_id():
    messages = thread(
        {"id": "old", "sender_id": "bob", "is_sender": False, "created_at": 100},
        {"id": "tracked", "sender_id": "me", "is_sender": True, "created_at": 200},
        {"id": "answer", "sender_id": "bob", "is_sender": False, "created_at": 300},
    )
    reply = find_reply(messages, criteria=criteria(message_id="tracked"))
    assert reply is not None
    assert reply.message_id == "answer"


def test_message_before_tracked_message_is_not_a_reply():
    messages = thread(
        {"id": "old", "sender_id": "bob", "is_sender": False, "created_at": 100},
        {"id": "tracked", "sender_id": "me", "is_sender": True, "created_at": 200},
    )
    assert find_reply(messages, criteria=criteria(message_id="tracked")) is None


def test_owner_messages_are_not_replies():
    messages = thread(
        {"id": "tracked", "sender_id": "me", "created_at": 200},
        {"id": "follow-up", "sender_id": "me", "created_at": 300},
    )
    assert find_reply(messages, criteria=criteria(message_id="tracked")) is None


def test_without_flag_owner_is_sender_of_tracked_message():
    messages = thread(
        {"id": "tracked", "sender_id": "me", "created_at": 200},
        {"id": "follow-up", "sender_id": "me", "created_at": 300},
        {"id": "answer", "sender_id": "carol", "created_at": 400},
    )
    reply = find_reply(messages, criteria=criteria(message_id="tracked"))
    assert reply is not None
    assert reply.message_id == "answer"


def test_sent_at_cutoff_when_message_id_missing():
    sent = datetime.fromtimestamp(250, tz=timezone.utc)
    messages = thread(
        {"id": "a", "sender_id": "bob", "is_sender": False, "created_at": 200},
        {"id": "b", "sender_id": "bob", "is_sender": False, "created_at": 300},
    )
    reply = find_reply(messages, criteria=criteria(sent_at=sent, message_id="not-in-thread"))
    assert reply is not None
    assert reply.message_id == "b"


def test_creation_time_cutoff_without_message_or_time():
    before = CREATED.timestamp() - 60
    after = CREATED.timestamp() + 60
    messages = thread(
        {"id": "a", "sender_id": "bob", "is_sender": False, "created_at": before},
        {"id": "b", "sender_id": "bob", "is_sender": False, "created_at": after},
    )
    reply = find_reply(messages, criteria=criteria())
    assert reply is not None
    assert reply.message_id == "b"


def test_profile_id_decides_without_flag_or_owner():
    after = CREATED.timestamp() + 60
    messages = thread(
        {"id": "a", "sender_id": "someone-else", "created_at": after},
        {"id": "b", "sender_id": "bob", "created_at": after + 1},
    )
    reply = find_reply(messages, criteria=criteria(profile_id="bob"))
    assert reply is not None
    assert reply.message_id == "b"


def test_owner_flag_beats_profile_id():
    after = CREATED.timestamp() + 60
    messages = thread({"id": "a", "sender_id": "bob", "is_sender": True, "created_at": after})
    assert find_reply(messages, criteria=criteria(profile_id="bob")) is None

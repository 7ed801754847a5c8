"""Tests of the fake provider over real HTTP on loopback: API, faults, rate limit and control API."""

from __future__ import annotations

import json
import selectors
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from replytracker.fake_provider import FakeProvider, FakeProviderServer

API_KEY = "unit-key"
API_SECRET = "unit-secret"
AUTH_HEADERS = {"x-api-key": API_KEY, "x-api-secret": API_SECRET}
ACCOUNT = "acct-1"
THREAD = "thread-1"

FIRST_MESSAGE = {
    "message_id": "m1",
    "sender_profile_id": "owner",
    "is_sender": True,
    "text": "Hello, are you open to a chat?",
    "created_at": 1767268800,
}
SECOND_MESSAGE = {
    "id": "m2",
    "from": {"profile_id": "prospect", "name": "Ada Lovelace"},
    "from_me": False,
    "body": "Sure, next week works.",
    "sent_at": "2026-01-02T09:00:00Z",
}

ServerFactory = Callable[..., FakeProviderServer]


@pytest.fixture
def start_server() -> Iterator[ServerFactory]:
    """Start fake provider servers with the given FakeProvider options and stop them all afterwards."""
    servers: list[FakeProviderServer] = []

    def start(**provider_options: Any) -> FakeProviderServer:
        options = {"api_key": API_KEY, "api_secret": API_SECRET, **provider_options}
        server = FakeProviderServer(FakeProvider(**options))
        server.start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def server(start_server: ServerFactory) -> FakeProviderServer:
    return start_server()


@pytest.fixture
def provider(server: FakeProviderServer) -> FakeProvider:
    return server.provider


@pytest.fixture
def client(server: FakeProviderServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.api_url, headers=AUTH_HEADERS, timeout=10) as api_client:
        yield api_client


@pytest.fixture
def control(server: FakeProviderServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=f"{server.base_url}/_control", timeout=10) as control_client:
        yield control_client


def fetch_messages(client: httpx.Client, account_id: str = ACCOUNT, thread_id: str = THREAD) -> httpx.Response:
    return client.post("/personal_messages", json={"accountId": account_id, "thread_id": thread_id})


def fetch_threads(client: httpx.Client, account_id: str = ACCOUNT) -> httpx.Response:
    return client.post("/personal_message_threads", json={"accountId": account_id})


def wait_until(condition: Callable[[], bool], *, timeout: float, interval: float = 0.05) -> None:
    """Poll ``condition`` until it is true. Raise TimeoutError after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() >= deadline:
            raise TimeoutError(f"condition still false after {timeout} s")
        time.sleep(interval)


# --- personal_messages, sync and async ---


def test_sync_returns_messages_in_order(provider: FakeProvider, client: httpx.Client) -> None:
    provider.add_message(ACCOUNT, THREAD, FIRST_MESSAGE)
    provider.add_message(ACCOUNT, THREAD, SECOND_MESSAGE)

    response = fetch_messages(client)

    assert response.status_code == 200
    payload = response.json()
    assert payload["status"] == "SUCCESS"
    assert payload["requestId"]
    assert payload["result"]["messages"] == [FIRST_MESSAGE, SECOND_MESSAGE]


def test_add_message_stores_a_copy(provider: FakeProvider, client: httpx.Client) -> None:
    message = {"message_id": "m1", "text": "original"}
    returned = provider.add_message(ACCOUNT, THREAD, message)
    message["text"] = "changed by the caller"
    returned["text"] = "changed through the returned copy"

    messages = fetch_messages(client).json()["result"]["messages"]

    assert messages == [{"message_id": "m1", "text": "original"}]


def test_add_message_rejects_non_json(provider: FakeProvider) -> None:
    with pytest.raises(TypeError):
        provider.add_message(ACCOUNT, THREAD, {"created_at": object()})


def test_unknown_thread_returns_no_messages(provider: FakeProvider, client: httpx.Client) -> None:
    provider.add_account(ACCOUNT)

    response = fetch_messages(client, thread_id="no-such-thread")

    assert response.status_code == 200
    assert response.json()["result"]["messages"] == []


def test_async_pending_then_success(provider: FakeProvider, client: httpx.Client) -> None:
    provider.add_message(ACCOUNT, THREAD, SECOND_MESSAGE)
    provider.set_mode("async", pending_polls=2)

    first = fetch_messages(client)
    assert first.status_code == 200
    assert first.json()["status"] == "PENDING"
    request_id = first.json()["request_id"]

    polls = [client.post("/get_response", json={"request_id": request_id}) for _ in range(3)]

    assert [poll.status_code for poll in polls] == [200, 200, 200]
    assert [poll.json()["status"] for poll in polls] == ["PENDING", "PENDING", "SUCCESS"]
    assert polls[0].json()["requestId"] == request_id
    assert polls[2].json()["requestId"] == request_id
    assert polls[2].json()["result"]["messages"] == [SECOND_MESSAGE]


def test_async_result_stays_available(provider: FakeProvider, client: httpx.Client) -> None:
    provider.add_message(ACCOUNT, THREAD, FIRST_MESSAGE)
    provider.set_mode("async", pending_polls=0)
    request_id = fetch_messages(client).json()["request_id"]

    first_poll = client.post("/get_response", json={"request_id": request_id})
    second_poll = client.post("/get_response", json={"requestId": request_id})

    assert first_poll.json()["status"] == "SUCCESS"
    assert second_poll.json()["status"] == "SUCCESS"
    assert second_poll.json()["result"]["messages"] == [FIRST_MESSAGE]


def test_async_result_is_taken_at_request(provider: FakeProvider, client: httpx.Client) -> None:
    provider.add_message(ACCOUNT, THREAD, FIRST_MESSAGE)
    provider.set_mode("async", pending_polls=0)
    request_id = fetch_messages(client).json()["request_id"]
    provider.add_message(ACCOUNT, THREAD, SECOND_MESSAGE)

    poll = client.post("/get_response", json={"request_id": request_id})

    assert poll.json()["result"]["messages"] == [FIRST_MESSAGE]


def test_get_response_unknown_request(client: httpx.Client) -> None:
    response = client.post("/get_response", json={"request_id": "no-such-request"})

    assert response.status_code == 404
    assert response.json()["status"] == "REQUEST_NOT_FOUND"
    assert response.json()["requestId"]


def test_get_response_missing_request_id(client: httpx.Client) -> None:
    response = client.post("/get_response", json={})

    assert response.status_code == 400
    assert response.json()["status"] == "BAD_REQUEST"
    assert "request_id" in response.json()["message"]


def test_set_mode_rejects_invalid_values(provider: FakeProvider) -> None:
    with pytest.raises(ValueError, match="mode"):
        provider.set_mode("later")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="pending_polls"):
        provider.set_mode("async", pending_polls=-1)


# --- errors ---


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"x-api-key": API_KEY},
        {"x-api-secret": API_SECRET},
        {"x-api-key": "wrong", "x-api-secret": API_SECRET},
        {"x-api-key": API_KEY, "x-api-secret": "wrong"},
    ],
)
def test_wrong_credentials_get_401(
    server: FakeProviderServer, provider: FakeProvider, headers: dict[str, str]
) -> None:
    provider.add_message(ACCOUNT, THREAD, FIRST_MESSAGE)

    response = httpx.post(
        f"{server.api_url}/personal_messages",
        json={"accountId": ACCOUNT, "thread_id": THREAD},
        headers=headers,
        timeout=10,
    )

    assert response.status_code == 401
    payload = response.json()
    assert payload["status"] == "UNAUTHORIZED"
    assert payload["message"]
    assert payload["requestId"]
    assert [call.status_code for call in provider.calls()] == [401]


def test_unknown_account_gets_404(client: httpx.Client) -> None:
    messages_response = fetch_messages(client, account_id="no-such-account")
    threads_response = fetch_threads(client, account_id="no-such-account")

    assert messages_response.status_code == 404
    assert messages_response.json()["status"] == "ACCOUNT_NOT_FOUND"
    assert threads_response.status_code == 404
    assert threads_response.json()["status"] == "ACCOUNT_NOT_FOUND"


@pytest.mark.parametrize(
    ("body", "missing_field"),
    [
        ({"thread_id": THREAD}, "accountId"),
        ({"accountId": ACCOUNT}, "thread_id"),
        ({"accountId": "", "thread_id": THREAD}, "accountId"),
        ({"accountId": ACCOUNT, "thread_id": 7}, "thread_id"),
    ],
)
def test_missing_fields_get_400(
    provider: FakeProvider, client: httpx.Client, body: dict[str, Any], missing_field: str
) -> None:
    provider.add_account(ACCOUNT)

    response = client.post("/personal_messages", json=body)

    assert response.status_code == 400
    assert response.json()["status"] == "BAD_REQUEST"
    assert missing_field in response.json()["message"]


@pytest.mark.parametrize("raw_body", [b"", b"not json", b"[1, 2]"])
def test_invalid_body_gets_400(client: httpx.Client, raw_body: bytes) -> None:
    response = client.post(
        "/personal_messages", content=raw_body, headers={"Content-Type": "application/json"}
    )

    assert response.status_code == 400
    assert response.json()["status"] == "BAD_REQUEST"


def test_unknown_endpoint_gets_404(client: httpx.Client) -> None:
    response = client.post("/no_such_endpoint", json={"accountId": ACCOUNT})

    assert response.status_code == 404
    assert response.json()["status"] == "NOT_FOUND"


def test_path_outside_api_gets_404(server: FakeProviderServer) -> None:
    response = httpx.post(f"{server.base_url}/elsewhere", json={}, headers=AUTH_HEADERS, timeout=10)

    assert response.status_code == 404


def test_get_method_gets_405(client: httpx.Client) -> None:
    response = client.get("/personal_messages")

    assert response.status_code == 405
    assert response.headers["Allow"] == "POST"


# --- personal_message_threads ---


def test_threads_summarize_stored_messages(provider: FakeProvider, client: httpx.Client) -> None:
    provider.add_message(ACCOUNT, THREAD, FIRST_MESSAGE)
    provider.add_message(ACCOUNT, THREAD, SECOND_MESSAGE)

    response = fetch_threads(client)

    assert response.status_code == 200
    payload = response.json()
    assert payload["status"] == "SUCCESS"
    assert payload["result"]["next_cursor"] is None
    assert payload["result"]["threads"] == [
        {
            "thread_id": THREAD,
            "profile_id": "prospect",
            "full_name": "Ada Lovelace",
            "last_message_id": "m2",
            "last_message_at": "2026-01-02T09:00:00Z",
            "last_activity_at": "2026-01-02T09:00:00Z",
            "unread_count": 1,
            "read": False,
        }
    ]


def test_threads_read_when_owner_wrote_last(provider: FakeProvider, client: httpx.Client) -> None:
    provider.add_message(ACCOUNT, THREAD, SECOND_MESSAGE)
    provider.add_message(ACCOUNT, THREAD, FIRST_MESSAGE)

    thread = fetch_threads(client).json()["result"]["threads"][0]

    assert thread["unread_count"] == 0
    assert thread["read"] is True
    assert thread["last_message_id"] == "m1"
    assert thread["profile_id"] == "prospect"


def test_threads_most_recent_first(provider: FakeProvider, client: httpx.Client) -> None:
    provider.add_message(ACCOUNT, "older", {"message_id": "a"})
    provider.add_message(ACCOUNT, "newer", {"message_id": "b"})
    provider.add_message(ACCOUNT, "other-account-thread", {"message_id": "c"})
    provider.add_message("acct-2", "elsewhere", {"message_id": "d"})
    provider.add_message(ACCOUNT, "older", {"message_id": "e"})

    threads = fetch_threads(client).json()["result"]["threads"]

    assert [thread["thread_id"] for thread in threads] == ["older", "other-account-thread", "newer"]


def test_threads_empty_for_new_account(provider: FakeProvider, client: httpx.Client) -> None:
    provider.add_account(ACCOUNT)

    response = fetch_threads(client)

    assert response.status_code == 200
    assert response.json()["result"]["threads"] == []


def test_threads_sync_in_async_mode(provider: FakeProvider, client: httpx.Client) -> None:
    provider.add_message(ACCOUNT, THREAD, FIRST_MESSAGE)
    provider.set_mode("async")

    response = fetch_threads(client)

    assert response.json()["status"] == "SUCCESS"


# --- rate limit ---


def test_rate_limit_returns_429(start_server: ServerFactory) -> None:
    server = start_server(rate_limit=2, rate_window_seconds=60)
    server.provider.add_message(ACCOUNT, THREAD, FIRST_MESSAGE)

    with httpx.Client(base_url=server.api_url, headers=AUTH_HEADERS, timeout=10) as client:
        allowed = [fetch_messages(client), fetch_threads(client)]
        limited = fetch_messages(client)

    assert [response.status_code for response in allowed] == [200, 200]
    assert limited.status_code == 429
    assert limited.json()["status"] == "RATE_LIMITED"
    retry_after = int(limited.headers["Retry-After"])
    assert 1 <= retry_after <= 60


def test_rate_limit_is_per_account(start_server: ServerFactory) -> None:
    server = start_server(rate_limit=1, rate_window_seconds=60)
    server.provider.add_message(ACCOUNT, THREAD, FIRST_MESSAGE)
    server.provider.add_message("acct-2", THREAD, FIRST_MESSAGE)

    with httpx.Client(base_url=server.api_url, headers=AUTH_HEADERS, timeout=10) as client:
        first_account = [fetch_messages(client).status_code, fetch_messages(client).status_code]
        second_account = fetch_messages(client, account_id="acct-2").status_code

    assert first_account == [200, 429]
    assert second_account == 200


def test_rate_limit_skips_get_response(start_server: ServerFactory) -> None:
    server = start_server(rate_limit=1, rate_window_seconds=60, mode="async", pending_polls=3)
    server.provider.add_message(ACCOUNT, THREAD, FIRST_MESSAGE)

    with httpx.Client(base_url=server.api_url, headers=AUTH_HEADERS, timeout=10) as client:
        request_id = fetch_messages(client).json()["request_id"]
        polls = [client.post("/get_response", json={"request_id": request_id}) for _ in range(4)]

    assert [poll.status_code for poll in polls] == [200, 200, 200, 200]
    assert polls[-1].json()["status"] == "SUCCESS"


def test_rate_window_rolls_over(start_server: ServerFactory) -> None:
    server = start_server(rate_limit=1, rate_window_seconds=0.3)
    server.provider.add_message(ACCOUNT, THREAD, FIRST_MESSAGE)

    with httpx.Client(base_url=server.api_url, headers=AUTH_HEADERS, timeout=10) as client:
        assert fetch_messages(client).status_code == 200
        limited = fetch_messages(client)
        assert limited.status_code == 429
        # Below one second the header still says 1, the smallest whole number of seconds.
        assert limited.headers["Retry-After"] == "1"

        wait_until(lambda: fetch_messages(client).status_code == 200, timeout=10)


def test_rate_limit_rejects_invalid_options() -> None:
    with pytest.raises(ValueError, match="rate_limit"):
        FakeProvider(rate_limit=0)
    with pytest.raises(ValueError, match="rate_window_seconds"):
        FakeProvider(rate_window_seconds=0)


# --- injected faults ---


def test_fault_status_with_retry_after(provider: FakeProvider, client: httpx.Client) -> None:
    provider.add_message(ACCOUNT, THREAD, FIRST_MESSAGE)
    provider.inject_fault(status=503, retry_after=2)

    faulted = fetch_messages(client)
    recovered = fetch_messages(client)

    assert faulted.status_code == 503
    assert faulted.headers["Retry-After"] == "2"
    assert faulted.json()["status"] == "SERVICE_UNAVAILABLE"
    assert recovered.status_code == 200


def test_fault_fractional_retry_after(provider: FakeProvider, client: httpx.Client) -> None:
    provider.add_account(ACCOUNT)
    provider.inject_fault(status=429, retry_after=0.5)

    response = fetch_messages(client)

    assert response.status_code == 429
    assert response.headers["Retry-After"] == "0.5"
    assert response.json()["status"] == "RATE_LIMITED"


def test_fault_dict_body(provider: FakeProvider, client: httpx.Client) -> None:
    provider.inject_fault(status=400, body={"status": "ERROR", "message": "Linked account not active"})

    response = fetch_messages(client)

    assert response.status_code == 400
    assert response.json() == {"status": "ERROR", "message": "Linked account not active"}


def test_fault_bytes_body(provider: FakeProvider, client: httpx.Client) -> None:
    provider.inject_fault(status=500, body=b"<html>upstream error</html>")

    response = fetch_messages(client)

    assert response.status_code == 500
    assert response.content == b"<html>upstream error</html>"


def test_fault_malformed_body(provider: FakeProvider, client: httpx.Client) -> None:
    provider.inject_fault(malformed=True)

    response = fetch_messages(client)

    assert response.status_code == 200
    with pytest.raises(json.JSONDecodeError):
        json.loads(response.content)


def test_fault_delay_outlasts_client_timeout(server: FakeProviderServer, provider: FakeProvider) -> None:
    provider.add_message(ACCOUNT, THREAD, FIRST_MESSAGE)
    provider.inject_fault(status=500, delay_seconds=20)

    with httpx.Client(base_url=server.api_url, headers=AUTH_HEADERS, timeout=0.2) as impatient_client:
        with pytest.raises(httpx.ReadTimeout):
            fetch_messages(impatient_client)

    assert [call.status_code for call in provider.calls()] == [500]


def test_fault_delay_keeps_normal_response(provider: FakeProvider, client: httpx.Client) -> None:
    provider.add_message(ACCOUNT, THREAD, FIRST_MESSAGE)
    provider.inject_fault(status=200, delay_seconds=0.1, retry_after=3)

    response = fetch_messages(client)

    assert response.status_code == 200
    assert response.json()["result"]["messages"] == [FIRST_MESSAGE]
    assert response.headers["Retry-After"] == "3"


def test_fault_applies_given_times(provider: FakeProvider, client: httpx.Client) -> None:
    provider.add_message(ACCOUNT, THREAD, FIRST_MESSAGE)
    provider.inject_fault(status=502, times=2)

    statuses = [fetch_messages(client).status_code for _ in range(3)]

    assert statuses == [502, 502, 200]


def test_fault_without_limit_until_cleared(provider: FakeProvider, client: httpx.Client) -> None:
    provider.add_message(ACCOUNT, THREAD, FIRST_MESSAGE)
    provider.inject_fault(status=500, times=None)

    while_faulted = [fetch_messages(client).status_code for _ in range(4)]
    provider.clear_faults()
    after_clear = fetch_messages(client).status_code

    assert while_faulted == [500, 500, 500, 500]
    assert after_clear == 200


def test_fault_matches_account(provider: FakeProvider, client: httpx.Client) -> None:
    provider.add_message(ACCOUNT, THREAD, FIRST_MESSAGE)
    provider.add_message("acct-2", THREAD, FIRST_MESSAGE)
    provider.inject_fault(status=500, account_id="acct-2")

    other_account = fetch_messages(client).status_code
    matching_account = fetch_messages(client, account_id="acct-2").status_code

    assert other_account == 200
    assert matching_account == 500


@pytest.mark.parametrize("fault_path", ["personal_message_threads", "/api/v1/personal_message_threads"])
def test_fault_matches_path(provider: FakeProvider, client: httpx.Client, fault_path: str) -> None:
    provider.add_message(ACCOUNT, THREAD, FIRST_MESSAGE)
    provider.inject_fault(status=500, path=fault_path)

    other_path = fetch_messages(client).status_code
    matching_path = fetch_threads(client).status_code

    assert other_path == 200
    assert matching_path == 500


def test_fault_first_injected_applies_first(provider: FakeProvider, client: httpx.Client) -> None:
    provider.add_message(ACCOUNT, THREAD, FIRST_MESSAGE)
    provider.inject_fault(status=502)
    provider.inject_fault(status=503)

    statuses = [fetch_messages(client).status_code for _ in range(3)]

    assert statuses == [502, 503, 200]


def test_fault_precedes_authentication(server: FakeProviderServer, provider: FakeProvider) -> None:
    provider.inject_fault(status=503)

    response = httpx.post(f"{server.api_url}/personal_messages", json={}, timeout=10)

    assert response.status_code == 503


def test_fault_uses_no_rate_credit(start_server: ServerFactory) -> None:
    server = start_server(rate_limit=1, rate_window_seconds=60)
    server.provider.add_message(ACCOUNT, THREAD, FIRST_MESSAGE)
    server.provider.inject_fault(status=500, times=3)

    with httpx.Client(base_url=server.api_url, headers=AUTH_HEADERS, timeout=10) as client:
        statuses = [fetch_messages(client).status_code for _ in range(5)]

    assert statuses == [500, 500, 500, 200, 429]


@pytest.mark.parametrize(
    ("options", "error"),
    [
        ({"status": 99}, ValueError),
        ({"status": 600}, ValueError),
        ({"times": 0}, ValueError),
        ({"delay_seconds": -1}, ValueError),
        ({"retry_after": -1}, ValueError),
        ({"malformed": True, "body": b"x"}, ValueError),
        ({"body": "text"}, TypeError),
        ({"body": {"not": object()}}, TypeError),
    ],
)
def test_inject_fault_rejects_invalid_options(
    provider: FakeProvider, options: dict[str, Any], error: type[Exception]
) -> None:
    with pytest.raises(error):
        provider.inject_fault(**options)


# --- recorded calls ---


def test_calls_record_each_request(provider: FakeProvider, client: httpx.Client) -> None:
    provider.add_message(ACCOUNT, THREAD, FIRST_MESSAGE)
    provider.set_mode("async", pending_polls=0)
    before = time.time()

    request_id = fetch_messages(client).json()["request_id"]
    client.post("/get_response", json={"request_id": request_id})
    fetch_threads(client)
    fetch_messages(client, account_id="no-such-account")
    after = time.time()

    calls = provider.calls()
    assert [(call.path, call.account_id, call.thread_id, call.status_code) for call in calls] == [
        ("/api/v1/personal_messages", ACCOUNT, THREAD, 200),
        ("/api/v1/get_response", ACCOUNT, THREAD, 200),
        ("/api/v1/personal_message_threads", ACCOUNT, None, 200),
        ("/api/v1/personal_messages", "no-such-account", THREAD, 404),
    ]
    assert all(before <= call.time <= after for call in calls)


def test_calls_filter_by_path_and_account(provider: FakeProvider, client: httpx.Client) -> None:
    provider.add_message(ACCOUNT, THREAD, FIRST_MESSAGE)
    provider.add_message("acct-2", THREAD, FIRST_MESSAGE)
    fetch_messages(client)
    fetch_messages(client, account_id="acct-2")
    fetch_threads(client)

    by_short_path = provider.calls("personal_messages")
    by_full_path = provider.calls("/api/v1/personal_messages")
    by_account = provider.calls(account_id="acct-2")
    by_both = provider.calls("personal_message_threads", account_id="acct-2")

    assert [call.account_id for call in by_short_path] == [ACCOUNT, "acct-2"]
    assert by_full_path == by_short_path
    assert [call.path for call in by_account] == ["/api/v1/personal_messages"]
    assert by_both == []


def test_calls_record_faults(provider: FakeProvider, client: httpx.Client) -> None:
    provider.add_account(ACCOUNT)
    provider.inject_fault(malformed=True)
    provider.inject_fault(status=504)

    fetch_messages(client)
    fetch_messages(client)

    assert [call.status_code for call in provider.calls()] == [200, 504]


def test_reset_forgets_everything(provider: FakeProvider, client: httpx.Client) -> None:
    provider.add_message(ACCOUNT, THREAD, FIRST_MESSAGE)
    provider.set_mode("async")
    provider.inject_fault(status=500, times=None, path="personal_message_threads")
    fetch_messages(client)

    provider.reset()

    assert provider.calls() == []
    assert provider.mode == "sync"
    assert fetch_messages(client).status_code == 404
    provider.add_account(ACCOUNT)
    assert fetch_threads(client).status_code == 200


# --- control API ---


def test_control_add_message(control: httpx.Client, client: httpx.Client) -> None:
    response = control.post(
        "/messages", json={"accountId": ACCOUNT, "threadId": THREAD, "message": SECOND_MESSAGE}
    )

    assert response.status_code == 200
    assert response.json() == {"message": SECOND_MESSAGE}
    assert fetch_messages(client).json()["result"]["messages"] == [SECOND_MESSAGE]


def test_control_add_account(control: httpx.Client, client: httpx.Client) -> None:
    response = control.post("/accounts", json={"accountId": ACCOUNT})

    assert response.status_code == 200
    assert fetch_threads(client).status_code == 200


def test_control_inject_and_clear_faults(control: httpx.Client, client: httpx.Client) -> None:
    control.post("/accounts", json={"accountId": ACCOUNT})
    injected = control.post(
        "/faults",
        json={
            "status": 429,
            "retryAfter": 7,
            "times": None,
            "accountId": ACCOUNT,
            "path": "personal_messages",
        },
    )

    faulted = [fetch_messages(client) for _ in range(2)]
    other_path = fetch_threads(client)
    cleared = control.delete("/faults")
    after_clear = fetch_messages(client)

    assert injected.status_code == 200
    assert [response.status_code for response in faulted] == [429, 429]
    assert faulted[0].headers["Retry-After"] == "7"
    assert other_path.status_code == 200
    assert cleared.status_code == 200
    assert after_clear.status_code == 200


def test_control_fault_bodies(control: httpx.Client, client: httpx.Client) -> None:
    control.post("/faults", json={"status": 500, "body": "[1, 2"})
    control.post("/faults", json={"status": 400, "body": {"status": "PROFILE_NOT_FOUND"}})
    control.post("/faults", json={"malformed": True})
    control.post("/faults", json={"status": 200, "delaySeconds": 0.05, "path": "get_response"})

    raw = fetch_messages(client)
    structured = fetch_messages(client)
    malformed = fetch_messages(client)
    delayed = client.post("/get_response", json={"request_id": "unknown"})

    assert raw.status_code == 500
    assert raw.content == b"[1, 2"
    assert structured.status_code == 400
    assert structured.json() == {"status": "PROFILE_NOT_FOUND"}
    assert malformed.status_code == 200
    with pytest.raises(json.JSONDecodeError):
        json.loads(malformed.content)
    assert delayed.status_code == 404


@pytest.mark.parametrize(
    "fault",
    [
        {"status": "500"},
        {"status": True},
        {"times": 0},
        {"times": 1.5},
        {"retryAfter": "soon"},
        {"delaySeconds": -1},
        {"malformed": "yes"},
        {"body": [1, 2]},
        {"accountId": 5},
    ],
)
def test_control_rejects_invalid_fault(control: httpx.Client, fault: dict[str, Any]) -> None:
    response = control.post("/faults", json=fault)

    assert response.status_code == 400
    assert response.json()["error"]


def test_control_set_mode(control: httpx.Client, client: httpx.Client, provider: FakeProvider) -> None:
    provider.add_message(ACCOUNT, THREAD, FIRST_MESSAGE)

    response = control.post("/mode", json={"mode": "async", "pendingPolls": 0})
    request_id = fetch_messages(client).json()["request_id"]
    poll = client.post("/get_response", json={"request_id": request_id})

    assert response.status_code == 200
    assert provider.mode == "async"
    assert poll.json()["status"] == "SUCCESS"


@pytest.mark.parametrize("body", [{"mode": "eventually"}, {"mode": "async", "pendingPolls": -1}, {}])
def test_control_rejects_invalid_mode(control: httpx.Client, body: dict[str, Any]) -> None:
    response = control.post("/mode", json=body)

    assert response.status_code == 400


def test_control_list_calls(control: httpx.Client, client: httpx.Client, provider: FakeProvider) -> None:
    provider.add_message(ACCOUNT, THREAD, FIRST_MESSAGE)
    fetch_messages(client)
    fetch_threads(client, account_id="no-such-account")

    all_calls = control.get("/calls").json()
    filtered = control.get("/calls", params={"path": "personal_message_threads"}).json()

    assert [(call["path"], call["accountId"], call["threadId"], call["statusCode"]) for call in all_calls] == [
        ("/api/v1/personal_messages", ACCOUNT, THREAD, 200),
        ("/api/v1/personal_message_threads", "no-such-account", None, 404),
    ]
    assert all(isinstance(call["time"], float) for call in all_calls)
    assert [call["accountId"] for call in filtered] == ["no-such-account"]


def test_control_reset(control: httpx.Client, client: httpx.Client, provider: FakeProvider) -> None:
    provider.add_message(ACCOUNT, THREAD, FIRST_MESSAGE)
    fetch_messages(client)

    response = control.post("/reset")

    assert response.status_code == 200
    assert provider.calls() == []
    assert fetch_messages(client).status_code == 404


def test_control_unknown_endpoint(control: httpx.Client) -> None:
    response = control.post("/nothing", json={})

    assert response.status_code == 404


def test_control_wrong_method(control: httpx.Client) -> None:
    response = control.get("/faults")

    assert response.status_code == 405
    assert response.headers["Allow"] == "DELETE, POST"


def test_control_rejects_invalid_message(control: httpx.Client) -> None:
    missing_thread = control.post("/messages", json={"accountId": ACCOUNT, "message": {}})
    not_an_object = control.post(
        "/messages", json={"accountId": ACCOUNT, "threadId": THREAD, "message": "hello"}
    )
    not_json = control.post("/messages", content=b"{", headers={"Content-Type": "application/json"})

    assert missing_thread.status_code == 400
    assert "threadId" in missing_thread.json()["error"]
    assert not_an_object.status_code == 400
    assert not_json.status_code == 400


def test_control_requests_are_not_recorded(control: httpx.Client, provider: FakeProvider) -> None:
    control.post("/accounts", json={"accountId": ACCOUNT})
    control.get("/calls")

    assert provider.calls() == []


# --- server lifecycle ---


def test_server_urls(server: FakeProviderServer) -> None:
    assert server.base_url == f"http://127.0.0.1:{server.port}"
    assert server.api_url == f"http://127.0.0.1:{server.port}/api/v1"
    assert server.port > 0


def test_server_lifecycle() -> None:
    server = FakeProviderServer()

    with pytest.raises(RuntimeError, match="not running"):
        _ = server.port

    with server:
        with pytest.raises(RuntimeError, match="already running"):
            server.start()
        response = httpx.post(
            f"{server.api_url}/personal_messages",
            json={"accountId": "a", "thread_id": "t"},
            headers={"x-api-key": "test-key", "x-api-secret": "test-secret"},
            timeout=10,
        )
        assert response.status_code == 404

    server.stop()
    with pytest.raises(RuntimeError, match="not running"):
        _ = server.port


def test_server_stop_ends_fault_delay(provider: FakeProvider, server: FakeProviderServer) -> None:
    provider.inject_fault(status=503, delay_seconds=30)
    responses: list[httpx.Response] = []

    def send_request() -> None:
        responses.append(httpx.post(f"{server.api_url}/personal_messages", json={}, timeout=60))

    sender = threading.Thread(target=send_request, daemon=True)
    sender.start()
    wait_until(lambda: len(provider.calls()) == 1, timeout=10)
    server.stop()
    sender.join(timeout=10)

    assert not sender.is_alive()
    assert [response.status_code for response in responses] == [503]


# --- run_fake_provider in another process ---


def read_line(process: subprocess.Popen[str], *, timeout: float) -> str:
    """Read one line of the process's stdout, raising TimeoutError after ``timeout`` seconds."""
    assert process.stdout is not None
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        if not selector.select(timeout):
            raise TimeoutError(f"no output from the process within {timeout} s")
    return process.stdout.readline()


def test_run_fake_provider_until_sigterm() -> None:
    code = (
        "from replytracker.fake_provider import run_fake_provider\n"
        "run_fake_provider(host='127.0.0.1', port=0, api_key='cli-key', api_secret='cli-secret',"
        " mode='async', pending_polls=0, rate_limit=5)\n"
    )
    process = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        line = read_line(process, timeout=20)
        assert line.startswith("fake provider listening on http://127.0.0.1:")
        api_url = line.split(" on ", 1)[1].strip()
        assert api_url.endswith("/api/v1")
        base_url = api_url.removesuffix("/api/v1")

        added = httpx.post(
            f"{base_url}/_control/messages",
            json={"accountId": ACCOUNT, "threadId": THREAD, "message": FIRST_MESSAGE},
            timeout=10,
        )
        pending = httpx.post(
            f"{api_url}/personal_messages",
            json={"accountId": ACCOUNT, "thread_id": THREAD},
            headers={"x-api-key": "cli-key", "x-api-secret": "cli-secret"},
            timeout=10,
        )
        assert added.status_code == 200
        assert pending.json()["status"] == "PENDING"

        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=20) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=20)
        assert process.stdout is not None
        process.stdout.close()

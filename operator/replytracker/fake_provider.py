"""A fake WeLink-compatible messaging provider for tests and demos.

``FakeProvider`` contains the state (accounts, threads, messages, injected
faults, recorded calls) and builds the response to one HTTP request without
any network code. Its methods are thread-safe.
``FakeProviderServer`` serves it over HTTP on a background thread, and
``run_fake_provider`` serves it in the foreground for use from another
process, which then drives it through the ``/_control/`` API.

The provider API is served under ``/api/v1/``: ``personal_messages``,
``personal_message_threads`` and ``get_response``. Where the real provider's
documentation is silent, the fake makes one choice and states it where it is
made.
"""

from __future__ import annotations

import copy
import hmac
import json
import logging
import math
import signal
import socket
import socketserver
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType
from typing import Any, Literal, cast
from urllib.parse import parse_qs, urlsplit

logger = logging.getLogger(__name__)

ProviderMode = Literal["sync", "async"]

API_PREFIX = "/api/v1"
CONTROL_PREFIX = "/_control"
PERSONAL_MESSAGES_PATH = f"{API_PREFIX}/personal_messages"
PERSONAL_MESSAGE_THREADS_PATH = f"{API_PREFIX}/personal_message_threads"
GET_RESPONSE_PATH = f"{API_PREFIX}/get_response"

API_KEY_HEADER = "x-api-key"
API_SECRET_HEADER = "x-api-secret"

MAX_FAULT_DELAY_SECONDS = 30.0
MAX_REQUEST_BODY_BYTES = 1024 * 1024
# Interval at which the serving thread checks whether stop() was called, so stop() takes up to this long.
SERVE_POLL_SECONDS = 0.05

# A body that starts like a success response but is cut off, so it is not JSON.
MALFORMED_BODY = b'{"status": "SUCCESS", "result": {"messages": [{"message_id": '

# The error code (the body's ``status``) that an injected fault without a body sends, by HTTP status.
_FAULT_ERROR_CODES = {
    400: "BAD_REQUEST",
    401: "UNAUTHORIZED",
    403: "FORBIDDEN",
    404: "NOT_FOUND",
    408: "REQUEST_TIMEOUT",
    429: "RATE_LIMITED",
    500: "INTERNAL_ERROR",
    502: "PROXY_ERROR",
    503: "SERVICE_UNAVAILABLE",
    504: "GATEWAY_TIMEOUT",
}

# Accepted spellings of the message fields, the project's assumed name first. The
# provider does not document them, so the fake reads every spelling that the client accepts.
_MESSAGE_ID_FIELDS = ("message_id", "id")
_SENDER_PROFILE_FIELDS = (
    "sender_profile_id",
    "sender_id",
    "profile_id",
    "from.profile_id",
    "sender.profile_id",
)
_SENDER_NAME_FIELDS = ("sender_name", "full_name", "from.name", "sender.name")
_OWNER_FLAG_FIELDS = ("is_sender", "from_me")
_SENT_AT_FIELDS = ("created_at", "sent_at", "timestamp")


@dataclass(frozen=True)
class Call:
    """One request that reached the fake provider's API, with the status code of its response."""

    path: str
    account_id: str | None
    thread_id: str | None
    status_code: int
    time: float  # time.time() when the request arrived


@dataclass(frozen=True)
class ProviderResponse:
    """An HTTP response to send, after waiting ``delay_seconds``."""

    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)
    delay_seconds: float = 0.0


@dataclass
class _Fault:
    status: int
    body: bytes | dict[str, Any] | None
    retry_after: float | None
    delay_seconds: float
    malformed: bool
    remaining: int | None  # None: applies until cleared
    account_id: str | None
    path: str | None

    def matches(self, *, path: str, account_id: str | None) -> bool:
        if self.path is not None and self.path != path:
            return False
        if self.account_id is not None and self.account_id != account_id:
            return False
        return True

    def passes_through(self) -> bool:
        """Whether the request still gets its normal response, only later."""
        return self.status == HTTPStatus.OK and self.body is None and not self.malformed


@dataclass
class _PendingRequest:
    account_id: str
    thread_id: str
    polls_left: int
    result: dict[str, Any]


def normalize_api_path(path: str) -> str:
    """Return ``path`` as a full API path: ``personal_messages`` becomes ``/api/v1/personal_messages``."""
    if not path.startswith("/"):
        path = f"{API_PREFIX}/{path}"
    if len(path) > 1:
        path = path.rstrip("/")
    return path


def _json_response(
    status: int, payload: Any, *, headers: dict[str, str] | None = None
) -> ProviderResponse:
    body = json.dumps(payload).encode()
    all_headers = {"Content-Type": "application/json"}
    all_headers.update(headers or {})
    return ProviderResponse(status=int(status), body=body, headers=all_headers)


def _error_response(
    status: int, code: str, message: str, *, headers: dict[str, str] | None = None
) -> ProviderResponse:
    """Build an error in the provider's documented form ``{status, message, requestId}``."""
    payload = {"status": code, "message": message, "requestId": str(uuid.uuid4())}
    return _json_response(status, payload, headers=headers)


def _parse_json_object(body: bytes) -> tuple[dict[str, Any] | None, str | None]:
    """Return the body as a JSON object, or None and the reason it is not one."""
    if not body:
        return None, "request body is empty, expected a JSON object"
    try:
        payload = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        return None, f"request body is not valid JSON: {error}"
    if not isinstance(payload, dict):
        return None, f"request body must be a JSON object, got {type(payload).__name__}"
    return payload, None


def _string_field(payload: Mapping[str, Any] | None, *names: str) -> str | None:
    """Return the first non-empty string among ``names`` in ``payload``."""
    if payload is None:
        return None
    for name in names:
        value = payload.get(name)
        if isinstance(value, str) and value:
            return value
    return None


def _lookup_field(message: Mapping[str, Any], names: tuple[str, ...]) -> Any:
    """Return the value of the first of ``names`` present in ``message``.

    A dot in a name descends into a nested object: ``from.name`` reads ``message["from"]["name"]``.
    """
    for name in names:
        value: Any = message
        for part in name.split("."):
            if not isinstance(value, Mapping) or part not in value:
                value = None
                break
            value = value[part]
        if value is not None:
            return value
    return None


def _is_sent_by_owner(message: Mapping[str, Any]) -> bool:
    return _lookup_field(message, _OWNER_FLAG_FIELDS) is True


def summarize_thread(thread_id: str, messages: list[dict[str, Any]]) -> dict[str, Any]:
    """Build one ``personal_message_threads`` entry from the stored messages of a thread.

    The other party is the sender of the first message not flagged as sent by
    the account owner. ``unread_count`` counts the messages after the owner's
    last one. Time fields are copied as stored, in whatever format the test used.
    """
    other_party_message = next((m for m in messages if not _is_sent_by_owner(m)), None)
    last_message = messages[-1] if messages else None

    unread_count = 0
    for message in reversed(messages):
        if _is_sent_by_owner(message):
            break
        unread_count += 1

    last_message_at = None
    last_message_id = None
    if last_message is not None:
        last_message_at = _lookup_field(last_message, _SENT_AT_FIELDS)
        last_message_id = _lookup_field(last_message, _MESSAGE_ID_FIELDS)

    profile_id = None
    full_name = None
    if other_party_message is not None:
        profile_id = _lookup_field(other_party_message, _SENDER_PROFILE_FIELDS)
        full_name = _lookup_field(other_party_message, _SENDER_NAME_FIELDS)

    return {
        "thread_id": thread_id,
        "profile_id": profile_id,
        "full_name": full_name,
        "last_message_id": last_message_id,
        "last_message_at": last_message_at,
        "last_activity_at": last_message_at,
        "unread_count": unread_count,
        "read": unread_count == 0,
    }


def _validate_mode(mode: str, pending_polls: int) -> None:
    if mode not in ("sync", "async"):
        raise ValueError(f"mode must be 'sync' or 'async', got {mode!r}")
    if pending_polls < 0:
        raise ValueError(f"pending_polls must be 0 or more, got {pending_polls}")


def _format_retry_after(seconds: float) -> str:
    """Format a Retry-After value: whole seconds as HTTP requires them.

    Fractions are kept although HTTP does not allow them, so that tests can use short waits.
    """
    return f"{seconds:g}"


def _fault_response(fault: _Fault) -> ProviderResponse:
    headers: dict[str, str] = {}
    if fault.retry_after is not None:
        headers["Retry-After"] = _format_retry_after(fault.retry_after)

    if fault.malformed:
        headers["Content-Type"] = "application/json"
        return ProviderResponse(
            status=int(HTTPStatus.OK), body=MALFORMED_BODY, headers=headers, delay_seconds=fault.delay_seconds
        )
    if fault.body is None:
        code = _FAULT_ERROR_CODES.get(fault.status, "ERROR")
        response = _error_response(fault.status, code, f"injected fault with HTTP status {fault.status}")
    elif isinstance(fault.body, bytes):
        response = ProviderResponse(
            status=fault.status, body=fault.body, headers={"Content-Type": "application/json"}
        )
    else:
        response = _json_response(fault.status, fault.body)
    return ProviderResponse(
        status=response.status,
        body=response.body,
        headers={**response.headers, **headers},
        delay_seconds=fault.delay_seconds,
    )


def _delayed(response: ProviderResponse, fault: _Fault) -> ProviderResponse:
    """Return the normal ``response`` with the pass-through fault's delay and Retry-After header."""
    headers = dict(response.headers)
    if fault.retry_after is not None:
        headers["Retry-After"] = _format_retry_after(fault.retry_after)
    return ProviderResponse(
        status=response.status, body=response.body, headers=headers, delay_seconds=fault.delay_seconds
    )


class FakeProvider:
    """Thread-safe state and request handling of a fake WeLink-compatible provider.

    Every public method may be called from any thread while a server is
    serving requests. Messages are stored as given, so a test may use any
    accepted spelling of the message fields.
    """

    def __init__(
        self,
        *,
        api_key: str = "test-key",
        api_secret: str = "test-secret",
        rate_limit: int = 150,
        rate_window_seconds: float = 3600,
        mode: ProviderMode = "sync",
        pending_polls: int = 1,
    ) -> None:
        if rate_limit < 1:
            raise ValueError(f"rate_limit must be 1 or more, got {rate_limit}")
        if rate_window_seconds <= 0:
            raise ValueError(f"rate_window_seconds must be positive, got {rate_window_seconds}")
        _validate_mode(mode, pending_polls)

        self.api_key = api_key
        self.api_secret = api_secret
        self.rate_limit = rate_limit
        self.rate_window_seconds = rate_window_seconds
        self._initial_mode: ProviderMode = mode
        self._initial_pending_polls = pending_polls

        self._lock = threading.Lock()
        self._mode: ProviderMode = mode
        self._pending_polls = pending_polls
        # account id -> thread id -> messages in the order added
        self._accounts: dict[str, dict[str, list[dict[str, Any]]]] = {}
        # (account id, thread id) -> sequence number of the thread's latest message
        self._thread_activity: dict[tuple[str, str], int] = {}
        self._message_sequence = 0
        self._faults: list[_Fault] = []
        self._calls: list[Call] = []
        self._requests: dict[str, _PendingRequest] = {}
        # account id -> time.monotonic() of each counted request inside the window
        self._rate_windows: dict[str, deque[float]] = {}

    @property
    def mode(self) -> ProviderMode:
        """Whether ``personal_messages`` returns its result at once (sync) or through ``get_response`` (async)."""
        with self._lock:
            return self._mode

    def add_account(self, account_id: str) -> None:
        """Register an account, so that requests for it no longer get ACCOUNT_NOT_FOUND."""
        if not account_id:
            raise ValueError("account_id must be a non-empty string")
        with self._lock:
            self._accounts.setdefault(account_id, {})

    def add_message(self, account_id: str, thread_id: str, message: dict[str, Any]) -> dict[str, Any]:
        """Append a message to a thread, registering the account if needed, and return a copy of it.

        The message must be a JSON-serializable dict. It is served unchanged,
        after the messages added before it to the same thread.
        """
        if not account_id:
            raise ValueError("account_id must be a non-empty string")
        if not thread_id:
            raise ValueError("thread_id must be a non-empty string")
        if not isinstance(message, dict):
            raise TypeError(f"message must be a dict, got {type(message).__name__}")
        json.dumps(message)  # Raises TypeError now rather than when a request serves it.

        stored = copy.deepcopy(message)
        with self._lock:
            threads = self._accounts.setdefault(account_id, {})
            threads.setdefault(thread_id, []).append(stored)
            self._message_sequence += 1
            self._thread_activity[(account_id, thread_id)] = self._message_sequence
        return copy.deepcopy(stored)

    def set_mode(self, mode: ProviderMode, *, pending_polls: int = 1) -> None:
        """Switch how ``personal_messages`` responds.

        In async mode, ``get_response`` returns PENDING for the first ``pending_polls`` polls of each later request.
        """
        _validate_mode(mode, pending_polls)
        with self._lock:
            self._mode = mode
            self._pending_polls = pending_polls

    def inject_fault(
        self,
        *,
        status: int = 500,
        body: bytes | dict[str, Any] | None = None,
        retry_after: float | None = None,
        delay_seconds: float = 0.0,
        malformed: bool = False,
        times: int | None = 1,
        account_id: str | None = None,
        path: str | None = None,
    ) -> None:
        """Make the next matching API requests fail in a chosen way.

        A fault matches requests to ``path`` (``personal_messages`` or the full
        ``/api/v1/...`` path) and for ``account_id``, each when given. It applies
        before authentication and every other check, to ``times`` requests, or
        until ``clear_faults`` when ``times`` is None. When several faults
        match, the one injected first applies.

        The response is ``status`` with ``body`` and a ``Retry-After`` header when
        ``retry_after`` is given. A dict body is sent as JSON, bytes are sent
        as they are (labelled application/json), and None sends an error body
        in the provider's form.
        ``malformed=True`` responds 200 with a body that is not JSON instead.
        ``delay_seconds`` (at most 30) passes before the response is sent. A fault
        with status 200, no body and not malformed keeps the normal response and
        only delays it.
        """
        if not 100 <= status <= 599:
            raise ValueError(f"status must be an HTTP status code from 100 to 599, got {status}")
        if body is not None and not isinstance(body, (bytes, dict)):
            raise TypeError(f"body must be bytes, a dict or None, got {type(body).__name__}")
        if malformed and body is not None:
            raise ValueError("body cannot be set together with malformed=True")
        if retry_after is not None and retry_after < 0:
            raise ValueError(f"retry_after must be 0 or more seconds, got {retry_after}")
        if delay_seconds < 0:
            raise ValueError(f"delay_seconds must be 0 or more, got {delay_seconds}")
        if times is not None and times < 1:
            raise ValueError(f"times must be 1 or more, or None for no limit, got {times}")
        if isinstance(body, dict):
            json.dumps(body)  # Raises TypeError now rather than when a request gets the fault.

        fault = _Fault(
            status=status,
            body=copy.deepcopy(body),
            retry_after=retry_after,
            delay_seconds=min(delay_seconds, MAX_FAULT_DELAY_SECONDS),
            malformed=malformed,
            remaining=times,
            account_id=account_id,
            path=normalize_api_path(path) if path is not None else None,
        )
        with self._lock:
            self._faults.append(fault)

    def clear_faults(self) -> None:
        """Remove every injected fault, including the ones without a limit."""
        with self._lock:
            self._faults.clear()

    def calls(self, path: str | None = None, account_id: str | None = None) -> list[Call]:
        """Return the recorded API calls, oldest first, optionally only those for ``path`` and ``account_id``.

        ``path`` may be short (``personal_messages``) or full. Requests to the
        ``/_control/`` API are not recorded.
        """
        path_filter = normalize_api_path(path) if path is not None else None
        with self._lock:
            recorded = list(self._calls)
        return [
            call
            for call in recorded
            if (path_filter is None or call.path == path_filter)
            and (account_id is None or call.account_id == account_id)
        ]

    def reset(self) -> None:
        """Forget accounts, messages, faults, calls, pending requests and rate-limit usage.

        The mode and ``pending_polls`` return to the constructor's values.
        """
        with self._lock:
            self._mode = self._initial_mode
            self._pending_polls = self._initial_pending_polls
            self._accounts.clear()
            self._thread_activity.clear()
            self._message_sequence = 0
            self._faults.clear()
            self._calls.clear()
            self._requests.clear()
            self._rate_windows.clear()

    def handle(
        self, *, method: str, path: str, headers: Mapping[str, str], body: bytes
    ) -> ProviderResponse:
        """Build the response to one API request and record the request as a ``Call``.

        ``headers`` must have lower-case names. The checks run in this order:
        injected faults, the key and secret (401), the endpoint (404), the
        method (405), the body (400), the account (404) and the rate limit (429).
        """
        received_at = time.time()
        path = normalize_api_path(urlsplit(path).path)
        payload, body_error = _parse_json_object(body)

        with self._lock:
            account_id = _string_field(payload, "accountId")
            thread_id = _string_field(payload, "thread_id")
            if path == GET_RESPONSE_PATH:
                pending = self._requests.get(_string_field(payload, "request_id", "requestId") or "")
                if pending is not None:
                    account_id = pending.account_id
                    thread_id = pending.thread_id

            fault = self._take_fault(path=path, account_id=account_id)
            if fault is None or fault.passes_through():
                response = self._respond(
                    method=method,
                    path=path,
                    headers=headers,
                    payload=payload,
                    body_error=body_error,
                )
                if fault is not None:
                    response = _delayed(response, fault)
            else:
                response = _fault_response(fault)

            self._calls.append(
                Call(
                    path=path,
                    account_id=account_id,
                    thread_id=thread_id,
                    status_code=response.status,
                    time=received_at,
                )
            )
        return response

    def _take_fault(self, *, path: str, account_id: str | None) -> _Fault | None:
        """Use up one application of the first matching fault and return it, or None."""
        for index, fault in enumerate(self._faults):
            if not fault.matches(path=path, account_id=account_id):
                continue
            if fault.remaining is not None:
                fault.remaining -= 1
                if fault.remaining == 0:
                    del self._faults[index]
            logger.debug(
                "applying injected fault to %s for account %s: status %d, delay %.3f s, malformed %s",
                path,
                account_id,
                fault.status,
                fault.delay_seconds,
                fault.malformed,
            )
            return fault
        return None

    def _respond(
        self,
        *,
        method: str,
        path: str,
        headers: Mapping[str, str],
        payload: dict[str, Any] | None,
        body_error: str | None,
    ) -> ProviderResponse:
        if not self._is_authorized(headers):
            return _error_response(
                HTTPStatus.UNAUTHORIZED,
                "UNAUTHORIZED",
                f"missing or invalid {API_KEY_HEADER} or {API_SECRET_HEADER} header",
            )

        endpoints: dict[str, Callable[[dict[str, Any]], ProviderResponse]] = {
            PERSONAL_MESSAGES_PATH: self._personal_messages,
            PERSONAL_MESSAGE_THREADS_PATH: self._personal_message_threads,
            GET_RESPONSE_PATH: self._get_response,
        }
        endpoint = endpoints.get(path)
        if endpoint is None:
            return _error_response(HTTPStatus.NOT_FOUND, "NOT_FOUND", f"unknown endpoint {path}")
        if method != "POST":
            return _error_response(
                HTTPStatus.METHOD_NOT_ALLOWED,
                "METHOD_NOT_ALLOWED",
                f"{path} accepts POST only, got {method}",
                headers={"Allow": "POST"},
            )
        if payload is None:
            return _error_response(HTTPStatus.BAD_REQUEST, "BAD_REQUEST", body_error or "invalid body")
        return endpoint(payload)

    def _is_authorized(self, headers: Mapping[str, str]) -> bool:
        key = headers.get(API_KEY_HEADER, "").encode()
        secret = headers.get(API_SECRET_HEADER, "").encode()
        # Evaluate both comparisons so that neither short-circuits the other.
        key_matches = hmac.compare_digest(key, self.api_key.encode())
        secret_matches = hmac.compare_digest(secret, self.api_secret.encode())
        return key_matches and secret_matches

    def _check_account(self, payload: dict[str, Any], *required: str) -> ProviderResponse | str:
        """Return the request's account id, or the 400 or 404 response when it cannot be served."""
        missing = [name for name in ("accountId", *required) if _string_field(payload, name) is None]
        if missing:
            return _error_response(
                HTTPStatus.BAD_REQUEST,
                "BAD_REQUEST",
                f"missing or empty field(s) in request body: {', '.join(missing)}",
            )
        account_id = cast(str, _string_field(payload, "accountId"))
        if account_id not in self._accounts:
            return _error_response(
                HTTPStatus.NOT_FOUND, "ACCOUNT_NOT_FOUND", f"account {account_id} not found"
            )
        return account_id

    def _use_rate_credit(self, account_id: str) -> ProviderResponse | None:
        """Count one request against the account's rolling window, or return the 429 when it is full."""
        now = time.monotonic()
        window = self._rate_windows.setdefault(account_id, deque())
        while window and window[0] <= now - self.rate_window_seconds:
            window.popleft()

        if len(window) >= self.rate_limit:
            seconds_until_free = window[0] + self.rate_window_seconds - now
            retry_after = max(1, math.ceil(seconds_until_free))
            return _error_response(
                HTTPStatus.TOO_MANY_REQUESTS,
                "RATE_LIMITED",
                f"rate limit of {self.rate_limit} requests per {self.rate_window_seconds:g} s "
                f"exceeded for account {account_id}, retry after {retry_after} s",
                headers={"Retry-After": str(retry_after)},
            )

        window.append(now)
        return None

    def _personal_messages(self, payload: dict[str, Any]) -> ProviderResponse:
        checked = self._check_account(payload, "thread_id")
        if isinstance(checked, ProviderResponse):
            return checked
        account_id = checked
        rate_limited = self._use_rate_credit(account_id)
        if rate_limited is not None:
            return rate_limited

        thread_id = cast(str, _string_field(payload, "thread_id"))
        # An unknown thread of a known account returns an empty list, because
        # the provider does not document a THREAD_NOT_FOUND error.
        messages = copy.deepcopy(self._accounts[account_id].get(thread_id, []))
        result = {"messages": messages}
        request_id = str(uuid.uuid4())

        if self._mode == "sync":
            return _json_response(
                HTTPStatus.OK, {"status": "SUCCESS", "requestId": request_id, "result": result}
            )
        # The result is taken now, so messages added while the request is
        # pending appear only in a later request.
        self._requests[request_id] = _PendingRequest(
            account_id=account_id,
            thread_id=thread_id,
            polls_left=self._pending_polls,
            result=result,
        )
        return _json_response(HTTPStatus.OK, {"status": "PENDING", "request_id": request_id})

    def _personal_message_threads(self, payload: dict[str, Any]) -> ProviderResponse:
        checked = self._check_account(payload)
        if isinstance(checked, ProviderResponse):
            return checked
        account_id = checked
        rate_limited = self._use_rate_credit(account_id)
        if rate_limited is not None:
            return rate_limited

        # Most recent activity first, as thread lists usually are. This endpoint
        # always returns its result at once, whatever the mode.
        threads = self._accounts[account_id]
        ordered_ids = sorted(
            threads, key=lambda thread_id: self._thread_activity[(account_id, thread_id)], reverse=True
        )
        summaries = [summarize_thread(thread_id, threads[thread_id]) for thread_id in ordered_ids]
        return _json_response(
            HTTPStatus.OK,
            {
                "status": "SUCCESS",
                "requestId": str(uuid.uuid4()),
                "result": {"threads": summaries, "next_cursor": None},
            },
        )

    def _get_response(self, payload: dict[str, Any]) -> ProviderResponse:
        request_id = _string_field(payload, "request_id", "requestId")
        if request_id is None:
            return _error_response(
                HTTPStatus.BAD_REQUEST,
                "BAD_REQUEST",
                "missing or empty field in request body: request_id",
            )
        pending = self._requests.get(request_id)
        if pending is None:
            return _error_response(
                HTTPStatus.NOT_FOUND, "REQUEST_NOT_FOUND", f"request {request_id} not found"
            )
        if pending.polls_left > 0:
            pending.polls_left -= 1
            return _json_response(HTTPStatus.OK, {"status": "PENDING", "requestId": request_id})
        # A finished request keeps returning SUCCESS, so a client may poll it again.
        return _json_response(
            HTTPStatus.OK,
            {"status": "SUCCESS", "requestId": request_id, "result": copy.deepcopy(pending.result)},
        )


def _control_payload(body: bytes) -> dict[str, Any]:
    payload, error = _parse_json_object(body)
    if payload is None:
        raise ValueError(error)
    return payload


def _required_string(payload: Mapping[str, Any], name: str) -> str:
    value = payload.get(name)
    if not isinstance(value, str) or not value:
        raise ValueError(f"field {name} must be a non-empty string, got {value!r}")
    return value


def _optional_string(payload: Mapping[str, Any], name: str) -> str | None:
    value = payload.get(name)
    if value is not None and not isinstance(value, str):
        raise ValueError(f"field {name} must be a string or null, got {value!r}")
    return value


def _optional_number(payload: Mapping[str, Any], name: str) -> float | None:
    value = payload.get(name)
    if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
        raise ValueError(f"field {name} must be a number or null, got {value!r}")
    return value


def _integer(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"field {name} must be an integer, got {value!r}")
    return value


def _control_add_account(provider: FakeProvider, body: bytes, query: dict[str, list[str]]) -> Any:
    payload = _control_payload(body)
    account_id = _required_string(payload, "accountId")
    provider.add_account(account_id)
    return {"accountId": account_id}


def _control_add_message(provider: FakeProvider, body: bytes, query: dict[str, list[str]]) -> Any:
    payload = _control_payload(body)
    message = payload.get("message")
    if not isinstance(message, dict):
        raise ValueError(f"field message must be a JSON object, got {message!r}")
    stored = provider.add_message(
        _required_string(payload, "accountId"), _required_string(payload, "threadId"), message
    )
    return {"message": stored}


def _control_inject_fault(provider: FakeProvider, body: bytes, query: dict[str, list[str]]) -> Any:
    payload = _control_payload(body)

    fault_body = payload.get("body")
    if isinstance(fault_body, str):
        # JSON cannot carry bytes, so a string stands for a raw body, for example a bare array.
        fault_body = fault_body.encode()
    elif fault_body is not None and not isinstance(fault_body, dict):
        raise ValueError(f"field body must be a JSON object, a string or null, got {fault_body!r}")

    times = payload.get("times", 1)
    delay_seconds = _optional_number(payload, "delaySeconds")
    malformed = payload.get("malformed", False)
    if not isinstance(malformed, bool):
        raise ValueError(f"field malformed must be true or false, got {malformed!r}")

    provider.inject_fault(
        status=_integer(payload.get("status", 500), "status"),
        body=fault_body,
        retry_after=_optional_number(payload, "retryAfter"),
        delay_seconds=delay_seconds or 0.0,
        malformed=malformed,
        times=None if times is None else _integer(times, "times"),
        account_id=_optional_string(payload, "accountId"),
        path=_optional_string(payload, "path"),
    )
    return {"ok": True}


def _control_clear_faults(provider: FakeProvider, body: bytes, query: dict[str, list[str]]) -> Any:
    provider.clear_faults()
    return {"ok": True}


def _control_set_mode(provider: FakeProvider, body: bytes, query: dict[str, list[str]]) -> Any:
    payload = _control_payload(body)
    mode = _required_string(payload, "mode")
    pending_polls = _integer(payload.get("pendingPolls", 1), "pendingPolls")
    if mode not in ("sync", "async"):
        raise ValueError(f"field mode must be 'sync' or 'async', got {mode!r}")
    provider.set_mode(cast(ProviderMode, mode), pending_polls=pending_polls)
    return {"ok": True}


def _control_list_calls(provider: FakeProvider, body: bytes, query: dict[str, list[str]]) -> Any:
    path = query.get("path", [None])[0]
    account_id = query.get("accountId", [None])[0]
    return [
        {
            "path": call.path,
            "accountId": call.account_id,
            "threadId": call.thread_id,
            "statusCode": call.status_code,
            "time": call.time,
        }
        for call in provider.calls(path=path, account_id=account_id)
    ]


def _control_reset(provider: FakeProvider, body: bytes, query: dict[str, list[str]]) -> Any:
    provider.reset()
    return {"ok": True}


_ControlHandler = Callable[[FakeProvider, bytes, dict[str, list[str]]], Any]

_CONTROL_ROUTES: dict[str, dict[str, _ControlHandler]] = {
    f"{CONTROL_PREFIX}/accounts": {"POST": _control_add_account},
    f"{CONTROL_PREFIX}/messages": {"POST": _control_add_message},
    f"{CONTROL_PREFIX}/faults": {"POST": _control_inject_fault, "DELETE": _control_clear_faults},
    f"{CONTROL_PREFIX}/mode": {"POST": _control_set_mode},
    f"{CONTROL_PREFIX}/calls": {"GET": _control_list_calls},
    f"{CONTROL_PREFIX}/reset": {"POST": _control_reset},
}


def handle_control_request(
    provider: FakeProvider, *, method: str, path: str, query: str, body: bytes
) -> ProviderResponse:
    """Build the response to one request to the unauthenticated ``/_control/`` API, which drives ``provider``.

    Fields are camelCase, as in the provider API. Invalid input gets a 400 response
    with ``{"error": message}``.
    """
    path = path.rstrip("/")
    methods = _CONTROL_ROUTES.get(path)
    if methods is None:
        return _json_response(HTTPStatus.NOT_FOUND, {"error": f"unknown control endpoint {path}"})
    handler = methods.get(method)
    if handler is None:
        allowed = ", ".join(sorted(methods))
        return _json_response(
            HTTPStatus.METHOD_NOT_ALLOWED,
            {"error": f"{path} accepts {allowed}, got {method}"},
            headers={"Allow": allowed},
        )
    try:
        result = handler(provider, body, parse_qs(query))
    except (ValueError, TypeError) as error:
        logger.debug("rejected control request %s %s: %s", method, path, error)
        return _json_response(HTTPStatus.BAD_REQUEST, {"error": str(error)})
    return _json_response(HTTPStatus.OK, result)


def _address_family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


class _ProviderHTTPServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], provider: FakeProvider) -> None:
        self.address_family = _address_family(address[0])
        self.provider = provider
        # Set on stop, so that a request waiting out a fault delay gets its response at once.
        self.stopping = threading.Event()
        super().__init__(address, _ProviderRequestHandler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind looks the host name up with socket.getfqdn,
        # which can wait on DNS. The fake has no use for the name.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)


class _ProviderRequestHandler(BaseHTTPRequestHandler):
    server: _ProviderHTTPServer
    # Seconds a client may stay silent mid-request before its connection is dropped.
    timeout = 30

    def do_GET(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def do_PUT(self) -> None:
        self._dispatch()

    def do_PATCH(self) -> None:
        self._dispatch()

    def do_DELETE(self) -> None:
        self._dispatch()

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        logger.debug("fake provider %s: " + format, self.address_string(), *args)

    def _dispatch(self) -> None:
        body = self._read_body()
        if body is None:
            return

        target = urlsplit(self.path)
        if target.path == CONTROL_PREFIX or target.path.startswith(f"{CONTROL_PREFIX}/"):
            response = handle_control_request(
                self.server.provider,
                method=self.command,
                path=target.path,
                query=target.query,
                body=body,
            )
        else:
            headers = {name.lower(): value for name, value in self.headers.items()}
            response = self.server.provider.handle(
                method=self.command, path=target.path, headers=headers, body=body
            )

        if response.delay_seconds > 0:
            self.server.stopping.wait(response.delay_seconds)
        self._send(response)

    def _read_body(self) -> bytes | None:
        """Return the request body, or None after sending an error response for an invalid length."""
        length_header = self.headers.get("Content-Length", "0")
        try:
            length = int(length_header)
        except ValueError:
            length = -1
        if length < 0:
            self._send(_json_response(HTTPStatus.BAD_REQUEST, {"error": f"invalid Content-Length {length_header!r}"}))
            return None
        if length > MAX_REQUEST_BODY_BYTES:
            self._send(
                _json_response(
                    HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                    {"error": f"request body of {length} bytes exceeds {MAX_REQUEST_BODY_BYTES} bytes"},
                )
            )
            return None
        return self.rfile.read(length) if length else b""

    def _send(self, response: ProviderResponse) -> None:
        try:
            self.send_response(response.status)
            for name, value in response.headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(response.body)))
            self.end_headers()
            self.wfile.write(response.body)
        except (BrokenPipeError, ConnectionResetError) as error:
            # Usual when a client timed out during an injected delay.
            logger.debug("client %s went away before the response was sent: %s", self.address_string(), error)


class FakeProviderServer:
    """Serves a ``FakeProvider`` over HTTP from a background thread.

    Use it as a context manager, or call ``start`` and ``stop``. The default
    port 0 picks a free port, which ``port`` and the URLs report once started.
    """

    def __init__(
        self, provider: FakeProvider | None = None, *, host: str = "127.0.0.1", port: int = 0
    ) -> None:
        self._provider = provider if provider is not None else FakeProvider()
        self._host = host
        self._requested_port = port
        self._server: _ProviderHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def provider(self) -> FakeProvider:
        """The state that this server serves."""
        return self._provider

    @property
    def port(self) -> int:
        """The bound port, available once started (RuntimeError before ``start``)."""
        if self._server is None:
            raise RuntimeError("the fake provider server is not running, call start() first")
        return int(self._server.server_address[1])

    @property
    def base_url(self) -> str:
        """The server's root URL, such as ``http://127.0.0.1:8080``."""
        return f"http://{_url_host(self._host)}:{self.port}"

    @property
    def api_url(self) -> str:
        """The provider API's base URL, such as ``http://127.0.0.1:8080/api/v1``."""
        return f"{self.base_url}{API_PREFIX}"

    def start(self) -> None:
        """Bind the port and start serving. Raise RuntimeError when already running."""
        if self._server is not None:
            raise RuntimeError(f"the fake provider server is already running at {self.base_url}")
        server = _ProviderHTTPServer((self._host, self._requested_port), self._provider)
        thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": SERVE_POLL_SECONDS},
            name=f"fake-provider-{server.server_address[1]}",
            daemon=True,
        )
        self._server = server
        self._thread = thread
        thread.start()
        logger.info("fake provider listening on %s", self.api_url)

    def stop(self) -> None:
        """Stop serving and close the port. Do nothing when not running.

        Requests waiting out an injected delay get their responses at once.
        """
        server, thread = self._server, self._thread
        if server is None:
            return
        url = self.api_url
        server.stopping.set()
        server.shutdown()
        server.server_close()
        if thread is not None:
            thread.join(timeout=5)
        self._server = None
        self._thread = None
        logger.info("fake provider at %s stopped", url)

    def __enter__(self) -> FakeProviderServer:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def run_fake_provider(
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    api_key: str = "test-key",
    api_secret: str = "test-secret",
    mode: str = "sync",
    pending_polls: int = 1,
    rate_limit: int = 150,
) -> None:
    """Serve a fake provider until SIGINT or SIGTERM.

    Prints ``fake provider listening on <api url>`` to stdout once the port is
    bound. Must run in the main thread, because it installs signal handlers.
    The previous handlers are restored on return.
    """
    if mode not in ("sync", "async"):
        raise ValueError(f"mode must be 'sync' or 'async', got {mode!r}")
    provider = FakeProvider(
        api_key=api_key,
        api_secret=api_secret,
        rate_limit=rate_limit,
        mode=cast(ProviderMode, mode),
        pending_polls=pending_polls,
    )
    server = FakeProviderServer(provider, host=host, port=port)
    stop_requested = threading.Event()

    def request_stop(signal_number: int, frame: FrameType | None) -> None:
        logger.info("fake provider received signal %d, stopping", signal_number)
        stop_requested.set()

    previous_handlers = {
        signal_number: signal.signal(signal_number, request_stop)
        for signal_number in (signal.SIGINT, signal.SIGTERM)
    }
    try:
        with server:
            print(f"fake provider listening on {server.api_url}", flush=True)
            # Wake once a second, so stopping never depends on a signal interrupting the wait.
            while not stop_requested.wait(timeout=1.0):
                pass
    finally:
        for signal_number, handler in previous_handlers.items():
            signal.signal(signal_number, handler)

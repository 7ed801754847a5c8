"""Client for the WeLink-compatible messaging API.

Every call is a POST with a JSON body and the ``x-api-key``/``x-api-secret``
headers. A response either carries ``status: SUCCESS`` and the ``result`` at
once, or a request id whose result is collected by polling ``get_response``.
Each failure is raised as a ``ProviderError`` subclass whose ``reason`` is
the condition reason the tracker's status shows.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass
from typing import Any

import httpx

from replytracker import metrics

logger = logging.getLogger(__name__)

_PENDING_STATUSES = {"PENDING", "PROCESSING", "IN_PROGRESS", "QUEUED", "RUNNING", "ACCEPTED"}
_SUCCESS_STATUSES = {"SUCCESS", "SUCCEEDED", "COMPLETED", "OK"}


@dataclass(frozen=True)
class Credentials:
    """API key and secret; ``repr`` never shows them."""

    api_key: str
    api_secret: str

    def __repr__(self) -> str:
        return "Credentials(api_key=***, api_secret=***)"


class ProviderError(Exception):
    """A failed provider call. ``reason`` is a CamelCase condition reason."""

    reason = "ProviderError"

    def __init__(self, message: str, *, status_code: int | None = None, retry_after: float | None = None):
        super().__init__(message)
        self.message = message
        self.status_code = status_code
        self.retry_after = retry_after

    @property
    def transient(self) -> bool:
        """True when retrying soon may succeed (server errors, timeouts, malformed responses)."""
        return True


class Unauthorized(ProviderError):
    reason = "Unauthorized"

    @property
    def transient(self) -> bool:
        return False


class RateLimited(ProviderError):
    reason = "RateLimited"


class AccountNotFound(ProviderError):
    reason = "AccountNotFound"

    @property
    def transient(self) -> bool:
        return False


class AccountInactive(ProviderError):
    reason = "AccountInactive"

    @property
    def transient(self) -> bool:
        return False


class BadRequest(ProviderError):
    reason = "BadRequest"

    @property
    def transient(self) -> bool:
        return False


def _body_summary(response: httpx.Response) -> tuple[str | None, str]:
    """Return the error code and message of an error body, tolerating any shape."""
    try:
        data = response.json()
    except ValueError:
        return None, response.text[:200]
    if not isinstance(data, dict):
        return None, str(data)[:200]
    code = data.get("status") if isinstance(data.get("status"), str) else None
    message = data.get("message") if isinstance(data.get("message"), str) else ""
    return code, message[:500]


def _parse_retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        from email.utils import parsedate_to_datetime

        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


def _raise_for_status(response: httpx.Response, *, call: str) -> None:
    if response.status_code < 400:
        return
    code, message = _body_summary(response)
    detail = f"{call} returned HTTP {response.status_code}"
    if code:
        detail += f" {code}"
    if message:
        detail += f": {message}"
    status = response.status_code
    if status == 401 or status == 403:
        raise Unauthorized(detail + "; check the API key and secret", status_code=status)
    if status == 429:
        raise RateLimited(
            detail, status_code=status, retry_after=_parse_retry_after(response.headers.get("retry-after"))
        )
    if status == 404:
        raise AccountNotFound(detail + "; check spec.accountId and REPLYTRACKER_API_URL", status_code=status)
    if status == 400 and "not active" in message.lower():
        raise AccountInactive(detail + "; reconnect the LinkedIn account at the provider", status_code=status)
    if 400 <= status < 500 and status != 408:
        raise BadRequest(detail, status_code=status)
    raise ProviderError(detail, status_code=status)


def _request_id(data: dict[str, Any]) -> str | None:
    value = data.get("requestId", data.get("request_id"))
    return str(value) if value not in (None, "") else None


class ProviderClient:
    """Async client; one instance is shared by all trackers and must be closed."""

    def __init__(
        self,
        *,
        base_url: str,
        timeout_seconds: float = 30.0,
        response_wait_seconds: float = 60.0,
        first_poll_delay_seconds: float = 0.5,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._base_url = base_url.rstrip("/")
        self._response_wait = response_wait_seconds
        self._first_poll_delay = first_poll_delay_seconds
        self._http = httpx.AsyncClient(timeout=timeout_seconds, transport=transport)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _post(self, path: str, body: dict[str, Any], *, credentials: Credentials) -> dict[str, Any]:
        url = f"{self._base_url}/{path}"
        headers = {"x-api-key": credentials.api_key, "x-api-secret": credentials.api_secret}
        try:
            response = await self._http.post(url, json=body, headers=headers)
        except httpx.TimeoutException as exc:
            metrics.PROVIDER_RESPONSES.labels(call=path, code="none").inc()
            raise ProviderError(f"{path} timed out: {type(exc).__name__}") from exc
        except httpx.HTTPError as exc:
            metrics.PROVIDER_RESPONSES.labels(call=path, code="none").inc()
            raise ProviderError(f"{path} failed: {type(exc).__name__}: {exc}") from exc
        metrics.PROVIDER_RESPONSES.labels(call=path, code=str(response.status_code)).inc()
        _raise_for_status(response, call=path)
        try:
            data = response.json()
        except (ValueError, json.JSONDecodeError) as exc:
            raise ProviderError(f"{path} returned HTTP {response.status_code} with a body that is not JSON") from exc
        if not isinstance(data, dict):
            raise ProviderError(f"{path} returned a JSON {type(data).__name__}, expected an object")
        return data

    async def _result(self, path: str, body: dict[str, Any], *, credentials: Credentials) -> Any:
        """Call ``path`` and return its ``result``, polling get_response for an asynchronous response."""
        data = await self._post(path, body, credentials=credentials)
        deadline = time.monotonic() + self._response_wait
        delay = self._first_poll_delay
        while True:
            status = data.get("status")
            status = status.upper() if isinstance(status, str) else None
            if status in _SUCCESS_STATUSES or (status is None and "result" in data):
                return data.get("result")
            request_id = _request_id(data)
            if status not in _PENDING_STATUSES and status is not None:
                message = data.get("message") if isinstance(data.get("message"), str) else ""
                raise ProviderError(f"{path} ended with status {status}: {message[:300]}".rstrip(": "))
            if request_id is None:
                raise ProviderError(f"{path} returned neither a result nor a request id")
            if time.monotonic() + delay > deadline:
                raise ProviderError(
                    f"{path} request {request_id} still pending after {self._response_wait:.0f} s "
                    "(REPLYTRACKER_RESPONSE_WAIT_SECONDS)"
                )
            await asyncio.sleep(delay)
            delay = min(delay * 2, 10.0)
            data = await self._post("get_response", {"request_id": request_id}, credentials=credentials)
            if _request_id(data) is None:
                data = {**data, "requestId": request_id}

    async def fetch_messages(self, *, account_id: str, thread_id: str, credentials: Credentials) -> list[Any]:
        """Return the raw messages of one thread.

        Raises a ``ProviderError`` subclass on any failure, including a response
        without a message list.
        """
        result = await self._result(
            "personal_messages", {"accountId": account_id, "thread_id": thread_id}, credentials=credentials
        )
        if isinstance(result, list):
            return result
        if isinstance(result, dict):
            messages = result.get("messages")
            if isinstance(messages, list):
                return messages
            if isinstance(messages, dict) and isinstance(messages.get("items"), list):
                return messages["items"]
        raise ProviderError("personal_messages returned no list of messages in result.messages")

"""The provider client against the fake provider, over HTTP on loopback."""

from __future__ import annotations

import asyncio

import pytest

from replytracker.fake_provider import FakeProvider, FakeProviderServer
from replytracker.provider import (
    AccountInactive,
    AccountNotFound,
    BadRequest,
    Credentials,
    ProviderClient,
    ProviderError,
    RateLimited,
    Unauthorized,
)

GOOD = Credentials(api_key="k", api_secret="s")


@pytest.fixture
def server():
    fake = FakeProvider(api_key="k", api_secret="s")
    fake.add_message("acc", "thr", {"message_id": "m1", "text": "hello"})
    with FakeProviderServer(fake) as running:
        yield running


def fetch(server, *, credentials=GOOD, account="acc", wait=5.0):
    async def go():
        client = ProviderClient(base_url=server.api_url, response_wait_seconds=wait, first_poll_delay_seconds=0.05)
        try:
            return await client.fetch_messages(account_id=account, thread_id="thr", credentials=credentials)
        finally:
            await client.aclose()

    return asyncio.run(go())


def test_sync_answer(server):
    assert fetch(server) == [{"message_id": "m1", "text": "hello"}]


def test_async_answer_polls_get_response(server):
    server.provider.set_mode("async", pending_polls=3)
    assert fetch(server) == [{"message_id": "m1", "text": "hello"}]
    assert len(server.provider.calls(path="get_response")) == 4


def test_async_answer_gives_up_after_wait(server):
    server.provider.set_mode("async", pending_polls=1000)
    with pytest.raises(ProviderError, match="still pending"):
        fetch(server, wait=0.3)


def test_unauthorized(server):
    with pytest.raises(Unauthorized) as raised:
        fetch(server, credentials=Credentials(api_key="k", api_secret="wrong"))
    assert raised.value.status_code == 401
    assert raised.value.transient is False


def test_unknown_account(server):
    with pytest.raises(AccountNotFound):
        fetch(server, account="nobody")


def test_rate_limit_carries_retry_after(server):
    server.provider.inject_fault(status=429, retry_after=7)
    with pytest.raises(RateLimited) as raised:
        fetch(server)
    assert raised.value.retry_after == 7


def test_inactive_account(server):
    server.provider.inject_fault(status=400, body={"status": "ERROR", "message": "Linked account not active"})
    with pytest.raises(AccountInactive):
        fetch(server)


def test_other_client_error(server):
    server.provider.inject_fault(status=400, body={"status": "PROFILE_NOT_FOUND", "message": "no such profile"})
    with pytest.raises(BadRequest, match="PROFILE_NOT_FOUND"):
        fetch(server)


@pytest.mark.parametrize("status", [500, 502, 503])
def test_server_error_is_transient(server, status):
    server.provider.inject_fault(status=status)
    with pytest.raises(ProviderError) as raised:
        fetch(server)
    assert type(raised.value) is ProviderError
    assert raised.value.transient is True


def test_malformed_body(server):
    server.provider.inject_fault(malformed=True)
    with pytest.raises(ProviderError, match="not JSON"):
        fetch(server)


def test_failed_status_in_body(server):
    server.provider.inject_fault(status=200, body={"status": "PROXY_ERROR", "message": "proxy down"})
    with pytest.raises(ProviderError, match="PROXY_ERROR"):
        fetch(server)


def test_timeout(server):
    server.provider.inject_fault(status=200, delay_seconds=2)

    async def go():
        client = ProviderClient(base_url=server.api_url, timeout_seconds=0.3)
        try:
            return await client.fetch_messages(account_id="acc", thread_id="thr", credentials=GOOD)
        finally:
            await client.aclose()

    with pytest.raises(ProviderError, match="timed out"):
        asyncio.run(go())


def test_unreachable_provider():
    async def go():
        # Port 9 (discard) on loopback has no listener here, so the connection is refused at once.
        client = ProviderClient(base_url="http://127.0.0.1:9/api/v1", timeout_seconds=2)
        try:
            return await client.fetch_messages(account_id="acc", thread_id="thr", credentials=GOOD)
        finally:
            await client.aclose()

    with pytest.raises(ProviderError, match="failed"):
        asyncio.run(go())


def test_credentials_repr_hides_values():
    assert "s3cret" not in repr(Credentials(api_key="s3cret", api_secret="s3cret"))

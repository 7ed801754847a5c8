"""Tests of the webhook receiver over real HTTP on loopback."""

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

from replytracker.receiver import Delivery, WebhookReceiver, describe_delivery
from replytracker.signing import DELIVERY_HEADER, EVENT_HEADER, SIGNATURE_HEADER, sign

SECRET = "receiver-secret"
LONG_TEXT = "Thanks for reaching out, I would be glad to talk about the role next Tuesday afternoon."

ReceiverFactory = Callable[..., WebhookReceiver]


def reply_payload(*, text: str = LONG_TEXT, sender_name: str | None = "Ada Lovelace") -> dict[str, Any]:
    return {
        "event": "reply.detected",
        "deliveryId": "d-1",
        "tracker": {"namespace": "sales", "name": "ada-intro"},
        "reply": {
            "messageId": "m2",
            "sender": {"profileId": "prospect", "name": sender_name},
            "text": text,
            "sentAt": "2026-01-02T09:00:00Z",
        },
    }


def post_delivery(
    url: str,
    payload: Any,
    *,
    secret: str | None = None,
    signature: str | None = None,
    event: str = "reply.detected",
    delivery_id: str = "d-1",
) -> httpx.Response:
    """Send one delivery the way the operator does: exact bytes, event and delivery headers, optional signature."""
    body = json.dumps(payload).encode()
    headers = {"Content-Type": "application/json", EVENT_HEADER: event, DELIVERY_HEADER: delivery_id}
    if secret is not None:
        headers[SIGNATURE_HEADER] = sign(body, secret=secret, timestamp=int(time.time()))
    if signature is not None:
        headers[SIGNATURE_HEADER] = signature
    return httpx.post(url, content=body, headers=headers, timeout=10)


@pytest.fixture
def start_receiver() -> Iterator[ReceiverFactory]:
    """Start receivers with the given options and stop them all afterwards."""
    receivers: list[WebhookReceiver] = []

    def start(**options: Any) -> WebhookReceiver:
        receiver = WebhookReceiver(**options)
        receiver.start()
        receivers.append(receiver)
        return receiver

    yield start
    for receiver in receivers:
        receiver.stop()


@pytest.fixture
def signed_receiver(start_receiver: ReceiverFactory) -> WebhookReceiver:
    return start_receiver(secret=SECRET)


@pytest.fixture
def open_receiver(start_receiver: ReceiverFactory) -> WebhookReceiver:
    return start_receiver()


# --- recording and signatures ---


def test_records_signed_delivery(signed_receiver: WebhookReceiver) -> None:
    payload = reply_payload()

    response = post_delivery(signed_receiver.url, payload, secret=SECRET, delivery_id="d-42")

    assert response.status_code == 200
    [delivery] = signed_receiver.wait_for(1, timeout=10)
    assert delivery.path == "/hook"
    assert delivery.json == payload
    assert delivery.body == json.dumps(payload).encode()
    assert delivery.event == "reply.detected"
    assert delivery.delivery_id == "d-42"
    assert delivery.signature_valid is True
    assert delivery.status_code == 200
    assert delivery.headers["content-type"] == "application/json"
    assert SIGNATURE_HEADER.lower() in delivery.headers


def test_wrong_secret_is_invalid(signed_receiver: WebhookReceiver) -> None:
    response = post_delivery(signed_receiver.url, reply_payload(), secret="other-secret")

    [delivery] = signed_receiver.wait_for(1, timeout=10)
    assert response.status_code == 200
    assert delivery.signature_valid is False


def test_malformed_signature_is_invalid(signed_receiver: WebhookReceiver) -> None:
    post_delivery(signed_receiver.url, reply_payload(), signature="not a signature")

    [delivery] = signed_receiver.wait_for(1, timeout=10)
    assert delivery.signature_valid is False


def test_missing_signature_is_invalid_with_secret(signed_receiver: WebhookReceiver) -> None:
    post_delivery(signed_receiver.url, reply_payload())

    [delivery] = signed_receiver.wait_for(1, timeout=10)
    assert delivery.signature_valid is False


def test_no_secret_leaves_signature_unchecked(open_receiver: WebhookReceiver) -> None:
    post_delivery(open_receiver.url, reply_payload(), secret=SECRET)
    post_delivery(open_receiver.url, reply_payload())

    deliveries = open_receiver.wait_for(2, timeout=10)
    assert [delivery.signature_valid for delivery in deliveries] == [None, None]


def test_accepts_any_path(open_receiver: WebhookReceiver) -> None:
    post_delivery(f"{open_receiver.base_url}/team/a/webhooks?source=test", {"event": "x"})

    [delivery] = open_receiver.wait_for(1, timeout=10)
    assert delivery.path == "/team/a/webhooks"


def test_non_json_body_is_kept(open_receiver: WebhookReceiver) -> None:
    httpx.post(open_receiver.url, content=b"plain text", timeout=10)

    [delivery] = open_receiver.wait_for(1, timeout=10)
    assert delivery.body == b"plain text"
    assert delivery.json is None
    assert delivery.event is None
    assert delivery.delivery_id is None


def test_deliveries_is_a_copy(open_receiver: WebhookReceiver) -> None:
    post_delivery(open_receiver.url, {"event": "x"})
    open_receiver.wait_for(1, timeout=10)

    open_receiver.deliveries.clear()

    assert len(open_receiver.deliveries) == 1


def test_clear_forgets_deliveries(open_receiver: WebhookReceiver) -> None:
    post_delivery(open_receiver.url, {"event": "x"})
    open_receiver.wait_for(1, timeout=10)
    open_receiver.respond_with(500)

    open_receiver.clear()
    response = post_delivery(open_receiver.url, {"event": "y"})

    assert response.status_code == 200
    assert [delivery.json for delivery in open_receiver.deliveries] == [{"event": "y"}]


# --- queued response codes ---


def test_respond_with_queues_codes(open_receiver: WebhookReceiver) -> None:
    open_receiver.respond_with(500, 503)
    open_receiver.respond_with(410)

    statuses = [post_delivery(open_receiver.url, {"n": n}).status_code for n in range(4)]

    assert statuses == [500, 503, 410, 200]
    recorded = [delivery.status_code for delivery in open_receiver.wait_for(4, timeout=10)]
    assert recorded == [500, 503, 410, 200]


def test_respond_with_rejects_invalid_code(open_receiver: WebhookReceiver) -> None:
    with pytest.raises(ValueError, match="700"):
        open_receiver.respond_with(200, 700)

    assert post_delivery(open_receiver.url, {}).status_code == 200


# --- wait_for ---


def test_wait_for_timeout_message(open_receiver: WebhookReceiver) -> None:
    post_delivery(open_receiver.url, {"event": "x"})
    open_receiver.wait_for(1, timeout=10)

    with pytest.raises(TimeoutError, match=r"at least 2 webhook deliveries within 0.2 s, received 1"):
        open_receiver.wait_for(2, timeout=0.2)


def test_wait_for_delivery_from_other_thread(open_receiver: WebhookReceiver) -> None:
    sender = threading.Thread(target=post_delivery, args=(open_receiver.url, {"event": "late"}), daemon=True)
    sender.start()

    deliveries = open_receiver.wait_for(1, timeout=10)
    sender.join(timeout=10)

    assert [delivery.json for delivery in deliveries] == [{"event": "late"}]


def test_wait_for_zero_returns_at_once(open_receiver: WebhookReceiver) -> None:
    assert open_receiver.wait_for(0, timeout=0) == []


def test_wait_for_rejects_negative_values(open_receiver: WebhookReceiver) -> None:
    with pytest.raises(ValueError, match="count"):
        open_receiver.wait_for(-1, timeout=1)
    with pytest.raises(ValueError, match="timeout"):
        open_receiver.wait_for(1, timeout=-1)


# --- HTTP listing and other requests ---


def test_deliveries_endpoint_lists_json(signed_receiver: WebhookReceiver) -> None:
    payload = reply_payload()
    signed_receiver.respond_with(502)
    post_delivery(signed_receiver.url, payload, secret=SECRET, delivery_id="d-7")

    response = httpx.get(f"{signed_receiver.base_url}/_deliveries", timeout=10)

    assert response.status_code == 200
    [listed] = response.json()
    assert listed["path"] == "/hook"
    assert listed["body"] == json.dumps(payload)
    assert listed["json"] == payload
    assert listed["event"] == "reply.detected"
    assert listed["deliveryId"] == "d-7"
    assert listed["signatureValid"] is True
    assert listed["statusCode"] == 502
    assert listed["headers"][EVENT_HEADER.lower()] == "reply.detected"
    assert isinstance(listed["time"], float)


def test_deliveries_endpoint_decodes_invalid_utf8(open_receiver: WebhookReceiver) -> None:
    httpx.post(open_receiver.url, content=b"\xff\xfe", timeout=10)

    [listed] = httpx.get(f"{open_receiver.base_url}/_deliveries", timeout=10).json()

    assert listed["body"] == "\ufffd\ufffd"


def test_other_get_returns_404(open_receiver: WebhookReceiver) -> None:
    response = httpx.get(open_receiver.url, timeout=10)

    assert response.status_code == 404
    assert open_receiver.deliveries == []


def test_on_delivery_callback(start_receiver: ReceiverFactory) -> None:
    seen: list[Delivery] = []
    receiver = start_receiver(on_delivery=seen.append)

    post_delivery(receiver.url, {"event": "x"})
    receiver.wait_for(1, timeout=10)

    assert [delivery.json for delivery in seen] == [{"event": "x"}]


def test_failing_callback_keeps_response(start_receiver: ReceiverFactory) -> None:
    def fail(delivery: Delivery) -> None:
        raise RuntimeError("callback failed")

    receiver = start_receiver(on_delivery=fail)

    response = post_delivery(receiver.url, {"event": "x"})

    assert response.status_code == 200
    assert len(receiver.deliveries) == 1


# --- lifecycle ---


def test_receiver_lifecycle() -> None:
    receiver = WebhookReceiver()

    with pytest.raises(RuntimeError, match="not running"):
        _ = receiver.url

    with receiver:
        assert receiver.url == f"http://127.0.0.1:{receiver.port}/hook"
        with pytest.raises(RuntimeError, match="already running"):
            receiver.start()
        assert post_delivery(receiver.url, {}).status_code == 200

    receiver.stop()
    with pytest.raises(RuntimeError, match="not running"):
        _ = receiver.port


# --- printed summary ---


def make_delivery(*, payload: Any, headers: dict[str, str], signature_valid: bool | None) -> Delivery:
    return Delivery(
        path="/hook",
        headers=headers,
        body=json.dumps(payload).encode(),
        json=payload,
        event="reply.detected",
        delivery_id="d-1",
        signature_valid=signature_valid,
        status_code=200,
        time=0.0,
    )


@pytest.mark.parametrize(
    ("headers", "signature_valid", "expected"),
    [
        ({"x-replytracker-signature": "t=1,v1=ab"}, True, "signature valid"),
        ({"x-replytracker-signature": "t=1,v1=ab"}, False, "signature INVALID"),
        ({}, False, "unsigned"),
        ({}, None, "unsigned"),
        ({"x-replytracker-signature": "t=1,v1=ab"}, None, "signature not checked"),
    ],
)
def test_describe_signature_states(headers: dict[str, str], signature_valid: bool | None, expected: str) -> None:
    line = describe_delivery(make_delivery(payload={}, headers=headers, signature_valid=signature_valid))

    assert line == f"reply.detected delivery d-1: {expected}"


def test_describe_shortens_reply_text() -> None:
    line = describe_delivery(make_delivery(payload=reply_payload(), headers={}, signature_valid=None))

    assert line == (
        'reply.detected delivery d-1 for sales/ada-intro: unsigned, reply from Ada Lovelace: '
        f'"{LONG_TEXT[:40]}…"'
    )
    assert LONG_TEXT not in line


def test_describe_keeps_short_text_whole() -> None:
    payload = reply_payload(text="Yes,\nlet's talk.", sender_name=None)

    line = describe_delivery(make_delivery(payload=payload, headers={}, signature_valid=None))

    assert line.endswith(': unsigned: "Yes, let\'s talk."')
    assert "\n" not in line


# --- run_receiver in another process ---


def read_line(process: subprocess.Popen[str], *, timeout: float) -> str:
    """Read one line of the process's stdout, raising TimeoutError after ``timeout`` seconds."""
    assert process.stdout is not None
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        if not selector.select(timeout):
            raise TimeoutError(f"no output from the process within {timeout} s")
    return process.stdout.readline()


def test_run_receiver_prints_deliveries() -> None:
    code = (
        "from replytracker.receiver import run_receiver\n"
        f"run_receiver(host='127.0.0.1', port=0, secret={SECRET!r})\n"
    )
    process = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        banner = read_line(process, timeout=20)
        assert banner.startswith("webhook receiver listening on http://127.0.0.1:")
        url = banner.split(" on ", 1)[1].strip()
        assert url.endswith("/hook")

        post_delivery(url, reply_payload(), secret=SECRET, delivery_id="d-9")
        valid_line = read_line(process, timeout=20)
        post_delivery(url, reply_payload(), secret="other-secret", delivery_id="d-10")
        invalid_line = read_line(process, timeout=20)

        assert valid_line.startswith("reply.detected delivery d-9 for sales/ada-intro: signature valid")
        assert "reply from Ada Lovelace" in valid_line
        assert LONG_TEXT not in valid_line
        assert "signature INVALID" in invalid_line

        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=20) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=20)
        assert process.stdout is not None
        process.stdout.close()

"""A webhook receiver that records the operator's deliveries, for tests and the demo.

``WebhookReceiver`` accepts POSTs on any path from a background thread,
checks each signature when it has the secret, and responds 200 unless a test
queued other status codes with ``respond_with``. ``run_receiver`` serves one
in the foreground and prints one line per delivery.
"""

from __future__ import annotations

import json
import logging
import signal
import socket
import socketserver
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType
from typing import Any
from urllib.parse import urlsplit

from replytracker.signing import DELIVERY_HEADER, EVENT_HEADER, SIGNATURE_HEADER, verify

logger = logging.getLogger(__name__)

DELIVERIES_PATH = "/_deliveries"
HOOK_PATH = "/hook"
MAX_REQUEST_BODY_BYTES = 1024 * 1024
# Interval at which the serving thread checks whether stop() was called, so stop() takes up to this long.
SERVE_POLL_SECONDS = 0.05
TEXT_PREVIEW_CHARACTERS = 40

@dataclass(frozen=True)
class Delivery:
    """One webhook request received, with the status code of the response."""

    path: str
    headers: dict[str, str]  # names in lower case
    body: bytes
    json: Any  # the parsed body, or None when it is not JSON
    event: str | None
    delivery_id: str | None
    signature_valid: bool | None  # None when the receiver has no secret
    status_code: int
    time: float  # time.time() when the request arrived

    def to_json(self) -> dict[str, Any]:
        """Return the delivery as a JSON-serializable dict, with the body decoded as UTF-8 text."""
        return {
            "path": self.path,
            "headers": self.headers,
            "body": self.body.decode("utf-8", errors="replace"),
            "json": self.json,
            "event": self.event,
            "deliveryId": self.delivery_id,
            "signatureValid": self.signature_valid,
            "statusCode": self.status_code,
            "time": self.time,
        }


def _single_line(text: str) -> str:
    return " ".join(text.split())


def describe_delivery(delivery: Delivery) -> str:
    """Summarize a delivery in one line, with at most the first 40 characters of the reply's text.

    The tracker and the reply are read from the payload's ``tracker`` object
    (``namespace``, ``name``) and ``reply`` object (``sender.name``, ``text``).
    The full text is left out on purpose, because a reply is private
    correspondence and the line may end up in logs.
    """
    if delivery.signature_valid is True:
        signature = "signature valid"
    elif SIGNATURE_HEADER.lower() not in delivery.headers:
        signature = "unsigned"
    elif delivery.signature_valid is False:
        signature = "signature INVALID"
    else:
        signature = "signature not checked"

    line = f"{delivery.event or '-'} delivery {delivery.delivery_id or '-'}"
    payload = delivery.json if isinstance(delivery.json, dict) else {}
    tracker = payload.get("tracker")
    if isinstance(tracker, dict) and tracker.get("name"):
        line += f" for {tracker.get('namespace') or '-'}/{tracker['name']}"
    line += f": {signature}"

    reply = payload.get("reply")
    if isinstance(reply, dict):
        sender = reply.get("sender")
        sender_name = sender.get("name") if isinstance(sender, dict) else None
        if sender_name is not None:
            line += f", reply from {_single_line(str(sender_name))}"
        text = reply.get("text")
        if isinstance(text, str):
            preview = _single_line(text)
            if len(preview) > TEXT_PREVIEW_CHARACTERS:
                preview = preview[:TEXT_PREVIEW_CHARACTERS] + "…"
            line += f': "{preview}"'
    return line


class WebhookReceiver:
    """Records webhook deliveries over HTTP from a background thread.

    Use it as a context manager, or call ``start`` and ``stop``. Every POST,
    on any path, is recorded as a ``Delivery``. ``GET /_deliveries`` returns
    them as JSON for clients in another process. ``on_delivery`` is called
    from the server's thread after each delivery has been recorded.
    """

    def __init__(
        self,
        *,
        secret: str | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        on_delivery: Callable[[Delivery], None] | None = None,
    ) -> None:
        self._secret = secret
        self._host = host
        self._requested_port = port
        self._on_delivery = on_delivery
        self._condition = threading.Condition()
        self._deliveries: list[Delivery] = []
        self._queued_status_codes: deque[int] = deque()
        self._server: _ReceiverHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        """The bound port, available once started (RuntimeError before ``start``)."""
        if self._server is None:
            raise RuntimeError("the webhook receiver is not running, call start() first")
        return int(self._server.server_address[1])

    @property
    def base_url(self) -> str:
        """The receiver's root URL, such as ``http://127.0.0.1:8080``."""
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"http://{host}:{self.port}"

    @property
    def url(self) -> str:
        """A URL to configure as the webhook target, such as ``http://127.0.0.1:8080/hook``."""
        return f"{self.base_url}{HOOK_PATH}"

    @property
    def deliveries(self) -> list[Delivery]:
        """A copy of the deliveries received so far, oldest first."""
        with self._condition:
            return list(self._deliveries)

    def respond_with(self, *codes: int) -> None:
        """Queue status codes for the next deliveries, one each, in order. Later deliveries get 200 again."""
        for code in codes:
            if not 100 <= code <= 599:
                raise ValueError(f"status code must be from 100 to 599, got {code}")
        with self._condition:
            self._queued_status_codes.extend(codes)

    def clear(self) -> None:
        """Forget the recorded deliveries and the queued status codes."""
        with self._condition:
            self._deliveries.clear()
            self._queued_status_codes.clear()

    def wait_for(self, count: int, *, timeout: float) -> list[Delivery]:
        """Wait until at least ``count`` deliveries arrived and return all of them.

        Raises TimeoutError when fewer arrived within ``timeout`` seconds.
        """
        if count < 0:
            raise ValueError(f"count must be 0 or more, got {count}")
        if timeout < 0:
            raise ValueError(f"timeout must be 0 or more seconds, got {timeout}")
        with self._condition:
            arrived = self._condition.wait_for(lambda: len(self._deliveries) >= count, timeout=timeout)
            if not arrived:
                raise TimeoutError(
                    f"expected at least {count} webhook deliveries within {timeout:g} s, "
                    f"received {len(self._deliveries)}"
                )
            return list(self._deliveries)

    def start(self) -> None:
        """Bind the port and start serving. Raise RuntimeError when already running."""
        if self._server is not None:
            raise RuntimeError(f"the webhook receiver is already running at {self.base_url}")
        server = _ReceiverHTTPServer((self._host, self._requested_port), self)
        thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": SERVE_POLL_SECONDS},
            name=f"webhook-receiver-{server.server_address[1]}",
            daemon=True,
        )
        self._server = server
        self._thread = thread
        thread.start()
        logger.info("webhook receiver listening on %s", self.url)

    def stop(self) -> None:
        """Stop serving and close the port. Do nothing when not running."""
        server, thread = self._server, self._thread
        if server is None:
            return
        url = self.url
        server.shutdown()
        server.server_close()
        if thread is not None:
            thread.join(timeout=5)
        self._server = None
        self._thread = None
        logger.info("webhook receiver at %s stopped", url)

    def __enter__(self) -> WebhookReceiver:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def record(self, *, path: str, headers: Mapping[str, str], body: bytes) -> Delivery:
        """Record one delivery and return it. The server calls this for every POST.

        ``headers`` must have lower-case names. The returned ``status_code`` is
        the one to respond with.
        """
        received_at = time.time()

        signature_valid: bool | None = None
        if self._secret is not None:
            signature_header = headers.get(SIGNATURE_HEADER.lower())
            signature_valid = signature_header is not None and verify(
                signature_header, body, secret=self._secret
            )

        try:
            parsed_body: Any = json.loads(body) if body else None
        except (UnicodeDecodeError, json.JSONDecodeError):
            parsed_body = None

        with self._condition:
            status_code = self._queued_status_codes.popleft() if self._queued_status_codes else 200
            delivery = Delivery(
                path=path,
                headers=dict(headers),
                body=body,
                json=parsed_body,
                event=headers.get(EVENT_HEADER.lower()),
                delivery_id=headers.get(DELIVERY_HEADER.lower()),
                signature_valid=signature_valid,
                status_code=status_code,
                time=received_at,
            )
            self._deliveries.append(delivery)
            self._condition.notify_all()

        logger.debug(
            "received delivery %s of event %s on %s: signature valid %s, responding %d",
            delivery.delivery_id,
            delivery.event,
            path,
            signature_valid,
            status_code,
        )
        if self._on_delivery is not None:
            try:
                self._on_delivery(delivery)
            except Exception:
                # The callback must not change the response, so its failure is only logged.
                logger.exception("on_delivery callback failed for delivery %s", delivery.delivery_id)
        return delivery


class _ReceiverHTTPServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], receiver: WebhookReceiver) -> None:
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.receiver = receiver
        super().__init__(address, _ReceiverRequestHandler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind looks the host name up with socket.getfqdn,
        # which can wait on DNS. The receiver has no use for the name.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)


class _ReceiverRequestHandler(BaseHTTPRequestHandler):
    server: _ReceiverHTTPServer
    # Seconds a client may stay silent mid-request before its connection is dropped.
    timeout = 30

    def do_POST(self) -> None:
        body = self._read_body()
        if body is None:
            return
        headers = {name.lower(): value for name, value in self.headers.items()}
        delivery = self.server.receiver.record(path=urlsplit(self.path).path, headers=headers, body=body)
        self._send_json(delivery.status_code, {"received": delivery.status_code < 300})

    def do_GET(self) -> None:
        path = urlsplit(self.path).path.rstrip("/")
        if path != DELIVERIES_PATH:
            self._send_json(HTTPStatus.NOT_FOUND, {"error": f"unknown path {path}, POST deliveries to any path"})
            return
        deliveries = [delivery.to_json() for delivery in self.server.receiver.deliveries]
        self._send_json(HTTPStatus.OK, deliveries)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        logger.debug("webhook receiver %s: " + format, self.address_string(), *args)

    def _read_body(self) -> bytes | None:
        """Return the request body, or None after sending an error response for an invalid length."""
        length_header = self.headers.get("Content-Length", "0")
        try:
            length = int(length_header)
        except ValueError:
            length = -1
        if length < 0:
            self._send_json(HTTPStatus.BAD_REQUEST, {"error": f"invalid Content-Length {length_header!r}"})
            return None
        if length > MAX_REQUEST_BODY_BYTES:
            self._send_json(
                HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                {"error": f"request body of {length} bytes exceeds {MAX_REQUEST_BODY_BYTES} bytes"},
            )
            return None
        return self.rfile.read(length) if length else b""

    def _send_json(self, status: int, payload: Any) -> None:
        body = json.dumps(payload).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError) as error:
            logger.debug("client %s went away before the response was sent: %s", self.address_string(), error)


def run_receiver(*, host: str = "127.0.0.1", port: int = 0, secret: str | None = None) -> None:
    """Serve a webhook receiver until SIGINT or SIGTERM, printing one line per delivery.

    Prints ``webhook receiver listening on <url>`` to stdout once the port is
    bound. Must run in the main thread, because it installs signal handlers.
    The previous handlers are restored on return.
    """

    def print_delivery(delivery: Delivery) -> None:
        print(describe_delivery(delivery), flush=True)

    receiver = WebhookReceiver(secret=secret, host=host, port=port, on_delivery=print_delivery)
    stop_requested = threading.Event()

    def request_stop(signal_number: int, frame: FrameType | None) -> None:
        logger.info("webhook receiver received signal %d, stopping", signal_number)
        stop_requested.set()

    previous_handlers = {
        signal_number: signal.signal(signal_number, request_stop)
        for signal_number in (signal.SIGINT, signal.SIGTERM)
    }
    try:
        with receiver:
            print(f"webhook receiver listening on {receiver.url}", flush=True)
            # Wake once a second, so stopping never depends on a signal interrupting the wait.
            while not stop_requested.wait(timeout=1.0):
                pass
    finally:
        for signal_number, handler in previous_handlers.items():
            signal.signal(signal_number, handler)

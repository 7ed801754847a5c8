"""The signature verification examples in docs/examples accept real signatures and reject tampering."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from replytracker import signing

EXAMPLES = Path(__file__).resolve().parents[2] / "docs" / "examples"
BODY = b'{"event":"reply.detected","deliveryId":"d-1","reply":{"text":"Sure"}}'
SECRET = "example-key"


def commands() -> list[list[str]]:
    found = [[sys.executable, str(EXAMPLES / "verify_webhook.py")]]
    node = shutil.which("node")
    assert node is not None, "node is needed to test the Node.js example"
    found.append([node, str(EXAMPLES / "verify-webhook.mjs")])
    return found


@pytest.fixture(params=["python", "node"])
def verifier(request) -> list[str]:
    return commands()[0 if request.param == "python" else 1]


def run(command: list[str], header: str, body: bytes, secret: str = SECRET) -> int:
    return subprocess.run([*command, header, secret], input=body, capture_output=True, timeout=30).returncode


def test_accepts_operator_signature(verifier):
    header = signing.sign(BODY, secret=SECRET, timestamp=int(time.time()))
    assert run(verifier, header, BODY) == 0


def test_rejects_changed_body(verifier):
    header = signing.sign(BODY, secret=SECRET, timestamp=int(time.time()))
    assert run(verifier, header, BODY.replace(b"Sure", b"Nope")) == 1


def test_rejects_wrong_key(verifier):
    header = signing.sign(BODY, secret=SECRET, timestamp=int(time.time()))
    assert run(verifier, header, BODY, secret="other-key") == 1


def test_rejects_old_timestamp(verifier):
    header = signing.sign(BODY, secret=SECRET, timestamp=int(time.time()) - 3600)
    assert run(verifier, header, BODY) == 1


def test_rejects_malformed_header(verifier):
    assert run(verifier, "v1=abc", BODY) == 1

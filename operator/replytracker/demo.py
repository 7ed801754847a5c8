"""The local demo: a real control plane, the fake provider, a webhook receiver, the operator and a tracker.

Everything runs on 127.0.0.1 and stops when the demo ends. The terminal shows
the tracker going from Tracking to Replied and the signed webhook arriving.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from replytracker.controlplane import ControlPlane, find_assets, free_port
from replytracker.fake_provider import FakeProvider, FakeProviderServer
from replytracker.receiver import Delivery, WebhookReceiver, describe_delivery

NAMESPACE = "demo"
ACCOUNT = "demo-account"
THREAD = "thread-with-bob"
API_KEY = "demo-key"
API_SECRET = "demo-secret"
SIGNING_KEY = "demo-signing-key"
# 0.002 hours is 7.2 seconds, so the demo shows a few checks before the reply.
FREQUENCY_HOURS = 0.002
WAIT_SECONDS = 120


def _say(text: str) -> None:
    print(f"\n==> {text}", flush=True)


def _crd_path() -> Path:
    return Path(__file__).resolve().parents[2] / "crds" / "messagetracker.yaml"


def _tracker_manifest(webhook_url: str) -> dict[str, Any]:
    return {
        "apiVersion": "replytracker.dev/v1alpha1",
        "kind": "MessageTracker",
        "metadata": {"name": "bob", "namespace": NAMESPACE},
        "spec": {
            "accountId": ACCOUNT,
            "threadId": THREAD,
            "profileId": "bob-profile",
            "messageId": "msg-hello",
            "frequency": FREQUENCY_HOURS,
            "webhook": {"url": webhook_url, "secretRef": {"name": "webhook-signing", "key": "key"}},
            "credentialsSecretRef": {"name": "welink-credentials"},
        },
    }


def _status(plane: ControlPlane) -> dict[str, Any]:
    result = plane.kubectl("get", "mt", "bob", "-n", NAMESPACE, "-o", "json", check=False)
    if result.returncode != 0:
        return {}
    return json.loads(result.stdout).get("status") or {}


def _watch(plane: ControlPlane, *, until: Callable[[dict[str, Any]], bool], what: str) -> dict[str, Any]:
    """Print the tracker's row whenever it changes, until ``until`` returns True or WAIT_SECONDS pass."""
    deadline = time.monotonic() + WAIT_SECONDS
    shown: tuple[Any, ...] | None = None
    while True:
        status = _status(plane)
        seen = (status.get("phase"), status.get("checkCount"), status.get("webhook"))
        if seen != shown:
            table = plane.kubectl("get", "mt", "bob", "-n", NAMESPACE, check=False).stdout.splitlines()
            if len(table) == 2:
                if shown is None:
                    print(table[0], flush=True)
                print(f"{table[1]}   checks: {status.get('checkCount', 0)}", flush=True)
            shown = seen
        if until(status):
            return status
        if time.monotonic() > deadline:
            raise TimeoutError(f"the demo waited {WAIT_SECONDS} s for {what}; last status: {json.dumps(status)}")
        time.sleep(0.5)


def _start_operator(
    plane: ControlPlane, provider: FakeProviderServer, log_path: Path, *, metrics_port: int
) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "KUBECONFIG": str(plane.kubeconfig),
        "REPLYTRACKER_API_URL": provider.api_url,
        "REPLYTRACKER_MIN_FREQUENCY_SECONDS": "5",
        "REPLYTRACKER_METRICS_ADDRESS": "127.0.0.1",
        "REPLYTRACKER_METRICS_PORT": str(metrics_port),
    }
    log = open(log_path, "ab")
    try:
        return subprocess.Popen(
            [sys.executable, "-m", "replytracker.cli", "run", "--namespace", NAMESPACE],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    finally:
        log.close()


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=15)


def run_demo(*, keep_running: bool = False) -> int:
    """Run the demo; return 0 when the reply was detected and the webhook verified."""
    _say("Finding or building kube-apiserver, etcd and kubectl (the first build takes several minutes)")
    assets = find_assets()
    print(f"binaries: {assets}", flush=True)
    workdir = Path(tempfile.mkdtemp(prefix="replytracker-demo-"))
    try:
        _say("Starting etcd and kube-apiserver on 127.0.0.1")
        with ControlPlane(assets=assets, workdir=workdir) as plane:
            return _play(plane, workdir=workdir, keep_running=keep_running)
    except TimeoutError as exc:
        print(f"demo failed: {exc}", file=sys.stderr)
        log = workdir / "operator.log"
        if log.exists():
            print("last lines of the operator log:", file=sys.stderr)
            print("\n".join(log.read_text(errors="replace").splitlines()[-30:]), file=sys.stderr)
        return 1
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _play(plane: ControlPlane, *, workdir: Path, keep_running: bool) -> int:
    """Run the demo's steps on a started control plane; the operator is stopped before returning."""
    delivered = threading.Event()
    verified: list[Delivery] = []

    def on_delivery(delivery: Delivery) -> None:
        print(f"[webhook receiver] {describe_delivery(delivery)}", flush=True)
        if delivery.signature_valid:
            verified.append(delivery)
            delivered.set()

    print(f"kubeconfig: {plane.kubeconfig}  (export KUBECONFIG=... to look around while it runs)")
    _say("Installing the MessageTracker CRD")
    print(plane.kubectl("apply", "-f", str(_crd_path())).stdout.strip())
    plane.kubectl("wait", "--for=condition=Established", "crd/messagetrackers.replytracker.dev", "--timeout=60s")

    fake = FakeProvider(api_key=API_KEY, api_secret=API_SECRET)
    fake.add_message(
        ACCOUNT,
        THREAD,
        {
            "message_id": "msg-hello",
            "sender_profile_id": "me",
            "sender_name": "Demo Sender",
            "is_sender": True,
            "text": "Hi Bob, do you have time for a call next week?",
            "created_at": int(time.time() * 1000) - 60_000,
        },
    )
    operator: subprocess.Popen[bytes] | None = None
    with FakeProviderServer(fake) as provider, WebhookReceiver(secret=SIGNING_KEY, on_delivery=on_delivery) as receiver:
        try:
            _say(f"Fake provider at {provider.api_url}, webhook receiver at {receiver.url}")
            _say(f"Creating namespace {NAMESPACE} with the provider credentials and the webhook signing key")
            plane.kubectl("create", "namespace", NAMESPACE)
            plane.kubectl(
                "create", "secret", "generic", "welink-credentials", "-n", NAMESPACE,
                f"--from-literal=apiKey={API_KEY}", f"--from-literal=apiSecret={API_SECRET}",
            )
            plane.kubectl(
                "create", "secret", "generic", "webhook-signing", "-n", NAMESPACE, f"--from-literal=key={SIGNING_KEY}"
            )

            metrics_port = free_port()
            _say(
                f"Starting the operator (log: {workdir / 'operator.log'}, "
                f"metrics: http://127.0.0.1:{metrics_port}/metrics)"
            )
            operator = _start_operator(plane, provider, workdir / "operator.log", metrics_port=metrics_port)

            manifest = _tracker_manifest(receiver.url)
            _say("kubectl apply -f - <<EOF")
            print(yaml.safe_dump(manifest, sort_keys=False).rstrip())
            print("EOF")
            print(plane.kubectl("apply", "-f", "-", input=json.dumps(manifest)).stdout.strip())

            _say("Waiting for the first checks (frequency 0.002 h, about every 7 s)")
            _watch(plane, until=lambda s: s.get("checkCount", 0) >= 2, what="two checks")

            _say("Bob replies: the fake provider now has a new message in the thread")
            fake.add_message(
                ACCOUNT,
                THREAD,
                {
                    "message_id": "msg-reply",
                    "sender_profile_id": "bob-profile",
                    "sender_name": "Bob",
                    "is_sender": False,
                    "text": "Sure, Tuesday at 10 works for me.",
                    "created_at": int(time.time() * 1000),
                },
            )
            status = _watch(
                plane,
                until=lambda s: bool((s.get("webhook") or {}).get("deliveredTime")),
                what="the reply and the webhook delivery",
            )
            if not delivered.wait(timeout=10):
                print("the webhook receiver got no delivery with a valid signature", file=sys.stderr)
                return 1

            _say("Tracker status")
            print(json.dumps(status, indent=2))
            _say(f"Done: phase {status.get('phase')}, webhook {verified[0].delivery_id} received with a valid signature")
            if keep_running:
                _say("Still running; press Ctrl-C to stop")
                try:
                    while operator.poll() is None:
                        time.sleep(1)
                except KeyboardInterrupt:
                    pass
            return 0
        finally:
            if operator is not None:
                _stop(operator)

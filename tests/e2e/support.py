"""Helpers for end-to-end tests: the operator as a subprocess, and waiting on trackers."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from replytracker.controlplane import ControlPlane

T = TypeVar("T")

# Provider account that exists in the e2e fake provider from the start.
ACCOUNT = "acc-1"

# Signing key of the webhook Secret that the e2e fixtures create.
WEBHOOK_SECRET = "e2e-signing-key"


def wait_for(check: Callable[[], T | None], *, timeout: float, what: str, interval: float = 0.2) -> T:
    """Poll ``check`` until it returns a truthy value; fail with ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        last = check()
        if last:
            return last
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)


def get_tracker(plane: ControlPlane, namespace: str, name: str) -> dict[str, Any]:
    result = plane.kubectl("get", "messagetracker", name, "-n", namespace, "-o", "json")
    return json.loads(result.stdout)


def tracker_status(plane: ControlPlane, namespace: str, name: str) -> dict[str, Any]:
    return get_tracker(plane, namespace, name).get("status") or {}


def condition(status: dict[str, Any], type: str) -> dict[str, Any] | None:
    return next((c for c in status.get("conditions", []) if c.get("type") == type), None)


def wait_for_status(
    plane: ControlPlane,
    namespace: str,
    name: str,
    predicate: Callable[[dict[str, Any]], bool],
    *,
    timeout: float = 30,
    what: str,
) -> dict[str, Any]:
    """Wait until the tracker's status satisfies ``predicate``; return that status."""

    def check() -> dict[str, Any] | None:
        status = tracker_status(plane, namespace, name)
        return status if predicate(status) else None

    try:
        return wait_for(check, timeout=timeout, what=what)
    except AssertionError as exc:
        raise AssertionError(f"{exc}; last status: {json.dumps(tracker_status(plane, namespace, name))}") from None


def apply(plane: ControlPlane, manifest: dict[str, Any] | str, *, check: bool = True) -> subprocess.CompletedProcess[str]:
    text = manifest if isinstance(manifest, str) else json.dumps(manifest)
    return plane.kubectl("apply", "-f", "-", input=text, check=check)


def tracker_manifest(name: str, namespace: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "replytracker.dev/v1alpha1",
        "kind": "MessageTracker",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }


class OperatorProcess:
    """``replytracker run`` in a subprocess, watching one namespace, with its log in a file.

    With ``all_namespaces`` it runs with ``--all-namespaces`` instead, as the
    Deployment in deploy/ does.
    """

    def __init__(
        self,
        *,
        kubeconfig: Path,
        namespace: str,
        env: dict[str, str],
        log_path: Path,
        all_namespaces: bool = False,
        liveness: str | None = None,
    ) -> None:
        self._kubeconfig = kubeconfig
        self._namespace = namespace
        self._all_namespaces = all_namespaces
        self._extra_args = [f"--liveness={liveness}"] if liveness else []
        self._env = env
        self.log_path = log_path
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = {**os.environ, **self._env, "KUBECONFIG": str(self._kubeconfig)}
        scope = ["--all-namespaces"] if self._all_namespaces else ["--namespace", self._namespace]
        log = open(self.log_path, "ab")
        self._process = subprocess.Popen(
            [sys.executable, "-m", "replytracker.cli", "run", *scope, *self._extra_args, "--verbose"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()

    def stop(self, *, kill: bool = False, timeout: float = 15) -> None:
        process = self._process
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=timeout)

    def restart(self) -> None:
        self.stop()
        self.start()

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

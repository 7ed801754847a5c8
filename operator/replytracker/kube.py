"""Kubernetes API access beyond what kopf does: status writes and Secret reads.

The official client is synchronous, so each call runs in a worker thread.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import os
import socket
from datetime import datetime, timezone
from typing import Any

import kubernetes
from kubernetes.client.rest import ApiException

from replytracker.models import GROUP, PLURAL, VERSION


class SecretProblem(Exception):
    """A referenced Secret or key cannot be used; ``reason`` is the condition reason."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason
        self.message = message


def load_config() -> kubernetes.client.ApiClient:
    """Return an API client for the in-cluster config, else the current kubeconfig context."""
    try:
        kubernetes.config.load_incluster_config()
    except kubernetes.config.ConfigException:
        kubernetes.config.load_kube_config()
    return kubernetes.client.ApiClient()


class KubeClient:
    """Status writes and Secret reads for trackers, each in the tracker's own namespace."""

    def __init__(self, api_client: kubernetes.client.ApiClient) -> None:
        self._custom = kubernetes.client.CustomObjectsApi(api_client)
        self._core = kubernetes.client.CoreV1Api(api_client)

    async def patch_status(self, *, namespace: str, name: str, status: dict[str, Any]) -> bool:
        """Merge-patch the status subresource; return False when the object is gone."""

        def call() -> None:
            self._custom.patch_namespaced_custom_object_status(
                GROUP, VERSION, namespace, PLURAL, name, {"status": status}
            )

        try:
            await asyncio.to_thread(call)
        except ApiException as exc:
            if exc.status == 404:
                return False
            raise
        return True

    async def read_secret_key(self, *, namespace: str, name: str, key: str, field: str) -> str:
        """Return one decoded key of a Secret in ``namespace``.

        ``field`` names the spec field that refers to the Secret, for the error message.
        Raises SecretProblem when the Secret or key is missing or unreadable.
        """
        try:
            secret = await asyncio.to_thread(self._core.read_namespaced_secret, name, namespace)
        except ApiException as exc:
            if exc.status == 404:
                raise SecretProblem(
                    "SecretNotFound", f"Secret {namespace}/{name} named by {field} was not found."
                ) from exc
            if exc.status == 403:
                raise SecretProblem(
                    "SecretForbidden",
                    f"The operator may not read Secret {namespace}/{name} named by {field}; check its RBAC.",
                ) from exc
            raise
        data = secret.data or {}
        if key not in data:
            raise SecretProblem(
                "SecretKeyMissing", f"Secret {namespace}/{name} named by {field} has no key {key!r}."
            )
        try:
            return base64.b64decode(data[key]).decode("utf-8").strip()
        except (binascii.Error, UnicodeDecodeError) as exc:
            raise SecretProblem(
                "SecretInvalid", f"Key {key!r} of Secret {namespace}/{name} is not UTF-8 text."
            ) from exc

    async def create_event(
        self, *, namespace: str, name: str, uid: str, type: str, reason: str, message: str
    ) -> None:
        """Create a core/v1 Event about a tracker, as ``kubectl describe`` shows them."""
        now = datetime.now(timezone.utc)
        event = kubernetes.client.CoreV1Event(
            metadata=kubernetes.client.V1ObjectMeta(generate_name=f"{name}.", namespace=namespace),
            involved_object=kubernetes.client.V1ObjectReference(
                api_version=f"{GROUP}/{VERSION}", kind="MessageTracker", name=name, namespace=namespace, uid=uid
            ),
            type=type,
            reason=reason,
            message=message[:1024],
            first_timestamp=now,
            last_timestamp=now,
            count=1,
            source=kubernetes.client.V1EventSource(component="reply-tracker"),
            reporting_component="replytracker.dev/operator",
            reporting_instance=os.environ.get("POD_NAME") or socket.gethostname(),
        )
        await asyncio.to_thread(self._core.create_namespaced_event, namespace, event)

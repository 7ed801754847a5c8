"""Run the e2e suite against a cluster that is already running, such as a kind cluster.

Setting ``REPLYTRACKER_E2E_KUBECONFIG`` to a kubeconfig makes the
``control_plane`` fixture return an ``ExistingCluster`` for that kubeconfig's
current context instead of starting etcd and kube-apiserver. The operator, the
fake provider and the webhook receiver still run on this machine, not in the
cluster, so the cluster's API server must be reachable from here.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

from replytracker.controlplane import ControlPlaneError, find_assets, run_kubectl

KUBECONFIG_VARIABLE = "REPLYTRACKER_E2E_KUBECONFIG"


class ExistingCluster:
    """A running cluster reached through a kubeconfig, used like ``ControlPlane``.

    It offers what the e2e tests use from ``ControlPlane``: ``kubeconfig``,
    ``url``, ``kubectl(...)`` and ``service_account_kubeconfig(...)``. Nothing
    is started or stopped. ``workdir`` receives kubectl's discovery cache, so
    the user's ``~/.kube/cache`` stays untouched.
    """

    def __init__(self, *, kubeconfig: Path, kubectl: Path, workdir: Path) -> None:
        self._kubeconfig = Path(kubeconfig)
        self._kubectl = Path(kubectl)
        self._cache_dir = Path(workdir) / "kubectl-cache"

    @property
    def kubeconfig(self) -> Path:
        """Path of the kubeconfig as given. The tests and the operator use its current context."""
        return self._kubeconfig

    @property
    def url(self) -> str:
        """URL of the API server in the kubeconfig's current context."""
        return str(self._current_cluster()["server"])

    def kubectl(
        self,
        *args: str,
        input: str | None = None,
        check: bool = True,
        timeout: float = 60,
    ) -> subprocess.CompletedProcess[str]:
        """Run kubectl with the kubeconfig and return the result.

        Raises ``KubectlError`` on a non-zero exit status when ``check`` is true.
        ``timeout`` is in seconds.
        """
        return run_kubectl(
            Path(self._kubectl),
            *args,
            kubeconfig=Path(self._kubeconfig),
            cache_dir=Path(self._cache_dir),
            input=input,
            check=check,
            timeout=timeout,
        )

    def service_account_kubeconfig(
        self,
        *,
        namespace: str,
        name: str,
        path: Path,
        duration: str = "24h",
    ) -> Path:
        """Write a kubeconfig that authenticates as one ServiceAccount and return ``path``.

        The cluster entry (server, CA data and TLS settings) is copied from the
        current context. The token comes from the TokenRequest API and expires
        after ``duration``, a Go duration such as ``"24h"``. The file has mode
        0600 because it contains the token.
        """
        token = self.kubectl(
            "create", "token", name, f"--namespace={namespace}", f"--duration={duration}"
        ).stdout.strip()
        if not token:
            raise ControlPlaneError(
                f"kubectl create token returned no token for ServiceAccount {namespace}/{name}"
            )
        user = f"system:serviceaccount:{namespace}:{name}"
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "existing", "cluster": self._current_cluster()}],
            "users": [{"name": user, "user": {"token": token}}],
            "contexts": [
                {"name": "existing", "context": {"cluster": "existing", "user": user, "namespace": namespace}}
            ],
            "current-context": "existing",
        }
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        file_descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(file_descriptor, "w", encoding="utf-8") as file:
            yaml.safe_dump(config, file, sort_keys=False)
        return path

    def check_reachable(self) -> None:
        """Raise ``ControlPlaneError`` unless the API server returns ok from ``/readyz``."""
        result = self.kubectl("get", "--raw=/readyz", check=False, timeout=30)
        if result.returncode != 0 or result.stdout.strip() != "ok":
            raise ControlPlaneError(
                f"the cluster in {KUBECONFIG_VARIABLE}={self._kubeconfig} is not ready: "
                f"kubectl get --raw=/readyz exited with status {result.returncode}: "
                f"{(result.stderr or result.stdout).strip()}"
            )

    def _current_cluster(self) -> dict[str, Any]:
        # --minify keeps only the current context's entries. --flatten turns
        # file references such as certificate-authority into inline data.
        view = self.kubectl("config", "view", "--minify", "--flatten", "--output=json")
        clusters = json.loads(view.stdout).get("clusters") or []
        if not clusters:
            raise ControlPlaneError(f"{self._kubeconfig} has no cluster in its current context")
        return dict(clusters[0]["cluster"])


def find_kubectl() -> Path:
    """Return the kubectl on PATH, or else the one that ``find_assets`` finds or builds."""
    on_path = shutil.which("kubectl")
    if on_path:
        return Path(on_path)
    return find_assets() / "kubectl"


def existing_cluster_from_environment(*, workdir: Path) -> ExistingCluster | None:
    """Return the cluster named by ``REPLYTRACKER_E2E_KUBECONFIG``, or None when it is unset or empty.

    Raises ``ControlPlaneError`` when the file is missing or the API server is not ready.
    """
    value = os.environ.get(KUBECONFIG_VARIABLE, "").strip()
    if not value:
        return None
    kubeconfig = Path(value).expanduser()
    if not kubeconfig.is_file():
        raise ControlPlaneError(
            f"{KUBECONFIG_VARIABLE}={value} is not a file; set it to a kubeconfig, "
            "or unset it to start a local control plane"
        )
    cluster = ExistingCluster(kubeconfig=kubeconfig, kubectl=find_kubectl(), workdir=workdir)
    cluster.check_reachable()
    return cluster

"""The local control plane: version, namespaces, ServiceAccount tokens, start and stop."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml

from replytracker.controlplane import (
    BINARIES,
    ControlPlane,
    ControlPlaneError,
    KubectlError,
    find_assets,
)

pytestmark = pytest.mark.e2e


def test_server_version_is_1_33(control_plane: ControlPlane) -> None:
    result = control_plane.kubectl("version", "--output=json")
    server = json.loads(result.stdout)["serverVersion"]

    assert server["major"] == "1"
    assert server["minor"] == "33"
    assert server["gitVersion"].startswith("v1.33.")


def test_url_is_loopback_https(control_plane: ControlPlane) -> None:
    assert control_plane.url.startswith("https://127.0.0.1:")


def test_admin_kubeconfig_verifies_serving_certificate(control_plane: ControlPlane) -> None:
    config = yaml.safe_load(control_plane.kubeconfig.read_text())
    cluster = config["clusters"][0]["cluster"]

    assert cluster["server"] == control_plane.url
    assert cluster["certificate-authority-data"]
    assert "insecure-skip-tls-verify" not in cluster
    assert control_plane.kubeconfig.stat().st_mode & 0o077 == 0


def test_admin_is_cluster_admin(control_plane: ControlPlane) -> None:
    whoami = json.loads(control_plane.kubectl("auth", "whoami", "--output=json").stdout)
    can_i = control_plane.kubectl("auth", "can-i", "*", "*", "--all-namespaces")

    assert "system:masters" in whoami["status"]["userInfo"]["groups"]
    assert can_i.stdout.strip() == "yes"


def test_namespace_fixture_creates_active_namespace(
    control_plane: ControlPlane, namespace: str
) -> None:
    phase = control_plane.kubectl(
        "get", "namespace", namespace, "--output=jsonpath={.status.phase}"
    ).stdout

    assert namespace.startswith("rt-")
    assert phase == "Active"


def test_kubectl_error_contains_stderr(control_plane: ControlPlane, namespace: str) -> None:
    with pytest.raises(KubectlError, match="NotFound") as raised:
        control_plane.kubectl("get", "configmap", "missing", f"--namespace={namespace}")

    assert raised.value.result.returncode != 0


def test_kubectl_without_check_returns_failure(
    control_plane: ControlPlane, namespace: str
) -> None:
    result = control_plane.kubectl(
        "get", "configmap", "missing", f"--namespace={namespace}", check=False
    )

    assert result.returncode != 0
    assert "NotFound" in result.stderr


def test_kubectl_passes_input(control_plane: ControlPlane, namespace: str) -> None:
    manifest = json.dumps(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "from-stdin", "namespace": namespace},
            "data": {"key": "value"},
        }
    )
    control_plane.kubectl("apply", "--filename=-", input=manifest)
    value = control_plane.kubectl(
        "get", "configmap", "from-stdin", f"--namespace={namespace}",
        "--output=jsonpath={.data.key}",
    ).stdout

    assert value == "value"


def test_service_account_kubeconfig_authenticates(
    control_plane: ControlPlane, namespace: str, tmp_path: Path
) -> None:
    control_plane.kubectl("create", "serviceaccount", "runner", f"--namespace={namespace}")
    path = control_plane.service_account_kubeconfig(
        namespace=namespace, name="runner", path=tmp_path / "runner.kubeconfig"
    )

    whoami = _kubectl_as(control_plane, path, "auth", "whoami", "--output=json")
    apis = _kubectl_as(control_plane, path, "get", "--raw=/apis")

    assert whoami.returncode == 0, whoami.stderr
    user = json.loads(whoami.stdout)["status"]["userInfo"]
    assert user["username"] == f"system:serviceaccount:{namespace}:runner"
    assert apis.returncode == 0, apis.stderr
    assert json.loads(apis.stdout)["kind"] == "APIGroupList"


def test_service_account_without_rbac_is_forbidden(
    control_plane: ControlPlane, namespace: str, tmp_path: Path
) -> None:
    control_plane.kubectl("create", "serviceaccount", "runner", f"--namespace={namespace}")
    path = control_plane.service_account_kubeconfig(
        namespace=namespace, name="runner", path=tmp_path / "runner.kubeconfig"
    )

    secrets = _kubectl_as(control_plane, path, "get", "secrets", "--namespace=kube-system")
    own_pods = _kubectl_as(control_plane, path, "get", "pods")

    assert secrets.returncode != 0
    assert "Forbidden" in secrets.stderr
    assert own_pods.returncode != 0
    assert "Forbidden" in own_pods.stderr


def test_service_account_gets_role_from_rbac(
    control_plane: ControlPlane, namespace: str, tmp_path: Path
) -> None:
    control_plane.kubectl("create", "serviceaccount", "reader", f"--namespace={namespace}")
    control_plane.kubectl(
        "create", "role", "configmap-reader", f"--namespace={namespace}",
        "--verb=get,list", "--resource=configmaps",
    )
    control_plane.kubectl(
        "create", "rolebinding", "reader", f"--namespace={namespace}",
        "--role=configmap-reader", f"--serviceaccount={namespace}:reader",
    )
    path = control_plane.service_account_kubeconfig(
        namespace=namespace, name="reader", path=tmp_path / "reader.kubeconfig"
    )

    configmaps = _kubectl_as(control_plane, path, "get", "configmaps")
    secrets = _kubectl_as(control_plane, path, "get", "secrets")

    assert configmaps.returncode == 0, configmaps.stderr
    assert secrets.returncode != 0
    assert "Forbidden" in secrets.stderr


def test_token_for_missing_service_account_fails(
    control_plane: ControlPlane, namespace: str, tmp_path: Path
) -> None:
    with pytest.raises(KubectlError, match="not found"):
        control_plane.service_account_kubeconfig(
            namespace=namespace, name="missing", path=tmp_path / "missing.kubeconfig"
        )

    assert not (tmp_path / "missing.kubeconfig").exists()


def test_second_control_plane_starts_and_stops(
    control_plane_assets: Path, tmp_path: Path
) -> None:
    plane = ControlPlane(assets=control_plane_assets, workdir=tmp_path)
    plane.start()
    try:
        url = plane.url
        temp_dir = plane._temp_dir
        processes = [plane._etcd, plane._apiserver]
        namespaces = plane.kubectl("get", "namespaces", "--output=name").stdout.split()
    finally:
        plane.stop()

    assert "namespace/default" in namespaces
    assert url.startswith("https://127.0.0.1:")
    assert temp_dir is not None
    assert not temp_dir.exists()
    for process in processes:
        assert process is not None
        assert process.popen.returncode is not None, f"{process.name} still runs"
    assert (tmp_path / "etcd.log").stat().st_size > 0
    assert (tmp_path / "kube-apiserver.log").stat().st_size > 0
    with pytest.raises(ControlPlaneError, match="not running"):
        plane.url
    plane.stop()  # a second stop does nothing


def test_start_failure_shows_apiserver_log(
    control_plane_assets: Path, tmp_path: Path
) -> None:
    plane = ControlPlane(
        assets=control_plane_assets,
        workdir=tmp_path,
        extra_apiserver_args=["--no-such-flag"],
    )

    with pytest.raises(ControlPlaneError) as raised:
        plane.start(timeout=60)

    message = str(raised.value)
    assert "kube-apiserver exited" in message
    assert "unknown flag: --no-such-flag" in message
    assert plane._temp_dir is None
    assert plane._etcd is None


def test_start_timeout_reports_log(control_plane_assets: Path, tmp_path: Path) -> None:
    plane = ControlPlane(assets=control_plane_assets, workdir=tmp_path)

    with pytest.raises(ControlPlaneError, match="timed out") as raised:
        plane.start(timeout=0.2)

    assert "last lines of" in str(raised.value)
    assert plane._temp_dir is None


def test_find_assets_prefers_kubebuilder_assets(
    control_plane_assets: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in BINARIES:
        (tmp_path / name).symlink_to(control_plane_assets / name)
    monkeypatch.setenv("KUBEBUILDER_ASSETS", str(tmp_path))

    assert find_assets() == tmp_path


def test_start_without_binaries_fails(tmp_path: Path) -> None:
    plane = ControlPlane(assets=tmp_path / "empty", workdir=tmp_path)

    with pytest.raises(ControlPlaneError, match="does not contain all of"):
        plane.start()


def _kubectl_as(
    control_plane: ControlPlane, kubeconfig: Path, *args: str
) -> subprocess.CompletedProcess[str]:
    """Run kubectl with another kubeconfig than the admin one, without raising."""
    command = [
        str(control_plane.assets / "kubectl"),
        f"--kubeconfig={kubeconfig}",
        f"--cache-dir={kubeconfig.parent / 'kubectl-cache'}",
        *args,
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)

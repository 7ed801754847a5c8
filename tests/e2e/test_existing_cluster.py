"""REPLYTRACKER_E2E_KUBECONFIG: the suite against a cluster it did not start.

A second local control plane takes the place of a kind cluster. The session's own
control plane is a different API server, so an object that shows up in the
second one was created through the switch.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from existing_cluster import KUBECONFIG_VARIABLE, ExistingCluster, existing_cluster_from_environment

from replytracker.controlplane import ControlPlane, ControlPlaneError, KubectlError, free_port

pytestmark = pytest.mark.e2e

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def other_plane(
    control_plane_assets: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ControlPlane]:
    """A second local control plane that the tests reach only through its kubeconfig."""
    with ControlPlane(assets=control_plane_assets, workdir=tmp_path_factory.mktemp("other-plane")) as plane:
        yield plane


@pytest.fixture
def existing(
    other_plane: ControlPlane, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> ExistingCluster:
    monkeypatch.setenv(KUBECONFIG_VARIABLE, str(other_plane.kubeconfig))
    cluster = existing_cluster_from_environment(workdir=tmp_path)
    assert cluster is not None
    return cluster


def test_unset_variable_returns_none(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(KUBECONFIG_VARIABLE, raising=False)

    assert existing_cluster_from_environment(workdir=tmp_path) is None


def test_missing_kubeconfig_is_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    missing = tmp_path / "no-such.kubeconfig"
    monkeypatch.setenv(KUBECONFIG_VARIABLE, str(missing))

    with pytest.raises(ControlPlaneError, match=f"{KUBECONFIG_VARIABLE}={missing} is not a file"):
        existing_cluster_from_environment(workdir=tmp_path)


def test_unreachable_cluster_is_reported(
    other_plane: ControlPlane, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # other_plane's kubeconfig, pointed at a loopback port that nothing listens on.
    config = yaml.safe_load(other_plane.kubeconfig.read_text())
    config["clusters"][0]["cluster"]["server"] = f"https://127.0.0.1:{free_port()}"
    kubeconfig = tmp_path / "unreachable.kubeconfig"
    kubeconfig.write_text(yaml.safe_dump(config))
    monkeypatch.setenv(KUBECONFIG_VARIABLE, str(kubeconfig))

    with pytest.raises(ControlPlaneError, match="is not ready"):
        existing_cluster_from_environment(workdir=tmp_path)


def test_kubectl_reaches_named_cluster(
    existing: ExistingCluster, other_plane: ControlPlane, control_plane: ControlPlane
) -> None:
    existing.kubectl("create", "namespace", "through-existing")

    seen_by_other = other_plane.kubectl("get", "namespace", "through-existing", check=False)
    seen_by_session = control_plane.kubectl("get", "namespace", "through-existing", check=False)

    assert existing.url == other_plane.url
    assert seen_by_other.returncode == 0, seen_by_other.stderr
    assert seen_by_session.returncode != 0


def test_kubectl_failure_raises(existing: ExistingCluster) -> None:
    with pytest.raises(KubectlError, match="NotFound"):
        existing.kubectl("get", "configmap", "missing", "--namespace=default")


def test_service_account_kubeconfig_authenticates(
    existing: ExistingCluster, other_plane: ControlPlane, tmp_path: Path
) -> None:
    existing.kubectl("create", "namespace", "sa-through-existing")
    existing.kubectl("create", "serviceaccount", "runner", "--namespace=sa-through-existing")
    path = existing.service_account_kubeconfig(
        namespace="sa-through-existing", name="runner", path=tmp_path / "runner.kubeconfig"
    )

    as_runner = ExistingCluster(kubeconfig=path, kubectl=other_plane.assets / "kubectl", workdir=tmp_path)
    whoami = json.loads(as_runner.kubectl("auth", "whoami", "--output=json").stdout)
    secrets = as_runner.kubectl("get", "secrets", check=False)

    assert whoami["status"]["userInfo"]["username"] == "system:serviceaccount:sa-through-existing:runner"
    assert secrets.returncode != 0
    assert "Forbidden" in secrets.stderr
    assert path.stat().st_mode & 0o077 == 0


def test_kind_test_script_runs_suite(other_plane: ControlPlane, tmp_path: Path) -> None:
    """tools/kind/test.sh with a stand-in kind command that hands out other_plane's kubeconfig.

    The script runs one operator test in a separate pytest, whose tracker must
    land in other_plane, and pauses a Deployment of the operator image during
    the run.
    """
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    fake_kind = fake_bin / "kind"
    fake_kind.write_text(
        "#!/bin/sh\n"
        'case "$1 $2" in\n'
        '  "get clusters") echo replytracker ;;\n'
        f'  "get kubeconfig") cat "{other_plane.kubeconfig}" ;;\n'
        '  *) echo "unexpected kind $*" >&2; exit 1 ;;\n'
        "esac\n"
    )
    fake_kind.chmod(0o755)
    other_plane.kubectl("create", "namespace", "in-cluster")
    other_plane.kubectl("create", "deployment", "operator", "--image=reply-tracker:dev", "--namespace=in-cluster")

    result = subprocess.run(
        [
            "bash", str(REPO_ROOT / "tools" / "kind" / "test.sh"),
            "-k", "test_reply_detected_and_webhook_signed",
            "-p", "no:cacheprovider", f"--basetemp={tmp_path / 'inner'}", "-q",
        ],
        cwd=tmp_path,
        env={
            **os.environ,
            "PATH": f"{fake_bin}{os.pathsep}{os.environ['PATH']}",
            "PYTHON_BIN": sys.executable,
        },
        capture_output=True,
        text=True,
        timeout=240,
    )
    # The inner test deletes its trackers when it ends, but its namespace stays
    # Terminating (no kube-controller-manager), which shows where it ran.
    test_namespaces = [
        item["metadata"]["name"]
        for item in json.loads(other_plane.kubectl("get", "namespaces", "--output=json").stdout)["items"]
        if item["metadata"]["name"].startswith("rt-")
    ]
    crd = other_plane.kubectl("get", "crd", "messagetrackers.replytracker.dev", check=False)
    deployment = json.loads(
        other_plane.kubectl("get", "deployment", "operator", "--namespace=in-cluster", "--output=json").stdout
    )

    assert result.returncode == 0, f"tools/kind/test.sh failed:\n{result.stdout}\n{result.stderr}"
    assert "1 passed" in result.stdout
    assert len(test_namespaces) == 1
    assert crd.returncode == 0
    assert "Scaling deployment in-cluster/operator to 0 replicas" in result.stdout
    assert deployment["spec"]["replicas"] == 1
    # Created at generation 1, then scaled to 0 and back.
    assert deployment["metadata"]["generation"] == 3

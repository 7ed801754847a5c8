"""Fixtures for end-to-end tests against a real kube-apiserver and etcd.

One control plane serves the whole session. Each test that needs Kubernetes
objects takes a fresh namespace, because deleted namespaces stay Terminating
without kube-controller-manager, so tests cannot clean up after each other.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from existing_cluster import KUBECONFIG_VARIABLE, ExistingCluster, existing_cluster_from_environment
from support import ACCOUNT, WEBHOOK_SECRET, OperatorProcess

from replytracker.controlplane import ControlPlane, find_assets
from replytracker.fake_provider import FakeProvider, FakeProviderServer
from replytracker.receiver import WebhookReceiver


# --- control plane ----------------------------------------------------------


@pytest.fixture(scope="session")
def control_plane_assets() -> Path:
    """Folder with kube-apiserver, kubectl and etcd, built on the first run on a machine."""
    if os.environ.get(KUBECONFIG_VARIABLE, "").strip():
        pytest.skip(f"starts a local control plane, and {KUBECONFIG_VARIABLE} names a cluster to use instead")
    return find_assets()


@pytest.fixture(scope="session")
def control_plane(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ControlPlane | ExistingCluster]:
    """Running control plane shared by the whole session, with its logs kept in its workdir.

    With REPLYTRACKER_E2E_KUBECONFIG set, this is that cluster instead, and nothing is started.
    """
    workdir = tmp_path_factory.mktemp("control-plane")
    existing = existing_cluster_from_environment(workdir=workdir)
    if existing is not None:
        yield existing
        return
    assets = request.getfixturevalue("control_plane_assets")
    with ControlPlane(assets=assets, workdir=workdir) as plane:
        yield plane


# --- namespaces --------------------------------------------------------------


@pytest.fixture
def namespace(control_plane: ControlPlane) -> Iterator[str]:
    """Name of a new namespace (``rt-`` and six hex digits) for one test.

    The namespace is deleted afterwards without waiting, because without
    kube-controller-manager it stays Terminating. Its trackers are deleted
    first (they have no finalizers, so they go at once): nothing else would
    remove them, and an operator watching all namespaces in a later test
    would otherwise still act on them.
    """
    name = f"rt-{secrets.token_hex(3)}"
    control_plane.kubectl("create", "namespace", name)
    yield name
    # check=False: the CRD may not be installed in tests that never needed it.
    control_plane.kubectl("delete", "messagetrackers", "--all", "-n", name, "--wait=false", check=False)
    control_plane.kubectl("delete", "namespace", name, "--wait=false")


# --- the product under test ---------------------------------------------------

REPO_ROOT = Path(__file__).resolve().parents[2]
WEBHOOK_SECRET_NAME = "webhook-signing"


@pytest.fixture(scope="session")
def crd(control_plane: ControlPlane) -> str:
    """Install the committed CRD once and wait until the API server serves it."""
    control_plane.kubectl("apply", "-f", str(REPO_ROOT / "crds" / "messagetracker.yaml"))
    name = "messagetrackers.replytracker.dev"
    control_plane.kubectl("wait", "--for=condition=Established", f"crd/{name}", "--timeout=60s")
    return name


@pytest.fixture
def provider() -> Iterator[FakeProviderServer]:
    """Fake provider on loopback, accepting the key test-key and the secret test-secret.

    The account ACCOUNT exists from the start, with no threads.
    """
    fake = FakeProvider(api_key="test-key", api_secret="test-secret")
    fake.add_account(ACCOUNT)
    with FakeProviderServer(fake) as server:
        yield server


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    """Webhook receiver on loopback that verifies signatures with WEBHOOK_SECRET."""
    with WebhookReceiver(secret=WEBHOOK_SECRET) as server:
        yield server


@pytest.fixture
def webhook_secret(control_plane: ControlPlane, namespace: str) -> str:
    """Create the signing-key Secret in the test's namespace; return its name."""
    control_plane.kubectl(
        "create", "secret", "generic", WEBHOOK_SECRET_NAME, "-n", namespace, f"--from-literal=key={WEBHOOK_SECRET}"
    )
    return WEBHOOK_SECRET_NAME


@pytest.fixture
def start_operator(
    control_plane: ControlPlane,
    crd: str,
    namespace: str,
    provider: FakeProviderServer,
    tmp_path: Path,
) -> Iterator[Callable[..., OperatorProcess]]:
    """Return a function that starts the operator for the test's namespace.

    Settings are shrunk to seconds so that schedules play out within a test;
    keyword arguments override REPLYTRACKER_* settings by their suffix.
    ``all_namespaces=True`` runs it with ``--all-namespaces`` instead of
    ``--namespace`` and the test's namespace, and ``liveness`` passes a URL
    to ``--liveness``.
    """
    started: list[OperatorProcess] = []

    def start(
        *,
        kubeconfig: Path | None = None,
        all_namespaces: bool = False,
        liveness: str | None = None,
        **overrides: str,
    ) -> OperatorProcess:
        env = {
            "REPLYTRACKER_API_URL": provider.api_url,
            "REPLYTRACKER_API_KEY": "test-key",
            "REPLYTRACKER_API_SECRET": "test-secret",
            "REPLYTRACKER_MIN_FREQUENCY_SECONDS": "1",
            "REPLYTRACKER_WEBHOOK_RETRY_BASE_SECONDS": "0.5",
            "REPLYTRACKER_WEBHOOK_RETRY_MAX_SECONDS": "2",
            "REPLYTRACKER_REQUEST_TIMEOUT_SECONDS": "5",
            "REPLYTRACKER_METRICS_PORT": "0",
            "REPLYTRACKER_RESPONSE_WAIT_SECONDS": "10",
        }
        env.update({f"REPLYTRACKER_{key.upper()}": value for key, value in overrides.items()})
        process = OperatorProcess(
            kubeconfig=kubeconfig or control_plane.kubeconfig,
            namespace=namespace,
            env=env,
            log_path=tmp_path / f"operator-{len(started)}.log",
            all_namespaces=all_namespaces,
            liveness=liveness,
        )
        process.start()
        started.append(process)
        return process

    yield start
    for process in started:
        process.stop()

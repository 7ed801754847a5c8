"""The install manifests in deploy/: they apply, and their RBAC is all the operator needs.

The RBAC tests run the operator on this machine with a token kubeconfig of the
ServiceAccount that deploy/ creates, so the API server applies exactly the
rules of the ClusterRole or Role, as it would for the pod.
"""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from support import ACCOUNT, WEBHOOK_SECRET, apply, condition, tracker_manifest, wait_for, wait_for_status

from replytracker import signing

pytestmark = pytest.mark.e2e

REPO_ROOT = Path(__file__).resolve().parents[2]
DEPLOY = REPO_ROOT / "deploy"
SYSTEM_NAMESPACE = "replytracker-system"
SERVICE_ACCOUNT = "replytracker"
IMAGE = "ghcr.io/replytracker/reply-tracker"
# 0.001 hours is 3.6 seconds.
FAST = 0.001

# Log text that shows a request the API server rejected for lack of RBAC:
# kopf's APIForbiddenError, the kubernetes client's ApiException ("(403)" and
# "Reason: Forbidden"), and the engine's own message for an unreadable Secret.
FORBIDDEN_MARKERS = ("Forbidden", "(403)", "status=403", "HTTP 403", "may not read")

# Rules that every authenticated user has through the built-in system:basic-user
# ClusterRole, whatever deploy/ grants.
BUILT_IN_RESOURCE_VERBS = {
    "selfsubjectaccessreviews.authorization.k8s.io": {"create"},
    "selfsubjectrulesreviews.authorization.k8s.io": {"create"},
    "selfsubjectreviews.authentication.k8s.io": {"create"},
}


# --- helpers ---------------------------------------------------------------------


def render(control_plane, folder: Path) -> list[dict[str, Any]]:
    """Return the documents that ``kubectl kustomize folder`` prints."""
    output = control_plane.kubectl("kustomize", str(folder)).stdout
    return [document for document in yaml.safe_load_all(output) if document]


def of_kind(documents: list[dict[str, Any]], *kinds: str) -> list[dict[str, Any]]:
    return [document for document in documents if document["kind"] in kinds]


def only(documents: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    matches = of_kind(documents, kind)
    assert len(matches) == 1, f"expected one {kind}, found {len(matches)}"
    return matches[0]


def overlay(folder: Path, *, base: Path, namespace: str) -> Path:
    """Write a kustomization in ``folder`` that puts ``base`` into ``namespace``, as a user's overlay would."""
    folder.mkdir(parents=True, exist_ok=True)
    # kustomize accepts only relative paths to other kustomizations.
    relative = os.path.relpath(base, folder)
    (folder / "kustomization.yaml").write_text(
        "apiVersion: kustomize.config.k8s.io/v1beta1\n"
        "kind: Kustomization\n"
        f"namespace: {namespace}\n"
        f"resources:\n- {relative}\n"
    )
    return folder


def service_account_user(namespace: str) -> str:
    return f"system:serviceaccount:{namespace}:{SERVICE_ACCOUNT}"


def can_i(control_plane, verb: str, resource: str, *, namespace: str, user: str) -> str:
    """Return kubectl auth can-i's "yes" or "no" for ``user``, found by impersonation.

    ``resource`` may name a subresource after a slash, as in ``messagetrackers/status``.
    """
    resource, _, subresource = resource.partition("/")
    extra = [f"--subresource={subresource}"] if subresource else []
    result = control_plane.kubectl(
        "auth", "can-i", verb, resource, *extra, "-n", namespace, f"--as={user}", check=False
    )
    return result.stdout.strip()


def forbidden_lines(log: str) -> list[str]:
    return [line for line in log.splitlines() if any(marker in line for marker in FORBIDDEN_MARKERS)]


def seed_thread(provider, account: str, thread: str) -> None:
    """Put the tracked message and, a minute later, Bob's reply into the thread."""
    sent_ms = int(time.time() * 1000) - 120_000
    provider.provider.add_message(
        account, thread,
        {"message_id": "sent-1", "sender_profile_id": "me", "sender_name": "Me", "is_sender": True,
         "text": "Hello Bob", "created_at": sent_ms},
    )
    provider.provider.add_message(
        account, thread,
        {"message_id": "reply-1", "sender_profile_id": "bob", "sender_name": "Bob Example", "is_sender": False,
         "text": "Sounds good.", "created_at": sent_ms + 60_000},
    )


def create_credentials_secret(control_plane, namespace: str) -> str:
    control_plane.kubectl(
        "create", "secret", "generic", "welink", "-n", namespace,
        "--from-literal=apiKey=test-key", "--from-literal=apiSecret=test-secret",
    )
    return "welink"


def own_deliveries(receiver, namespace: str) -> list:
    """Deliveries for trackers in ``namespace`` only.

    An operator that watches every namespace also checks the trackers that
    earlier tests left in their namespaces, which stay Terminating on this
    control plane.
    """
    return [d for d in receiver.deliveries if (d.json or {}).get("tracker", {}).get("namespace") == namespace]


@pytest.fixture(scope="module")
def cluster_wide_install(control_plane, crd) -> list[dict[str, Any]]:
    """Apply the Namespace, ServiceAccount and RBAC of deploy/ for real and return all rendered documents.

    The Deployment is not applied, because no kubelet runs here: the tests run
    the operator on this machine with the ServiceAccount's token instead.
    """
    documents = render(control_plane, DEPLOY)
    rbac_documents = of_kind(documents, "Namespace", "ServiceAccount", "ClusterRole", "ClusterRoleBinding")
    apply(control_plane, {"apiVersion": "v1", "kind": "List", "items": rbac_documents})
    return documents


# --- the manifests as files ----------------------------------------------------------


def test_crd_copy_matches_crds_folder():
    copy = (DEPLOY / "crd" / "messagetracker.yaml").read_text()
    generated = (REPO_ROOT / "crds" / "messagetracker.yaml").read_text()

    assert copy == generated, "deploy/crd/messagetracker.yaml is stale: run `make crd`"


def test_cluster_wide_deployment_settings(control_plane):
    documents = render(control_plane, DEPLOY)
    deployment = only(documents, "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    resources = container["resources"]
    secret_refs = [source["secretRef"] for source in container["envFrom"] if "secretRef" in source]

    assert deployment["metadata"]["namespace"] == SYSTEM_NAMESPACE
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"]["type"] == "Recreate"
    assert pod["serviceAccountName"] == SERVICE_ACCOUNT
    assert pod["automountServiceAccountToken"] is True
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 65532
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
    assert container["image"] == f"{IMAGE}:0.1.0"
    assert container["args"] == ["run", "--all-namespaces", "--liveness=http://0.0.0.0:8080/healthz"]
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert {port["name"]: port["containerPort"] for port in container["ports"]} == {"health": 8080, "metrics": 9090}
    assert secret_refs == [{"name": "replytracker-credentials", "optional": True}]
    assert set(resources["requests"]) == {"cpu", "memory"}
    assert set(resources["limits"]) == {"cpu", "memory"}
    assert {mount["mountPath"] for mount in container["volumeMounts"]} == {"/tmp"}


def test_settings_config_map_is_referenced(control_plane):
    documents = render(control_plane, DEPLOY)
    config_map = only(documents, "ConfigMap")
    container = only(documents, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    config_refs = [source["configMapRef"]["name"] for source in container["envFrom"] if "configMapRef" in source]

    assert config_refs == [config_map["metadata"]["name"]]
    assert config_map["data"]["REPLYTRACKER_METRICS_PORT"] == "9090"
    assert all(key.startswith("REPLYTRACKER_") for key in config_map["data"])
    assert not {"REPLYTRACKER_API_KEY", "REPLYTRACKER_API_SECRET", "REPLYTRACKER_WEBHOOK_SECRET"} & set(config_map["data"])


def test_namespaced_entry_has_no_cluster_scope(control_plane, tmp_path):
    documents = render(control_plane, overlay(tmp_path / "team", base=DEPLOY / "namespaced", namespace="team"))
    container = only(documents, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    pod_namespace = next(variable for variable in container["env"] if variable["name"] == "POD_NAMESPACE")
    binding = only(documents, "RoleBinding")

    assert of_kind(documents, "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition", "Namespace") == []
    assert {document["metadata"]["namespace"] for document in documents} == {"team"}
    assert container["args"] == ["run", "--namespace=$(POD_NAMESPACE)", "--liveness=http://0.0.0.0:8080/healthz"]
    assert pod_namespace["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": SERVICE_ACCOUNT, "namespace": "team"}]


def test_service_monitor_selects_metrics_service(control_plane):
    monitor = yaml.safe_load((DEPLOY / "servicemonitor.yaml").read_text())
    documents = render(control_plane, DEPLOY)
    service = only(documents, "Service")
    selector = monitor["spec"]["selector"]["matchLabels"]

    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert selector.items() <= service["metadata"]["labels"].items()
    assert [endpoint["port"] for endpoint in monitor["spec"]["endpoints"]] == ["metrics"]
    assert [(port["name"], port["port"]) for port in service["spec"]["ports"]] == [("metrics", 9090)]
    assert of_kind(documents, "ServiceMonitor") == [], "the ServiceMonitor must be opt-in"


# --- server-side dry runs ------------------------------------------------------------


def test_dry_run_cluster_wide_entry(control_plane, cluster_wide_install):
    result = control_plane.kubectl("apply", "--dry-run=server", "-k", str(DEPLOY))

    assert re.search(r"^deployment\.apps/replytracker \w+ \(server dry run\)$", result.stdout, re.MULTILINE), result.stdout
    assert re.search(r"^service/replytracker-metrics \w+ \(server dry run\)$", result.stdout, re.MULTILINE), result.stdout


def test_dry_run_crd_entry(control_plane, crd):
    result = control_plane.kubectl("apply", "--dry-run=server", "-k", str(DEPLOY / "crd"))

    assert f"customresourcedefinition.apiextensions.k8s.io/{crd}" in result.stdout


def test_dry_run_namespaced_entry(control_plane, crd, namespace, tmp_path):
    folder = overlay(tmp_path / "overlay", base=DEPLOY / "namespaced", namespace=namespace)
    result = control_plane.kubectl("apply", "--dry-run=server", "-k", str(folder))

    assert re.search(r"^role\.rbac\.authorization\.k8s\.io/replytracker \w+ \(server dry run\)$", result.stdout, re.MULTILINE)
    assert re.search(r"^deployment\.apps/replytracker \w+ \(server dry run\)$", result.stdout, re.MULTILINE), result.stdout


def test_dry_run_samples_in_default_namespace(control_plane, crd):
    result = control_plane.kubectl("apply", "--dry-run=server", "-f", str(DEPLOY / "samples"))

    for name in ("messagetracker.replytracker.dev/minimal", "messagetracker.replytracker.dev/offer-follow-up",
                 "secret/welink-credentials", "secret/reply-webhook-signing"):
        assert re.search(rf"^{re.escape(name)} \w+ \(server dry run\)$", result.stdout, re.MULTILINE), result.stdout


def test_samples_refer_to_sample_secrets():
    documents = [d for path in sorted((DEPLOY / "samples").glob("*.yaml")) for d in yaml.safe_load_all(path.read_text()) if d]
    secrets = {d["metadata"]["name"]: set(d["stringData"]) for d in of_kind(documents, "Secret")}
    spec = next(d for d in of_kind(documents, "MessageTracker") if d["metadata"]["name"] == "offer-follow-up")["spec"]

    assert secrets[spec["credentialsSecretRef"]["name"]] == {"apiKey", "apiSecret"}
    assert spec["webhook"]["secretRef"]["key"] in secrets[spec["webhook"]["secretRef"]["name"]]
    assert spec["timeoutHours"] > 0


def test_credentials_example_applies_once_uncommented(control_plane, cluster_wide_install):
    lines = (DEPLOY / "provider-credentials.example.yaml").read_text().splitlines()
    start = lines.index("# apiVersion: v1")
    manifest = yaml.safe_load("\n".join(line.removeprefix("# ").removeprefix("#") for line in lines[start:]))
    deployment = only(cluster_wide_install, "Deployment")
    env_from = deployment["spec"]["template"]["spec"]["containers"][0]["envFrom"]
    secret_name = next(source["secretRef"]["name"] for source in env_from if "secretRef" in source)

    result = control_plane.kubectl("apply", "--dry-run=server", "-f", "-", input=json.dumps(manifest))

    assert manifest["metadata"]["name"] == secret_name
    assert set(manifest["stringData"]) == {"REPLYTRACKER_API_KEY", "REPLYTRACKER_API_SECRET", "REPLYTRACKER_WEBHOOK_SECRET"}
    assert f"secret/{secret_name} created (server dry run)" in result.stdout


# --- RBAC ------------------------------------------------------------------------------


def test_operator_works_with_cluster_role_alone(
    control_plane, cluster_wide_install, namespace, provider, receiver, webhook_secret, start_operator, tmp_path
):
    # An account of this test's own: operators of earlier tests are gone, but
    # their trackers remain and this operator checks them against this provider.
    account = f"acc-{namespace}"
    provider.provider.add_account(account)
    seed_thread(provider, account, "answered")
    credentials = create_credentials_secret(control_plane, namespace)
    kubeconfig = control_plane.service_account_kubeconfig(
        namespace=SYSTEM_NAMESPACE, name=SERVICE_ACCOUNT, path=tmp_path / "operator.kubeconfig"
    )
    # Wrong operator-wide credentials: a check succeeds only with the Secret's.
    operator = start_operator(
        kubeconfig=kubeconfig, all_namespaces=True, api_key="not-the-key", api_secret="not-the-secret"
    )

    apply(
        control_plane,
        tracker_manifest(
            "answered", namespace, accountId=account, threadId="answered", messageId="sent-1", profileId="bob",
            frequency=FAST, credentialsSecretRef={"name": credentials},
            webhook={"url": receiver.url, "secretRef": {"name": webhook_secret, "key": "key"}},
        ),
    )
    status = wait_for_status(
        control_plane, namespace, "answered", lambda s: (s.get("webhook") or {}).get("deliveredTime"),
        timeout=60, what="the reply's webhook delivery",
    )
    delivery = wait_for(lambda: own_deliveries(receiver, namespace), timeout=10, what="the delivery at the receiver")[0]

    assert status["phase"] == "Replied"
    assert status["reply"]["messageId"] == "reply-1"
    assert condition(status, "WebhookDelivered")["status"] == "True"
    assert delivery.signature_valid is True
    assert signing.verify(delivery.headers["x-replytracker-signature"], delivery.body, secret=WEBHOOK_SECRET)
    assert all(call.status_code == 200 for call in provider.provider.calls(account_id=account))

    apply(
        control_plane,
        tracker_manifest(
            "paused", namespace, accountId=account, threadId="quiet", frequency=FAST,
            credentialsSecretRef={"name": credentials},
        ),
    )
    wait_for_status(control_plane, namespace, "paused", lambda s: s.get("checkCount", 0) >= 1, what="the first check")
    control_plane.kubectl("patch", "mt", "paused", "-n", namespace, "--type=merge", "-p", '{"spec":{"suspend":true}}')
    suspended = wait_for_status(
        control_plane, namespace, "paused", lambda s: s.get("phase") == "Suspended", what="phase Suspended"
    )

    assert suspended["observedGeneration"] == 2
    assert condition(suspended, "Ready")["reason"] == "Suspended"

    control_plane.kubectl("delete", "mt", "paused", "-n", namespace, "--timeout=10s")
    wait_for(
        lambda: f"Stopped tracking {namespace}/paused" in operator.log(), timeout=15, what="the operator to drop the tracker"
    )

    events = wait_for(
        lambda: json.loads(
            control_plane.kubectl(
                "get", "events", "-n", namespace, "--field-selector=involvedObject.name=answered", "-o", "json"
            ).stdout
        )["items"],
        timeout=15, what="an Event on the replied tracker",
    )
    assert events[0]["involvedObject"]["kind"] == "MessageTracker"
    assert forbidden_lines(operator.log()) == []


def test_operator_works_with_namespaced_role(
    control_plane, crd, namespace, provider, receiver, webhook_secret, start_operator, tmp_path
):
    documents = render(control_plane, overlay(tmp_path / "overlay", base=DEPLOY / "namespaced", namespace=namespace))
    apply(
        control_plane,
        {"apiVersion": "v1", "kind": "List", "items": of_kind(documents, "ServiceAccount", "Role", "RoleBinding")},
    )
    user = service_account_user(namespace)
    seed_thread(provider, ACCOUNT, "answered")
    credentials = create_credentials_secret(control_plane, namespace)
    kubeconfig = control_plane.service_account_kubeconfig(
        namespace=namespace, name=SERVICE_ACCOUNT, path=tmp_path / "operator.kubeconfig"
    )
    operator = start_operator(kubeconfig=kubeconfig, api_key="not-the-key", api_secret="not-the-secret")

    apply(
        control_plane,
        tracker_manifest(
            "answered", namespace, accountId=ACCOUNT, threadId="answered", messageId="sent-1", frequency=FAST,
            credentialsSecretRef={"name": credentials},
            webhook={"url": receiver.url, "secretRef": {"name": webhook_secret, "key": "key"}},
        ),
    )
    status = wait_for_status(
        control_plane, namespace, "answered", lambda s: (s.get("webhook") or {}).get("deliveredTime"),
        what="the reply's webhook delivery",
    )
    delivery = receiver.wait_for(1, timeout=10)[0]

    assert status["phase"] == "Replied"
    assert delivery.signature_valid is True
    assert forbidden_lines(operator.log()) == []

    other = f"{namespace}-other"
    control_plane.kubectl("create", "namespace", other)
    try:
        create_credentials_secret(control_plane, other)
        read_elsewhere = control_plane.kubectl("get", "secret", "welink", "-n", other, f"--as={user}", check=False)

        assert can_i(control_plane, "get", "secrets", namespace=namespace, user=user) == "yes"
        assert can_i(control_plane, "get", "secrets", namespace=other, user=user) == "no"
        assert can_i(control_plane, "list", "messagetrackers.replytracker.dev", namespace=other, user=user) == "no"
        assert read_elsewhere.returncode != 0
        assert "Forbidden" in read_elsewhere.stderr
    finally:
        control_plane.kubectl("delete", "namespace", other, "--wait=false")


def parse_can_i_list(output: str) -> list[tuple[str, list[str], set[str]]]:
    """Return (resource, non-resource URLs, verbs) for each row of ``kubectl auth can-i --list``."""
    rows = []
    pattern = re.compile(r"^(?P<resource>\S*)\s+\[(?P<urls>[^\]]*)\]\s+\[(?P<names>[^\]]*)\]\s+\[(?P<verbs>[^\]]*)\]\s*$")
    for line in output.splitlines()[1:]:
        match = pattern.match(line)
        assert match is not None, f"unexpected line in kubectl auth can-i --list output: {line!r}"
        rows.append((match["resource"], match["urls"].split(), set(match["verbs"].split())))
    return rows


def test_service_account_has_only_declared_verbs(control_plane, cluster_wide_install, namespace):
    cluster_role = only(cluster_wide_install, "ClusterRole")
    declared: dict[str, set[str]] = {}
    for rule in cluster_role["rules"]:
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                # kubectl writes "messagetrackers/status" in group G as "messagetrackers.G/status".
                name, slash, subresource = resource.partition("/")
                key = (f"{name}.{group}" if group else name) + slash + subresource
                declared.setdefault(key, set()).update(rule["verbs"])
    allowed = {**BUILT_IN_RESOURCE_VERBS, **declared}
    user = service_account_user(SYSTEM_NAMESPACE)

    output = control_plane.kubectl("auth", "can-i", "--list", "-n", namespace, f"--as={user}").stdout
    rows = parse_can_i_list(output)
    granted: dict[str, set[str]] = {}
    for resource, urls, verbs in rows:
        if resource:
            granted.setdefault(resource, set()).update(verbs)
    url_verbs = {verb for resource, urls, verbs in rows if not resource for verb in verbs}

    assert declared["secrets"] == {"get"}
    assert set(granted) <= set(allowed), f"resources beyond the ClusterRole: {set(granted) - set(allowed)}"
    for resource, verbs in granted.items():
        assert verbs <= allowed[resource], f"{resource}: {verbs - allowed[resource]} beyond the ClusterRole"
    assert granted["messagetrackers.replytracker.dev"] == {"list", "watch"}
    # Non-resource URLs are discovery and health paths, readable by every authenticated user.
    assert url_verbs == {"get"}
    for verb, resource in [
        ("list", "secrets"), ("watch", "secrets"), ("create", "secrets"), ("delete", "secrets"),
        ("get", "messagetrackers.replytracker.dev"), ("patch", "messagetrackers.replytracker.dev"),
        ("update", "messagetrackers.replytracker.dev"), ("delete", "messagetrackers.replytracker.dev"),
        ("update", "messagetrackers.replytracker.dev/status"), ("delete", "events"), ("patch", "events"),
    ]:
        assert can_i(control_plane, verb, resource, namespace=namespace, user=user) == "no", f"{verb} {resource}"

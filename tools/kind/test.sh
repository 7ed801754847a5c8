#!/usr/bin/env bash
# Run the e2e suite against the kind cluster through REPLYTRACKER_E2E_KUBECONFIG.
# Arguments are passed to pytest after the defaults.
#
# The operator under test, the fake provider and the webhook receiver run on
# this machine, so an operator that `make kind-deploy` started in the cluster
# would handle the test trackers too. Such Deployments are scaled to zero for
# the run and scaled back afterwards.
#
# tests/e2e/test_control_plane.py is left out: it checks the local control
# plane that the suite starts without the variable. Tests that start a local
# control plane of their own skip themselves.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

python="${PYTHON_BIN:-$repo_root/.venv/bin/python}"
require_commands kind kubectl
require_cluster

workdir="$(mktemp -d)"
scaled=()
restore() {
    local entry
    for entry in "${scaled[@]+"${scaled[@]}"}"; do
        read -r namespace name replicas <<<"$entry"
        echo "Scaling deployment $namespace/$name back to $replicas replicas"
        kubectl --kubeconfig "$kubeconfig" scale "deployment/$name" --namespace "$namespace" --replicas "$replicas" || true
    done
    rm -rf "$workdir"
}
trap restore EXIT

kubeconfig="$workdir/kubeconfig"
kind get kubeconfig --name "$cluster" >"$kubeconfig"
chmod 600 "$kubeconfig"

# Print the label selector of a Deployment's pods as key=value,key=value.
pod_selector() {
    local namespace="$1" name="$2"
    # A Go template for kubectl, not a shell expansion.
    # shellcheck disable=SC2016
    kubectl --kubeconfig "$kubeconfig" get "deployment/$name" --namespace "$namespace" \
        -o go-template='{{range $key, $value := .spec.selector.matchLabels}}{{$key}}={{$value}},{{end}}' |
        sed 's/,$//'
}

# Deployments whose containers run a reply-tracker image, with their replicas.
running="$(kubectl --kubeconfig "$kubeconfig" get deployments --all-namespaces \
    -o jsonpath='{range .items[*]}{.metadata.namespace}{" "}{.metadata.name}{" "}{.spec.replicas}{" "}{.spec.template.spec.containers[*].image}{"\n"}{end}')"
while read -r namespace name replicas images; do
    [[ "$images" == *reply-tracker* && "$replicas" != 0 ]] || continue
    echo "Scaling deployment $namespace/$name to 0 replicas for the test run"
    kubectl --kubeconfig "$kubeconfig" scale "deployment/$name" --namespace "$namespace" --replicas 0
    scaled+=("$namespace $name $replicas")
    kubectl --kubeconfig "$kubeconfig" wait pods --namespace "$namespace" \
        --selector "$(pod_selector "$namespace" "$name")" --for=delete --timeout=120s
done <<<"$running"

cd "$repo_root"
REPLYTRACKER_E2E_KUBECONFIG="$kubeconfig" "$python" -m pytest tests/e2e \
    --ignore=tests/e2e/test_control_plane.py "$@"

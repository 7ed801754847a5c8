#!/usr/bin/env bash
# Apply deploy/ to the kind cluster, with the operator image replaced by
# $IMAGE (default reply-tracker:dev, as `make image` builds it), and wait for
# the Deployments to roll out.
#
#   deploy.sh            apply and wait
#   deploy.sh --print    print the manifests that would be applied, and stop
#
# The image is replaced by a kustomize overlay in a temporary folder, so
# deploy/ stays as it is. The overlay also sets imagePullPolicy IfNotPresent,
# because an image loaded with `kind load` exists only on the node and a pull
# of it would fail.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

# The image name that deploy/kustomization.yaml gives the operator's container.
base_image="ghcr.io/replytracker/reply-tracker"
image="${IMAGE:-reply-tracker:dev}"

print_only=false
case "${1:-}" in
    "") ;;
    --print) print_only=true ;;
    *) echo "usage: $(basename "$0") [--print]" >&2; exit 2 ;;
esac

# NAME:TAG, where NAME may contain a registry host with a port.
image_tag="${image##*:}"
image_name="${image%:*}"
if [[ "$image" != *:* || "$image_tag" == */* || -z "$image_name" || -z "$image_tag" ]]; then
    echo "$(basename "$0"): IMAGE=$image is not of the form NAME:TAG" >&2
    exit 2
fi

require_commands kubectl
overlay="$(mktemp -d)"
trap 'rm -rf "$overlay"' EXIT
# kustomize accepts only relative paths to other kustomizations.
base="$(realpath --relative-to="$overlay" "$repo_root/deploy")"
cat >"$overlay/kustomization.yaml" <<YAML
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
- $base
images:
- name: $base_image
  newName: $image_name
  newTag: "$image_tag"
patches:
- target:
    kind: Deployment
  patch: |-
    - op: add
      path: /spec/template/spec/containers/0/imagePullPolicy
      value: IfNotPresent
YAML

rendered="$overlay/rendered.yaml"
kubectl kustomize "$overlay" >"$rendered"
if ! grep -q -- "image: $image\$" "$rendered"; then
    echo "$(basename "$0"): no container in deploy/ uses the image $base_image, so $image was not set anywhere" >&2
    exit 1
fi
if [[ "$print_only" == true ]]; then
    cat "$rendered"
    exit 0
fi

require_commands kind
require_cluster
kubectl --context "$context" apply -f "$rendered"
deployments="$(kubectl --context "$context" get -f "$rendered" \
    -o jsonpath='{range .items[?(@.kind=="Deployment")]}{.metadata.namespace}{" "}{.metadata.name}{"\n"}{end}')"
while read -r namespace name; do
    [[ -n "$name" ]] || continue
    kubectl --context "$context" rollout status "deployment/$name" --namespace "$namespace" --timeout=180s
done <<<"$deployments"

#!/usr/bin/env bash
# Create the kind cluster from kind-config.yaml, unless it exists already.
# Needs kind and a running Docker engine.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

require_commands kind docker
if ! docker info >/dev/null 2>&1; then
    echo "$(basename "$0"): 'docker info' failed, so no Docker engine is reachable. kind runs its nodes as Docker containers: start the engine and run again" >&2
    exit 1
fi

if kind get clusters 2>/dev/null | grep -qx -- "$cluster"; then
    echo "kind cluster $cluster exists already (kubectl context $context)"
    exit 0
fi
kind create cluster --name "$cluster" --config "$repo_root/kind-config.yaml" --wait 180s

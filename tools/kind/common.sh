# shellcheck shell=bash
# Settings and checks shared by the tools/kind scripts, which source this file.
# KIND_CLUSTER names the kind cluster (default "replytracker"). kind names the
# kubectl context of a cluster "kind-<name>".

# The scripts that source this file use these variables.
# shellcheck disable=SC2034
repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cluster="${KIND_CLUSTER:-replytracker}"
# shellcheck disable=SC2034
context="kind-$cluster"

# Exit with an error that names the first missing command of the arguments.
require_commands() {
    local name
    for name in "$@"; do
        if ! command -v "$name" >/dev/null 2>&1; then
            echo "$(basename "$0"): the $name command is missing; install it and run again" >&2
            exit 1
        fi
    done
}

# Exit with an error unless the kind cluster exists.
require_cluster() {
    if ! kind get clusters 2>/dev/null | grep -qx -- "$cluster"; then
        echo "$(basename "$0"): kind cluster $cluster not found; create it with 'make kind-up'" >&2
        exit 1
    fi
}

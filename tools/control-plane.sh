#!/usr/bin/env bash
# Build kube-apiserver, kubectl and etcd from Go modules, cache them outside
# the checkout, and print the folder that contains them.
#
# A folder named by KUBEBUILDER_ASSETS that already contains all three binaries
# is used as it is, so envtest assets can be reused. Otherwise the binaries
# are built once per pinned version into
# ${REPLYTRACKER_CACHE_DIR:-$XDG_CACHE_HOME/replytracker}/control-plane/<key>.
# A first build takes several minutes on two cores; later runs return at once.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
module_dir="$here/k8s"
binaries=(kube-apiserver kubectl etcd)

has_all() {
    local dir="$1" name
    for name in "${binaries[@]}"; do
        [[ -x "$dir/$name" ]] || return 1
    done
}

if [[ -n "${KUBEBUILDER_ASSETS:-}" ]] && has_all "$KUBEBUILDER_ASSETS"; then
    echo "$KUBEBUILDER_ASSETS"
    exit 0
fi

if ! command -v go >/dev/null 2>&1; then
    echo "control-plane.sh: the go command is missing; install Go 1.24 or newer, or set KUBEBUILDER_ASSETS to a folder with ${binaries[*]}" >&2
    exit 1
fi

k8s_version="$(awk '$1 == "k8s.io/kubernetes" && $2 ~ /^v/ {print $2; exit}' "$module_dir/go.mod")"
etcd_version="$(awk '$1 == "go.etcd.io/etcd/server/v3" && $2 ~ /^v/ {print $2; exit}' "$module_dir/go.mod")"
# The key changes whenever go.mod or go.sum change, so a new pin rebuilds.
sum="$(cat "$module_dir/go.mod" "$module_dir/go.sum" | sha256sum | cut -c1-12)"
cache_root="${REPLYTRACKER_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/replytracker}"
target="$cache_root/control-plane/k8s-$k8s_version-etcd-$etcd_version-$sum"

if has_all "$target"; then
    echo "$target"
    exit 0
fi

mkdir -p "$cache_root/control-plane"
# One build at a time per cache: a second caller waits and then finds the result.
exec 9>"$cache_root/control-plane/.lock"
flock 9
if has_all "$target"; then
    echo "$target"
    exit 0
fi

echo "control-plane.sh: building kube-apiserver and kubectl $k8s_version and etcd $etcd_version into $target (several minutes on a first run)" >&2
staging="$(mktemp -d "$cache_root/control-plane/.build.XXXXXX")"
chmod 755 "$staging"
trap 'rm -rf "$staging"' EXIT

minor="${k8s_version#v1.}"
minor="${minor%%.*}"
ldflags="-s -w"
ldflags+=" -X k8s.io/component-base/version.gitVersion=$k8s_version"
ldflags+=" -X k8s.io/component-base/version.gitMajor=1"
ldflags+=" -X k8s.io/component-base/version.gitMinor=$minor"
ldflags+=" -X k8s.io/client-go/pkg/version.gitVersion=$k8s_version"
ldflags+=" -X k8s.io/client-go/pkg/version.gitMajor=1"
ldflags+=" -X k8s.io/client-go/pkg/version.gitMinor=$minor"

(
    cd "$module_dir"
    export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-mod=mod
    go build -trimpath -ldflags "$ldflags" -o "$staging/" \
        k8s.io/kubernetes/cmd/kube-apiserver \
        k8s.io/kubernetes/cmd/kubectl \
        go.etcd.io/etcd/server/v3
)
# The etcd module root builds a binary named after the module's last element.
if [[ -x "$staging/v3" ]]; then
    mv "$staging/v3" "$staging/etcd"
fi
if [[ -x "$staging/server" ]]; then
    mv "$staging/server" "$staging/etcd"
fi
has_all "$staging" || { echo "control-plane.sh: build finished without all of ${binaries[*]} in $staging" >&2; exit 1; }
rm -rf "$target"
mv "$staging" "$target"
trap - EXIT
echo "$target"

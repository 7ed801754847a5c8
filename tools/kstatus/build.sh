#!/usr/bin/env bash
# Build the kstatus command of this folder once per go.mod/go.sum/main.go
# content into a cache outside the checkout, and print the binary's path.
#
# The cache is ${REPLYTRACKER_CACHE_DIR:-$XDG_CACHE_HOME/replytracker}/kstatus/<key>,
# the same root that tools/control-plane.sh uses. The build uses the local
# Go toolchain (GOTOOLCHAIN=local). It took about 15 s on two cores with the
# modules already downloaded; later runs return at once.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

if ! command -v go >/dev/null 2>&1; then
    echo "kstatus/build.sh: the go command is missing; install Go 1.24 or newer" >&2
    exit 1
fi

# The key changes whenever the source or the pinned versions change, so an edit rebuilds.
key="$(cat "$here/go.mod" "$here/go.sum" "$here/main.go" | sha256sum | cut -c1-12)"
cache_root="${REPLYTRACKER_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/replytracker}"
target="$cache_root/kstatus/$key/kstatus"

if [[ -x "$target" ]]; then
    echo "$target"
    exit 0
fi

mkdir -p "$cache_root/kstatus"
# One build at a time per cache: a second caller waits and then finds the result.
exec 9>"$cache_root/kstatus/.lock"
flock 9
if [[ -x "$target" ]]; then
    echo "$target"
    exit 0
fi

staging="$(mktemp -d "$cache_root/kstatus/.build.XXXXXX")"
trap 'rm -rf "$staging"' EXIT
(
    cd "$here"
    # readonly: build exactly the versions pinned in go.mod and go.sum.
    export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS="-mod=readonly -buildvcs=false"
    go build -trimpath -o "$staging/kstatus" .
)
mkdir -p "$(dirname "$target")"
mv "$staging/kstatus" "$target"
echo "$target"

#!/usr/bin/env bash
# Builds Docker Engine 29 (dockerd, docker-proxy) and a runc new enough for
# it from the Go module proxy into $DIR (default /var/cache/tabby/docker29),
# once: later runs find the binaries and return at once. The e2e suite runs
# against it with TABBY_DOCKERD=$DIR/dockerd (make e2e-29).
#
# Debian's runc 1.1.5 fails every container under Engine 29 ("namespace
# {"time" ""} does not exist"), so runc is built too and $DIR goes first in
# dockerd's PATH. libseccomp-dev and pkg-config are for runc's seccomp.
set -euo pipefail
DIR=${1:-/var/cache/tabby/docker29}
MOBY=${MOBY_VERSION:-v2.0.0-beta.24}
RUNC=${RUNC_VERSION:-v1.3.7}
GO=${GO:-go}
if [ -x "$DIR/dockerd" ] && "$DIR/dockerd" --version | grep -q "version 29" && [ -x "$DIR/docker-proxy" ] && [ -x "$DIR/runc" ]; then
	exit 0
fi
if ! pkg-config --exists libseccomp 2>/dev/null; then
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libseccomp-dev pkg-config
fi
mkdir -p "$DIR"
tmp=$(mktemp -d "$DIR/.build-XXXXXX")
trap 'rm -rf "$tmp"' EXIT
echo "building Docker Engine 29 ($MOBY) and runc $RUNC into $DIR (a few minutes, once)" >&2
# moby's module has no version of its own: stamp the Engine release it is,
# so `docker version` (and the suite's version check) tell the two apart.
GOBIN="$tmp" CGO_ENABLED=1 GOFLAGS=-mod=mod $GO install -tags exclude_graphdriver_btrfs \
	-ldflags "-X github.com/moby/moby/v2/dockerversion.Version=${ENGINE_VERSION:-29.0.0-moby-$MOBY} -X github.com/moby/moby/v2/dockerversion.GitCommit=$MOBY" \
	"github.com/moby/moby/v2/cmd/dockerd@$MOBY" "github.com/moby/moby/v2/cmd/docker-proxy@$MOBY"
GOBIN="$tmp" CGO_ENABLED=1 $GO install -tags 'seccomp urfave_cli_no_docs' "github.com/opencontainers/runc@$RUNC"
mv "$tmp"/dockerd "$tmp"/docker-proxy "$tmp"/runc "$DIR"/

#!/usr/bin/env bash
# Builds Docker Compose v2 from the Go module proxy into $DIR (default
# /var/cache/tabby/compose), once: later runs find it and return at once.
# `go install ...@v2.40.3` refuses the module (its go.mod has exclude
# directives), so the module is downloaded and ./cmd built inside it. The
# binary runs standalone (DOCKER_HOST) or as the CLI plugin
# docker-compose.
set -euo pipefail
DIR=${1:-/var/cache/tabby/compose}
VERSION=${COMPOSE_VERSION:-v2.40.3}
GO=${GO:-go}
if [ -x "$DIR/docker-compose" ] && "$DIR/docker-compose" version 2>/dev/null | grep -q "${VERSION#v}"; then
	exit 0
fi
mkdir -p "$DIR"
echo "building Docker Compose $VERSION into $DIR (about a minute, once)" >&2
mod=$(GOFLAGS=-mod=mod $GO mod download -json "github.com/docker/compose/v2@$VERSION" | sed -n 's/.*"Dir": "\(.*\)".*/\1/p')
tmp=$(mktemp -d "$DIR/.build-XXXXXX")
trap 'rm -rf "$tmp"' EXIT
(cd "$mod" && CGO_ENABLED=0 GOFLAGS=-mod=mod $GO build -trimpath \
	-ldflags "-X github.com/docker/compose/v2/internal.Version=$VERSION" -o "$tmp/docker-compose" ./cmd)
mv "$tmp/docker-compose" "$DIR/docker-compose"

#!/usr/bin/env bash
# Seed 001 on one host: a Docker host in a network namespace of its own, with
# its own dockerd and tabby (embedded etcd). Creates net1, runs containerA and
# containerB, shows their Calico-style interface and routes, pings, and
# removes everything it made on exit. Run as root from the repository root.
set -euo pipefail
[ "$(id -u)" = 0 ] || { echo "run as root" >&2; exit 1; }
[ -x bin/tabby ] || make build
NS=tabby-demo
DIR=$(mktemp -d /tmp/tabby-demo.XXXX)
DPID= TPID=
D() { docker -H "unix://$DIR/docker.sock" "$@"; }
cleanup() {
	set +ex
	[ -n "$DPID" ] && D rm -f containerA containerB >/dev/null 2>&1
	[ -n "$TPID" ] && kill "$TPID" && wait "$TPID" 2>/dev/null
	[ -n "$DPID" ] && kill "$DPID" && wait "$DPID" 2>/dev/null
	ip netns del "$NS" 2>/dev/null
	rm -rf "$DIR"
}
trap cleanup EXIT

ip netns add "$NS"
ip -n "$NS" link set lo up
ip -n "$NS" link add eth0 type veth peer name uplink
ip -n "$NS" addr add 10.99.9.10/24 dev eth0
ip -n "$NS" link set uplink up
ip -n "$NS" link set eth0 up
ip -n "$NS" route add default via 10.99.9.1   # proxy ARP needs a route covering 169.254.1.1
mkdir -p "$DIR/plugins" /run/docker/plugins

# TABBY_DOCKERD picks another dockerd (make e2e-29 runs this on Engine 29).
DOCKERD=${TABBY_DOCKERD:-$(command -v dockerd || echo dockerd)}
PATH="$(dirname "$DOCKERD"):$PATH" nsenter --net=/run/netns/$NS unshare --mount --propagation private sh -c \
	"for m in /run/netns/*; do umount -l \$m 2>/dev/null; done; mount --bind $DIR/plugins /run/docker/plugins && exec $DOCKERD --data-root $DIR/data --exec-root $DIR/exec --pidfile $DIR/docker.pid -H unix://$DIR/docker.sock" \
	>"$DIR/dockerd.log" 2>&1 &
DPID=$!
until D version >/dev/null 2>&1; do sleep 0.2; done

TABBY_SOCKET=$DIR/plugins/tabby.sock TABBY_DATA_DIR=$DIR/tabby TABBY_RUN_DIR=$DIR/run \
	DOCKER_HOST=unix://$DIR/docker.sock NODENAME=node00 IP=10.99.9.10 \
	nsenter --net=/run/netns/$NS bin/tabby daemon >"$DIR/tabby.log" 2>&1 &
TPID=$!
until [ -S "$DIR/plugins/tabby.sock" ]; do sleep 0.2; done

mkdir -p "$DIR/rootfs/bin"
cp "$(command -v busybox)" "$DIR/rootfs/bin/busybox"
for c in sh ping ip sleep; do ln -s busybox "$DIR/rootfs/bin/$c"; done
tar -C "$DIR/rootfs" -c . | D import -c 'CMD ["sh"]' - busybox >/dev/null

set -x
D network create --driver tabby --ipam-driver tabby net1
D run --net net1 --name containerA -tid busybox
D run --net net1 --name containerB -tid busybox
D exec containerA ip addr show cali0
D exec containerA ip route
ip -n "$NS" route
D exec containerA ping -c 3 "$(D inspect -f '{{.NetworkSettings.Networks.net1.IPAddress}}' containerB)"
TABBY_RUN_DIR=$DIR/run nsenter --net=/run/netns/$NS bin/tabby get workloadendpoints

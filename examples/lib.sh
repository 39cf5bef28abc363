# Shared by the example labs: Docker hosts as network namespaces on one
# machine, each with its own dockerd and tabby, one etcd for all (on a unix
# socket, which every namespace reaches), a "switch" namespace whose bridges
# join the hosts and route between subnets. Everything is removed on exit.
# Source it from the repository root, as root.
set -euo pipefail
[ "$(id -u)" = 0 ] || { echo "run as root" >&2; exit 1; }
# TABBY_DOCKERD picks another dockerd (make e2e-29 runs the labs on Docker
# Engine 29); its directory goes first in its PATH, for its runc.
DOCKERD=${TABBY_DOCKERD:-$(command -v dockerd || echo dockerd)}
for b in "$DOCKERD" docker etcd busybox nsenter unshare ip iptables nft; do
	command -v "$b" >/dev/null || { echo "this lab needs $b: run 'make deps' (Debian packages)" >&2; exit 1; }
done
[ -x bin/tabby ] || make build >/dev/null

# TABBY_LAB_ID names the lab (its namespaces end in it); random by default.
LAB_ID=${TABBY_LAB_ID:-$(head -c3 /dev/urandom | od -An -tx1 | tr -d ' \n')}
LAB_DIR=$(mktemp -d "${TMPDIR:-/tmp}/tabby-example.XXXX")
SWITCH=tex-sw-$LAB_ID
LAB_HOSTS=()
LAB_BRIDGES=()
ETCD_PID=
ETCD=unix://$LAB_DIR/etcd:1

lab_cleanup() {
	set +e
	for h in "${LAB_HOSTS[@]}"; do
		local ids
		ids=$(D "$h" ps -aq 2>/dev/null)
		[ -n "$ids" ] && D "$h" rm -f $ids >/dev/null 2>&1
		[ -f "$LAB_DIR/$h/tabby.pid" ] && lab_stop_tabby "$h"
	done
	for h in "${LAB_HOSTS[@]}"; do
		[ -f "$LAB_DIR/$h/docker.pid" ] && kill "$(cat "$LAB_DIR/$h/docker.pid")" 2>/dev/null
	done
	for h in "${LAB_HOSTS[@]}"; do
		for _ in $(seq 50); do [ -f "$LAB_DIR/$h/docker.pid" ] || break; sleep 0.2; done
		ip netns del "tex-$h-$LAB_ID" 2>/dev/null
	done
	ip netns del "$SWITCH" 2>/dev/null
	[ -n "$ETCD_PID" ] && kill "$ETCD_PID" 2>/dev/null && wait "$ETCD_PID" 2>/dev/null
	rm -rf "$LAB_DIR"
}
trap lab_cleanup EXIT

# say prints a heading, as the seeds' prompts do.
say() { printf '\n\033[1m### %s\033[0m\n' "$*"; }
# D HOST ARGS: the docker CLI of a host.
D() { local h=$1; shift; docker -H "unix://$LAB_DIR/$h/docker.sock" "$@"; }
# H HOST CMD: a command in a host's network namespace.
H() { local h=$1; shift; nsenter --net="/run/netns/tex-$h-$LAB_ID" "$@"; }
# T HOST ARGS: the tabby CLI of a host.
T() { local h=$1; shift; H "$h" env ETCD_ENDPOINTS="$ETCD" TABBY_RUN_DIR="$LAB_DIR/$h/run" "$PWD/bin/tabby" "$@"; }

lab_start() {
	ip netns add "$SWITCH"
	ip -n "$SWITCH" link set lo up
	ip netns exec "$SWITCH" sysctl -qw net.ipv4.ip_forward=1
	(cd "$LAB_DIR" && exec etcd --name lab --data-dir "$LAB_DIR/etcd" \
		--listen-client-urls unix://etcd:1 --advertise-client-urls unix://etcd:1 \
		--listen-peer-urls unix://peer:2 --initial-advertise-peer-urls unix://peer:2 \
		--initial-cluster lab=unix://peer:2 --log-level error >"$LAB_DIR/etcd.log" 2>&1) &
	ETCD_PID=$!
	mkdir -p "$LAB_DIR/rootfs/bin" /run/docker/plugins
	cp "$(command -v busybox)" "$LAB_DIR/rootfs/bin/busybox"
	for c in sh ping ip sleep nc cat; do ln -s busybox "$LAB_DIR/rootfs/bin/$c"; done
	tar -C "$LAB_DIR/rootfs" -cf "$LAB_DIR/busybox.tar" .
}

# lab_bridge CIDR: sets BR to the switch's bridge for a subnet, made on
# first use with the subnet's .1 (the hosts' gateway). Not for $(...): it
# records the bridge in this shell.
lab_bridge() {
	local cidr=$1 i
	for i in "${!LAB_BRIDGES[@]}"; do
		[ "${LAB_BRIDGES[$i]}" = "$cidr" ] && { BR=br$i; return; }
	done
	i=${#LAB_BRIDGES[@]}
	LAB_BRIDGES+=("$cidr")
	ip -n "$SWITCH" link add "br$i" type bridge
	ip -n "$SWITCH" addr add "${cidr%.*}.1/${cidr#*/}" dev "br$i"
	ip -n "$SWITCH" link set "br$i" up
	BR=br$i
}

# lab_host NAME IFACE=ADDR/LEN [IFACE=ADDR/LEN...] [-- ENV=VALUE...]: a host
# whose first interface carries its default route, running dockerd (its
# --dns pointed at the host's tabby resolver, so container names resolve
# across hosts) and tabby (with the ENV settings).
lab_host() {
	local name=$1 ns="tex-$1-$LAB_ID" dir="$LAB_DIR/$1" first= n=0 env=()
	shift
	LAB_HOSTS+=("$name")
	mkdir -p "$dir/plugins" "$dir/run"
	ip netns add "$ns"
	ip -n "$ns" link set lo up
	while [ $# -gt 0 ] && [ "$1" != -- ]; do
		local ifc=${1%%=*} addr=${1#*=}
		lab_bridge "${addr%.*}.0/${addr#*/}"
		ip -n "$SWITCH" link add "tx$LAB_ID$n${name: -1}" type veth peer name "$ifc" netns "$ns"
		ip -n "$SWITCH" link set "tx$LAB_ID$n${name: -1}" master "$BR" up
		ip -n "$ns" addr add "$addr" dev "$ifc"
		ip -n "$ns" link set "$ifc" up
		[ -z "$first" ] && first=$addr
		n=$((n + 1))
		shift
	done
	[ "${1:-}" = -- ] && shift && env=("$@")
	ip -n "$ns" route add default via "${first%.*}.1"
	PATH="$(dirname "$DOCKERD"):$PATH" nsenter --net="/run/netns/$ns" unshare --mount --propagation private sh -c \
		"for m in /run/netns/*; do umount -l \$m 2>/dev/null; done; mount --bind $dir/plugins /run/docker/plugins && exec $DOCKERD --data-root $dir/data --exec-root $dir/exec --pidfile $dir/docker.pid -H unix://$dir/docker.sock --dns ${first%/*}" \
		>"$dir/dockerd.log" 2>&1 &
	until D "$name" version >/dev/null 2>&1; do sleep 0.2; done
	D "$name" import -c 'CMD ["sh"]' "$LAB_DIR/busybox.tar" busybox >/dev/null
	lab_tabby "$name" ${env[@]+"${env[@]}"}
}

# lab_tabby HOST [ENV=VALUE...]: start the host's tabby daemon.
lab_tabby() {
	local name=$1 dir="$LAB_DIR/$1"
	shift
	# nsenter and env exec, so $! is the daemon itself.
	# Other names go to the switch (no resolver there): lab traffic stays in
	# the lab's namespaces.
	local gw
	gw=$(ip -n "tex-$name-$LAB_ID" route show default | awk '{print $3; exit}')
	nsenter --net="/run/netns/tex-$name-$LAB_ID" env NODENAME="$name" ETCD_ENDPOINTS="$ETCD" TABBY_SOCKET="$dir/plugins/tabby.sock" \
		TABBY_RUN_DIR="$dir/run" TABBY_DATA_DIR="$dir/tabbydata" DOCKER_HOST="unix://$dir/docker.sock" TABBY_DNS_UPSTREAM="$gw:53" "$@" "$PWD/bin/tabby" daemon >>"$dir/tabby.log" 2>&1 &
	echo $! >"$dir/tabby.pid"
	until [ -S "$dir/plugins/tabby.sock" ]; do
		kill -0 "$(cat "$dir/tabby.pid")" 2>/dev/null || { echo "tabby on $name failed:" >&2; tail -5 "$dir/tabby.log" >&2; exit 1; }
		sleep 0.2
	done
}

# lab_stop_tabby HOST: stop the host's tabby daemon and wait for it.
lab_stop_tabby() {
	local pid
	pid=$(cat "$LAB_DIR/$1/tabby.pid")
	kill "$pid" 2>/dev/null || true
	while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
	rm -f "$LAB_DIR/$1/tabby.pid"
}

# wait_for DESC CMD...: retry CMD for up to 30 s.
wait_for() {
	local desc=$1 i
	shift
	# 30 s; five times that in make test-kernel's emulated guest.
	local n=150
	[ -z "${TABBY_GUEST:-}" ] || n=750
	for i in $(seq $n); do "$@" >/dev/null 2>&1 && return 0; sleep 0.2; done
	echo "timed out waiting for: $desc" >&2
	return 1
}

# ip_of HOST CONTAINER NETWORK
ip_of() { D "$1" inspect -f "{{(index .NetworkSettings.Networks \"$3\").IPAddress}}" "$2"; }

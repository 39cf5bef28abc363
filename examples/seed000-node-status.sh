#!/usr/bin/env bash
# Seed 000: `tabby node status` and the route tables of three hosts in BGP
# mode (blocks via the other hosts), then in IPIP mode (blocks via the
# hosts over tunl0) where the kernel has ipip. Run as root from the
# repository root.
source "$(dirname "$0")/lib.sh"
lab_start
for i in 0 1 2; do lab_host "node0$i" "eth0=192.168.50.1$i/24"; done
T node00 apply -f - <<'YAML' >/dev/null
apiVersion: tabby/v1
kind: IPPool
metadata: {name: pool-244}
spec: {cidr: 10.244.0.0/16, blockSize: 26}
YAML
D node00 network create --driver tabby --ipam-driver tabby --subnet 10.244.0.0/16 net1 >/dev/null
wait_for "net1 everywhere" sh -c "docker -H unix://$LAB_DIR/node02/docker.sock network ls | grep -q net1"
for i in 0 1 2; do D "node0$i" run --net net1 --name "c$i" -tid busybox >/dev/null; done
wait_for "node00 routes both other blocks" sh -c "[ \$(nsenter --net=/run/netns/tex-node00-$LAB_ID ip route | grep -c 'via 192.168.50') -ge 2 ]"

say "node00: tabby node status"
wait_for "two Established peers" sh -c "[ \$(env ETCD_ENDPOINTS=$ETCD TABBY_RUN_DIR=$LAB_DIR/node00/run nsenter --net=/run/netns/tex-node00-$LAB_ID $PWD/bin/tabby node status | grep -c Established) -ge 2 ]"
T node00 node status
say "node00: ip route   (BGP mode)"
H node00 ip route

say "IPIP mode: tabby apply -f pool.yaml with ipipMode: Always"
if T node00 apply -f - <<'YAML'
apiVersion: tabby/v1
kind: IPPool
metadata: {name: pool-244}
spec: {cidr: 10.244.0.0/16, blockSize: 26, ipipMode: Always}
YAML
then
	wait_for "routes over tunl0" sh -c "nsenter --net=/run/netns/tex-node00-$LAB_ID ip route | grep -q tunl0"
	say "node00: ip route   (IPIP mode)"
	H node00 ip route
	say "node00: ip addr show tunl0"
	H node00 ip addr show tunl0
	D node00 exec c0 ping -c 2 "$(ip_of node01 c1 net1)"
else
	echo "(this kernel has no ipip module: tabby refuses IPIP pools; on a kernel with ipip the routes become 'BLOCK via HOST dev tunl0 onlink')"
fi

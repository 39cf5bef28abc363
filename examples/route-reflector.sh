#!/usr/bin/env bash
# Route reflectors: four hosts with the node-to-node mesh off; node00 is a
# reflector (routeReflectorClusterID 224.0.0.1) and every other host peers
# only with it, yet all learn each other's blocks. Run as root from the
# repository root.
source "$(dirname "$0")/lib.sh"
lab_start
for i in 0 1 2 3; do lab_host "node0$i" "eth0=10.99.0.1$i/24"; done
say "tabby apply: mesh off, node00 reflects"
T node00 apply -f - <<'YAML'
apiVersion: tabby/v1
kind: BGPConfiguration
metadata: {name: default}
spec: {nodeToNodeMeshEnabled: false}
---
apiVersion: tabby/v1
kind: Node
metadata: {name: node00}
spec: {bgp: {routeReflectorClusterID: 224.0.0.1}}
YAML
D node00 network create --driver tabby --ipam-driver tabby net1 >/dev/null
wait_for "net1 on node03" sh -c "docker -H unix://$LAB_DIR/node03/docker.sock network ls | grep -q net1"
for i in 1 2 3; do D "node0$i" run --net net1 --name "c$i" -tid busybox >/dev/null; done
wait_for "three clients on the reflector" sh -c "[ \$(env ETCD_ENDPOINTS=$ETCD TABBY_RUN_DIR=$LAB_DIR/node00/run nsenter --net=/run/netns/tex-node00-$LAB_ID $PWD/bin/tabby node status | grep -c Established) -ge 3 ]"
say "node00 (reflector): tabby node status"
T node00 node status
say "node01 (client): tabby node status   (one session, to the reflector)"
T node01 node status
say "node01: ip route   (node02's and node03's blocks, learned through node00)"
wait_for "node01 learned two blocks" sh -c "[ \$(nsenter --net=/run/netns/tex-node01-$LAB_ID ip route | grep -c 'proto 77') -ge 3 ]"
H node01 ip route
say "c1 (node01) -> c3 (node03)"
D node01 exec c1 ping -c 3 "$(ip_of node03 c3 net1)"

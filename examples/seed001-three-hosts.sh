#!/usr/bin/env bash
# Seed 001's lab: node00..node02 share one etcd; net1 and net2, made on
# node00, appear on every host; containerA,B on node00 and C,D on node01.
# Same network talks across hosts, different networks do not. Prints what
# the seed prints: networks, interfaces, routes, profiles, node status.
# Run as root from the repository root (make demo).
source "$(dirname "$0")/lib.sh"
lab_start
for i in 0 1 2; do lab_host "node0$i" "eth0=10.99.0.1$i/24"; done

say "node00: docker network create --driver tabby --ipam-driver tabby net1 / net2"
D node00 network create --driver tabby --ipam-driver tabby net1
D node00 network create --driver tabby --ipam-driver tabby net2
wait_for "net2 on node02" sh -c "docker -H unix://$LAB_DIR/node02/docker.sock network ls | grep -q net2"
say "node02: docker network ls   (tabby created them there)"
D node02 network ls

say "containers: A (net1) and B (net2) on node00, C (net1) and D (net2) on node01"
D node00 run --net net1 --name containerA -tid busybox >/dev/null
D node00 run --net net2 --name containerB -tid busybox >/dev/null
D node01 run --net net1 --name containerC -tid busybox >/dev/null
D node01 run --net net2 --name containerD -tid busybox >/dev/null
IPA=$(ip_of node00 containerA net1) IPB=$(ip_of node00 containerB net2)
IPC=$(ip_of node01 containerC net1) IPD=$(ip_of node01 containerD net2)
echo "containerA $IPA  containerB $IPB  containerC $IPC  containerD $IPD"

say "node00: docker exec containerA ip addr; ip route"
D node00 exec containerA ip addr
D node00 exec containerA ip route
say "node00: ip route   (other hosts' blocks via their address, our block blackholed)"
wait_for "node00 routes node01's block" sh -c "nsenter --net=/run/netns/tex-node00-$LAB_ID ip route | grep -q 'via 10.99.0.11'"
H node00 ip route

say "containerA -> containerC (net1, across hosts)"
D node00 exec containerA ping -c 3 "$IPC"
say "containerA -> containerC by name (tabby's resolver, as old Docker's cluster store did)"
D node00 exec containerA ping -c 3 containerC
say "containerB -> containerD (net2, across hosts)"
D node00 exec containerB ping -c 3 "$IPD"
say "containerA -> containerD (net1 -> net2): isolated, no answer"
D node00 exec containerA ping -c 2 -W 1 "$IPD" || echo "(no answer, as the seed shows)"
say "containerA -> containerB (same host, other network): isolated too"
D node00 exec containerA ping -c 2 -W 1 "$IPB" || echo "(no answer)"

say "node00: tabby node status"
T node00 node status
say "tabby get profile net2 -o yaml"
T node00 get profile net2 -o yaml
say "tabby get workloadendpoints"
T node00 get workloadendpoints
say "done; cleaning up"

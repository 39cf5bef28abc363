#!/usr/bin/env bash
# Seed 002's five IP autodetection cases: vms71 (ens32 on 192.168.26.0/24,
# ens33 on 192.168.30.0/24) and vms72 (eth0 on .30, eth1 on .26). For each
# IP_AUTODETECTION_METHOD both daemons restart, and the script prints the
# address each node registered and the route to the other's block, which
# goes via the chosen NIC's subnet. Run as root from the repository root.
source "$(dirname "$0")/lib.sh"
lab_start
lab_host vms71 ens32=192.168.26.71/24 ens33=192.168.30.71/24
lab_host vms72 eth0=192.168.30.72/24 eth1=192.168.26.72/24
D vms71 network create --driver tabby --ipam-driver tabby net1 >/dev/null
wait_for "net1 on vms72" sh -c "docker -H unix://$LAB_DIR/vms72/docker.sock network ls | grep -q net1"
D vms71 run --net net1 --name c71 -tid busybox >/dev/null
D vms72 run --net net1 --name c72 -tid busybox >/dev/null
for method in "interface=ens33,eth0" "interface=ens32,eth1" "skip-interface=eth1,ens32" "can-reach=192.168.30.1" "cidr=192.168.26.0/24"; do
	say "IP_AUTODETECTION_METHOD=$method"
	for h in vms71 vms72; do lab_stop_tabby "$h"; done
	for h in vms71 vms72; do lab_tabby "$h" IP_AUTODETECTION_METHOD="$method"; done
	T vms71 get nodes
	peer=$(T vms71 get nodes vms72 | awk 'NR==2 {print $2}')
	peer=${peer%/*}
	wait_for "vms71 routes vms72's block via $peer" sh -c \
		"nsenter --net=/run/netns/tex-vms71-$LAB_ID ip route | grep -q 'via $peer '"
	echo "vms71: $(H vms71 ip route | grep "via $peer ")"
	D vms71 exec c71 ping -c 1 -W 2 "$(ip_of vms72 c72 net1)" | grep -E "bytes from|packet loss"
done

#!/bin/bash
# The guest's second stage (see guest.sh): runs on the overlay of the host's
# root, makes it a place dockerd and the labs can run, runs the command and
# powers off. Its exit status goes back through the "status" share.
run=$(sed -n 's/.*tabby.run=\([^ ]*\).*/\1/p' /proc/cmdline)
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:/usr/local/go/bin
. "$run/env"
mount -t tmpfs -o size=80% tmpfs /run
mkdir -p /run/guest-status
mount -t 9p -o trans=virtio,version=9p2000.L status /run/guest-status
finish() {
	echo "$1" > /run/guest-status/rc
	sync
	echo o > /proc/sysrq-trigger
	exec sleep 60 2>/dev/null
}
trap 'finish 124' EXIT

# /tmp and the daemons' directories on tmpfs (dockerd's overlay2 cannot sit
# on the root's overlayfs). A checkout under /tmp (CI's) stays visible: it
# is bound back over the new /tmp.
mkdir -p /run/hosttmp && mount --bind /tmp /run/hosttmp
for d in /tmp /var/lib/docker /var/lib/containerd /var/lib/tabby; do
	mkdir -p "$d" && mount -t tmpfs -o size=80% tmpfs "$d"
done
src=$(dirname "${GUEST_CMD[0]}")
case "$src" in /tmp/*)
	top=/tmp/$(echo "${src#/tmp/}" | cut -d/ -f1)
	mkdir -p "$top" && mount --bind "/run/hosttmp/${top#/tmp/}" "$top"
esac
mount -t cgroup2 none /sys/fs/cgroup
mount -t securityfs none /sys/kernel/security 2>/dev/null || true
mkdir -p /dev/pts /dev/shm && mount -t devpts devpts /dev/pts && mount -t tmpfs tmpfs /dev/shm
# Modules load on demand from the unpacked kernel package (busybox's
# modprobe reads the modules.dep its depmod wrote).
mkdir -p "/lib/modules/$GUEST_KVER" && mount --bind "$GUEST_MODS" "/lib/modules/$GUEST_KVER"
mkdir -p /run/guest-bin && ln -sf /bin/busybox /run/guest-bin/modprobe
echo /run/guest-bin/modprobe > /proc/sys/kernel/modprobe
export PATH=/run/guest-bin:$PATH
ip link set lo up
hostname tabby-guest
if [ -n "$GUEST_OUT" ]; then
	mkdir -p "$GUEST_OUT" && mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144 out "$GUEST_OUT"
fi
echo "guest: kernel $(uname -r), running ${GUEST_CMD[*]}"
cd "$(dirname "${GUEST_CMD[0]}")"
"${GUEST_CMD[@]}"
rc=$?
trap - EXIT
finish "$rc"

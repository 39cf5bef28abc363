#!/usr/bin/env bash
# guest.sh CACHE SCRIPT [ARGS...]: boots Debian's own kernel under QEMU
# (TCG: KVM does not work on this machine) on this machine's root filesystem
# and runs SCRIPT ARGS there as root, for the tests that need modules this
# machine's kernel lacks (ipip, wireguard). The guest sees / read-only
# through 9p with a tmpfs overlay on top, so nothing it writes reaches the
# host but the directory in $TABBY_GUEST_OUT (when set), shared writable.
# Exits with SCRIPT's status. The kernel package is downloaded (not
# installed) once into CACHE.
set -euo pipefail
cache=$1; shift
script=$(readlink -f "$1"); shift
here=$(cd "$(dirname "$0")" && pwd)

command -v qemu-system-x86_64 >/dev/null || {
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends qemu-system-x86 >/dev/null
}
mkdir -p "$cache"
if ! ls "$cache"/x/boot/vmlinuz-* >/dev/null 2>&1; then
	pkg=$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-/{print $2; exit}')
	[ -n "$pkg" ] || { echo "guest.sh: apt knows no linux-image-amd64 (run apt-get update)" >&2; exit 1; }
	(cd "$cache" && rm -rf x ./*.deb && apt-get download -qq "$pkg" 2>/dev/null && dpkg-deb -x ./*.deb x.new && mv x.new x && rm -f ./*.deb)
fi
kver=$(ls "$cache"/x/lib/modules | head -1)
mods=$cache/x/lib/modules/$kver
[ -f "$mods/modules.dep" ] || busybox depmod -b "$cache/x" "$kver"

# The initramfs: static busybox and the modules that mount the host's root.
if [ ! -f "$cache/initrd-$kver" ]; then
	ir=$(mktemp -d)
	mkdir -p "$ir"/bin "$ir"/mods "$ir"/proc "$ir"/sys "$ir"/dev "$ir"/host "$ir"/up "$ir"/newroot
	cp /bin/busybox "$ir"/bin/busybox
	for m in virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci netfs fscache 9pnet 9pnet_virtio 9p overlay; do
		cp "$(find "$mods" -name "$m.ko" | head -1)" "$ir"/mods/
	done
	cat > "$ir"/init <<'EOF'
#!/bin/busybox sh
B=/bin/busybox
$B mount -t proc proc /proc
$B mount -t sysfs sys /sys
$B mount -t devtmpfs dev /dev
for m in virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci netfs fscache 9pnet 9pnet_virtio 9p overlay; do
	$B insmod /mods/$m.ko || echo "guest: insmod $m failed"
done
$B mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=262144 hostroot /host
$B mount -t tmpfs -o size=75% up /up
$B mkdir -p /up/u /up/w
$B mount -t overlay -o lowerdir=/host,upperdir=/up/u,workdir=/up/w root /newroot
stage2=$($B sed -n 's/.*tabby.stage2=\([^ ]*\).*/\1/p' /proc/cmdline)
$B mount --move /dev /newroot/dev
$B mount --move /sys /newroot/sys
$B mount --move /proc /newroot/proc
exec $B switch_root /newroot /bin/bash "$stage2"
EOF
	chmod +x "$ir"/init
	(cd "$ir" && find . | busybox cpio -o -H newc 2>/dev/null) > "$cache/initrd-$kver.new"
	mv "$cache/initrd-$kver.new" "$cache/initrd-$kver"
	rm -rf "$ir"
fi

# What the guest runs: the second stage (on the host's filesystem, read in
# the guest) is handed the script through a file of its own.
run=$(mktemp -d /tmp/tabby-guest.XXXXXX)
trap 'rm -rf "$run"' EXIT
{
	printf 'GUEST_MODS=%q\nGUEST_KVER=%q\nGUEST_RUN=%q\nGUEST_OUT=%q\n' "$mods" "$kver" "$run" "${TABBY_GUEST_OUT:-}"
	printf 'GUEST_CMD=(%s)\n' "$(printf '%q ' "$script" "$@")"
	# Only what the tests read from the environment crosses over.
	env | grep -E '^(TABBY_[A-Z0-9_]*|GOFLAGS|GOCACHE)=' | sed 's/^/export /; s/=\(.*\)/=\x27\1\x27/' || true
} > "$run/env"
share=()
if [ -n "${TABBY_GUEST_OUT:-}" ]; then
	mkdir -p "$TABBY_GUEST_OUT"
	share=(-fsdev "local,id=o,path=$TABBY_GUEST_OUT,security_model=passthrough,multidevs=remap" -device virtio-9p-pci,fsdev=o,mount_tag=out)
fi
mkdir -p "$run/status"
qemu-system-x86_64 -accel tcg,thread=multi -cpu max -m "${TABBY_GUEST_MEM:-4096}" -smp 2 -nographic -no-reboot -nic none \
	-kernel "$cache/x/boot/vmlinuz-$kver" -initrd "$cache/initrd-$kver" \
	-fsdev local,id=r,path=/,security_model=passthrough,readonly=on,multidevs=remap -device virtio-9p-pci,fsdev=r,mount_tag=hostroot \
	-fsdev "local,id=s,path=$run/status,security_model=passthrough" -device virtio-9p-pci,fsdev=s,mount_tag=status \
	"${share[@]}" \
	-append "console=ttyS0 quiet panic=-1 tabby.stage2=$here/guest-stage2.sh tabby.run=$run" </dev/null
rc=$(cat "$run/status/rc" 2>/dev/null || echo 125)
[ "$rc" = 0 ] || echo "guest.sh: $script exited $rc in the guest" >&2
exit "$rc"

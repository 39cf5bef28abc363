#!/usr/bin/env bash
# Builds tabby's managed plugin directory (config.json + rootfs) from this
# machine's binaries and creates it in the Docker at $DOCKER_HOST (default:
# the local one) as $PLUGIN (default tabby:latest), replacing an older one.
#
# The rootfs holds the static tabby binary and the tools tabby runs:
# iptables/ip6tables (xtables-nft-multi and its extensions) and nft, each
# with the shared libraries ldd names.
set -euo pipefail
BIN=${1:?usage: make-plugin.sh BIN CONFIG OUTDIR}
CONFIG=${2:?}
OUT=${3:?}
PLUGIN=${PLUGIN:-tabby:latest}
export PATH="$PATH:/usr/sbin:/sbin"

rm -rf "$OUT"
ROOT="$OUT/rootfs"
mkdir -p "$ROOT"/{usr/sbin,usr/bin,usr/lib,usr/lib64,etc,run,tmp,proc,sys,dev,var/lib/tabby,run/tabby,run/docker/plugins}
# Debian's merged /usr: /lib, /lib64, /bin and /sbin are links into /usr, so
# every path ldd or the binaries name resolves inside the rootfs.
for d in lib lib64 bin sbin; do ln -s "usr/$d" "$ROOT/$d"; done
cp "$CONFIG" "$OUT/config.json"
install -m 0755 "$BIN" "$ROOT/tabby"

copy() { # copy a file to its real path in the rootfs, linked from the path given
	local f named
	f=$(readlink -f "$1")
	mkdir -p "$ROOT$(dirname "$f")"
	cp "$f" "$ROOT$f"
	named="$(readlink -f "$(dirname "$1")")/$(basename "$1")"
	if [ "$named" != "$f" ] && [ ! -e "$ROOT$named" ]; then
		mkdir -p "$ROOT$(dirname "$named")"
		ln -s "$f" "$ROOT$named"
	fi
}
need() {
	local p
	p=$(command -v "$1") || { echo "make-plugin: $1 not found: install the ${2} package" >&2; exit 1; }
	readlink -f "$p"
}
XT=$(need xtables-nft-multi iptables)
NFT=$(need nft nftables)
for b in "$XT" "$NFT"; do
	copy "$b"
	for lib in $(ldd "$b" | awk '/=>/ {print $3} /ld-linux/ {print $1}'); do
		copy "$lib"
	done
done
for name in iptables ip6tables iptables-save ip6tables-save iptables-restore ip6tables-restore; do
	ln -sf "$XT" "$ROOT/usr/sbin/$name"
done
if [ "$NFT" != /usr/sbin/nft ]; then ln -sf "$NFT" "$ROOT/usr/sbin/nft"; fi
XTDIR=$(readlink -f "$(dirname "$(ldd "$XT" | awk '/libxtables/ {print $3}')")/xtables")
mkdir -p "$ROOT$XTDIR"
cp -a "$XTDIR"/. "$ROOT$XTDIR"/
for lib in $(ldd "$XTDIR"/*.so 2>/dev/null | awk '/=>/ {print $3}' | sort -u); do
	copy "$lib"
done
for f in /etc/protocols /etc/services /etc/ethertypes; do
	[ -e "$f" ] && copy "$f"
done
echo "hosts: files" > "$ROOT/etc/nsswitch.conf"

docker plugin rm -f "$PLUGIN" >/dev/null 2>&1 || true
docker plugin create "$PLUGIN" "$OUT"

package dataplane

import (
	"errors"
	"net"
	"net/netip"
	"os/exec"
	"strings"
	"testing"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// kernelHasWireGuard asks iproute2, independently of tabby.
func kernelHasWireGuard(ns string) bool {
	err := exec.Command("ip", "-n", ns, "link", "add", "oracle0", "type", "wireguard").Run()
	exec.Command("ip", "-n", ns, "link", "del", "oracle0").Run()
	return err == nil
}

func TestWireGuardSupportMatchesTheKernel(t *testing.T) {
	ns := testNS(t)
	d := newDP(t, ns)
	err := d.WireGuardSupported()
	if kernelHasWireGuard(ns) {
		if err != nil {
			t.Fatalf("this kernel has wireguard, yet WireGuardSupported says %v", err)
		}
	} else if err == nil || !errors.Is(err, ErrNoWireGuard) || !strings.Contains(err.Error(), "wireguard module") {
		t.Fatalf("without the wireguard module the error must name it: %v", err)
	}
	if out := inNS(t, ns, "ip", "-o", "link"); strings.Contains(out, wgProbe) || strings.Contains(out, WireGuardDevice) {
		t.Fatalf("the probe device was left behind: %s", out)
	}
	if _, err := d.EnsureWireGuard(mustKey(t), 1440, netip.Addr{}, nil); err != nil && !errors.Is(err, ErrNoWireGuard) {
		t.Fatalf("EnsureWireGuard without the module: %v", err)
	}
}

func mustKey(t *testing.T) wgtypes.Key {
	t.Helper()
	k, err := wgtypes.GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// Two namespaces on one veth, each with tabby's wireguard.tabby and a
// "block" behind it: a ping between the blocks crosses only encrypted (the
// peers handshake), and clearing removes device and routes.
func TestWireGuardDevice(t *testing.T) {
	nsA, nsB := testNS(t), testNS(t)
	if !kernelHasWireGuard(nsA) {
		skipForKernel(t, "this kernel has no wireguard module (ip link add type wireguard fails)")
	}
	inNS(t, nsA, "ip", "link", "add", "a0", "type", "veth", "peer", "name", "b0", "netns", nsB)
	for _, c := range [][]string{{nsA, "a0", "10.2.0.1/24", "10.244.1.1/32"}, {nsB, "b0", "10.2.0.2/24", "10.244.2.1/32"}} {
		inNS(t, c[0], "ip", "addr", "add", c[2], "dev", c[1])
		inNS(t, c[0], "ip", "link", "set", c[1], "up")
		inNS(t, c[0], "ip", "addr", "add", c[3], "dev", "lo")
		inNS(t, c[0], "ip", "link", "set", "lo", "up")
	}
	dA, dB := newDP(t, nsA), newDP(t, nsB)
	kA, kB := mustKey(t), mustKey(t)
	blockA, blockB := netip.MustParsePrefix("10.244.1.0/26"), netip.MustParsePrefix("10.244.2.0/26")
	up := func(d *Dataplane, key, peer wgtypes.Key, addr, at string, block netip.Prefix) {
		t.Helper()
		idx, err := d.EnsureWireGuard(key, 1440, netip.MustParseAddr(addr), []WGPeer{{PublicKey: peer.PublicKey(),
			Endpoint: netip.MustParseAddrPort(at), AllowedIPs: []netip.Prefix{block}}})
		if err != nil {
			t.Fatal(err)
		}
		if err := d.Table().Sync(KindWireGuard, []Route{{Dst: block, Link: idx}}); err != nil {
			t.Fatal(err)
		}
	}
	up(dA, kA, kB, "10.244.1.2", "10.2.0.2:51820", blockB)
	up(dB, kB, kA, "10.244.2.2", "10.2.0.1:51820", blockA)
	if r := inNS(t, nsA, "ip", "route", "show", "proto", "77"); !strings.Contains(r, "10.244.2.0/26 dev wireguard.tabby scope link") {
		t.Fatalf("WireGuard route: %s", r)
	}
	if l := inNS(t, nsA, "ip", "-d", "link", "show", WireGuardDevice); !strings.Contains(l, "mtu 1440") || !strings.Contains(l, "wireguard") {
		t.Fatalf("wireguard.tabby: %s", l)
	}
	if out, err := exec.Command("ip", "netns", "exec", nsA, "busybox", "ping", "-c", "2", "-W", "2", "-I", "10.244.1.1", "10.244.2.1").CombinedOutput(); err != nil {
		t.Fatalf("block to block over WireGuard: %v\n%s", err, out)
	}
	// The host's own traffic leaves from the device's address, inside its
	// block, so the peer takes it and answers over the tunnel.
	if out, err := exec.Command("ip", "netns", "exec", nsA, "busybox", "ping", "-c", "1", "-W", "2", "10.244.2.1").CombinedOutput(); err != nil {
		t.Fatalf("host to block over WireGuard: %v\n%s", err, out)
	}
	if a := inNS(t, nsA, "ip", "-4", "addr", "show", WireGuardDevice); !strings.Contains(a, "inet 10.244.1.2/32") {
		t.Fatalf("wireguard.tabby's address: %s", a)
	}
	dev, ok, err := dA.WireGuard()
	if err != nil || !ok || dev.PublicKey != kA.PublicKey() || dev.ListenPort != WireGuardPort || len(dev.Peers) != 1 ||
		dev.Peers[0].LastHandshakeTime.IsZero() || dev.Peers[0].ReceiveBytes == 0 {
		t.Fatalf("after the ping the peer must have handshaked and sent: %+v %v %v", dev, ok, err)
	}

	// Asked again for the same, the device keeps its session (no new
	// handshake for a change elsewhere in the cluster).
	before := dev.Peers[0].LastHandshakeTime
	up(dA, kA, kB, "10.244.1.2", "10.2.0.2:51820", blockB)
	if dev, _, _ := dA.WireGuard(); len(dev.Peers) != 1 || !dev.Peers[0].LastHandshakeTime.Equal(before) {
		t.Fatalf("an unchanged peer must keep its session: %+v", dev.Peers)
	}

	// Peers are replaced, not added to; the address is the one given.
	if _, err := dA.EnsureWireGuard(kA, 1440, netip.Addr{}, nil); err != nil {
		t.Fatal(err)
	}
	if a := inNS(t, nsA, "ip", "-4", "addr", "show", WireGuardDevice); strings.Contains(a, "inet ") {
		t.Fatalf("wireguard.tabby keeps an address it was not given: %s", a)
	}
	if dev, _, _ := dA.WireGuard(); len(dev.Peers) != 0 {
		t.Fatalf("peers must be exactly those given: %+v", dev.Peers)
	}
	for i := 0; i < 2; i++ { // the second time there is nothing left to remove
		if err := dA.ClearWireGuard(); err != nil {
			t.Fatal(err)
		}
	}
	if r := inNS(t, nsA, "ip", "route", "show", "proto", "77"); r != "" {
		t.Fatalf("routes left after ClearWireGuard: %s", r)
	}
	if l := inNS(t, nsA, "ip", "-o", "link"); strings.Contains(l, WireGuardDevice) {
		t.Fatalf("wireguard.tabby left: %s", l)
	}
}

func TestWireGuardChangesTouchOnlyWhatDiffers(t *testing.T) {
	key, k1, k2 := mustKey(t), mustKey(t), mustKey(t)
	b1 := netip.MustParsePrefix("10.244.1.0/26")
	dev := &wgtypes.Device{PrivateKey: key, ListenPort: WireGuardPort, Peers: []wgtypes.Peer{
		{PublicKey: k1.PublicKey(), Endpoint: net.UDPAddrFromAddrPort(netip.MustParseAddrPort("10.0.0.1:51820")), AllowedIPs: []net.IPNet{*prefixNet(b1)}},
		{PublicKey: k2.PublicKey(), Endpoint: net.UDPAddrFromAddrPort(netip.MustParseAddrPort("10.0.0.2:51820"))},
	}}
	// The device's endpoint in its 16-byte form, as the kernel may give it.
	dev.Peers[0].Endpoint.IP = dev.Peers[0].Endpoint.IP.To16()
	same := WGPeer{PublicKey: k1.PublicKey(), Endpoint: netip.MustParseAddrPort("10.0.0.1:51820"), AllowedIPs: []netip.Prefix{b1}}
	cfg, change := wgChanges(dev, key, []WGPeer{same})
	if !change || cfg.PrivateKey != nil || len(cfg.Peers) != 1 || cfg.Peers[0].PublicKey != k2.PublicKey() || !cfg.Peers[0].Remove {
		t.Fatalf("only the unwanted peer must go: %+v", cfg)
	}
	if _, change := wgChanges(&wgtypes.Device{PrivateKey: key, ListenPort: WireGuardPort, Peers: dev.Peers[:1]}, key, []WGPeer{same}); change {
		t.Fatal("nothing differs, nothing may change")
	}
	moved := same
	moved.AllowedIPs = append(moved.AllowedIPs, netip.MustParsePrefix("10.244.9.0/26"))
	cfg, _ = wgChanges(&wgtypes.Device{PrivateKey: mustKey(t), ListenPort: 1, Peers: dev.Peers[:1]}, key, []WGPeer{moved})
	if cfg.PrivateKey == nil || *cfg.PrivateKey != key || cfg.ListenPort == nil || len(cfg.Peers) != 1 || len(cfg.Peers[0].AllowedIPs) != 2 || !cfg.Peers[0].ReplaceAllowedIPs {
		t.Fatalf("key, port and the changed peer must be set: %+v", cfg)
	}
}

// A device EnsureWireGuard created is removed again when configuring it
// fails.
func TestWireGuardUndoesOnFailure(t *testing.T) {
	ns := testNS(t)
	if !kernelHasWireGuard(ns) {
		skipForKernel(t, "this kernel has no wireguard module (ip link add type wireguard fails)")
	}
	d := newDP(t, ns)
	d.wg.once.Do(func() {}) // the control socket "fails to open"
	d.wg.err = errors.New("no control socket")
	if _, err := d.EnsureWireGuard(mustKey(t), 1440, netip.Addr{}, nil); err == nil || !strings.Contains(err.Error(), "no control socket") {
		t.Fatalf("EnsureWireGuard must fail: %v", err)
	}
	if l := inNS(t, ns, "ip", "-o", "link"); strings.Contains(l, WireGuardDevice) {
		t.Fatalf("the half-made device was left: %s", l)
	}
}

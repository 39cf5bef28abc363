package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tabbynet/tabby/plugin/e2e/lab"
)

func applyYAML(t *testing.T, l *lab.Lab, h *lab.Host, name, doc string) {
	t.Helper()
	mustTabby(t, h, "apply", "-f", writeFile(t, l, name, doc))
}

// writeFile puts doc in the lab's directory and returns its path.
func writeFile(t testing.TB, l *lab.Lab, name, doc string) string {
	t.Helper()
	f := filepath.Join(l.Dir, name)
	if err := os.WriteFile(f, []byte(doc), 0o644); err != nil {
		t.Fatal(err)
	}
	return f
}

// With the mesh off, node02 reflects: node00 and node01 peer only with it,
// and still learn each other's blocks (next hop kept) and reach each other.
func TestRouteReflectorTopology(t *testing.T) {
	l := lab.New(t, lab.Options{Hosts: 3})
	n0, n1, n2 := l.Hosts[0], l.Hosts[1], l.Hosts[2]
	applyYAML(t, l, n0, "rr.yaml", "apiVersion: tabby/v1\nkind: Node\nmetadata: {name: node02}\nspec: {bgp: {routeReflectorClusterID: 224.0.0.1}}\n"+
		"---\napiVersion: tabby/v1\nkind: BGPConfiguration\nmetadata: {name: default}\nspec: {asNumber: 64512, nodeToNodeMeshEnabled: false}\n")
	rr := regexp.MustCompile(`\| ` + regexp.QuoteMeta(n2.Addr) + ` +\| route reflector \| up +\| \S+ +\| Established \|`)
	for _, h := range []*lab.Host{n0, n1} {
		eventually(t, 30*time.Second, h.Name+" peers only with the reflector", func() (string, bool) {
			out, _ := h.Tabby("node", "status")
			return out, rr.MatchString(out) && strings.Count(out, "Established") == 1
		})
	}
	eventually(t, 30*time.Second, "the reflector has both clients", func() (string, bool) {
		out, _ := n2.Tabby("node", "status")
		return out, strings.Count(out, "| route reflector | up") == 2
	})
	createEverywhere(t, l, n0, "net1")
	must(t, n0, "run", "--net", "net1", "--name", "containerA", "-tid", "busybox")
	must(t, n1, "run", "--net", "net1", "--name", "containerC", "-tid", "busybox")
	ipA, ipC := ipOf(t, n0, "containerA", "net1"), ipOf(t, n1, "containerC", "net1")
	eventually(t, 30*time.Second, "node00 learns node01's block through the reflector", func() (string, bool) {
		r, _ := n0.Exec("ip", "route")
		return r, strings.Contains(r, blockOf(ipC)+" via "+n1.Addr+" dev eth0 proto 77")
	})
	mustPing(t, n0, "containerA", ipC)
	mustPing(t, n1, "containerC", ipA)
}

// startGoBGPD runs Debian's gobgpd in the lab's switch as AS 65000 at
// 10.99.0.1, peering with every host under an MD5 password, and returns its
// CLI.
func startGoBGPD(t *testing.T, l *lab.Lab, password string) func(args ...string) (string, error) {
	t.Helper()
	return startGoBGPDAs(t, l, 65000, password)
}

// startGoBGPDAs is startGoBGPD in AS as (64512: the hosts' own, as a node).
func startGoBGPDAs(t *testing.T, l *lab.Lab, as int, password string) func(args ...string) (string, error) {
	t.Helper()
	if _, err := exec.LookPath("gobgpd"); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("CI must install gobgpd")
		}
		t.Skip("needs Debian's gobgpd: " + err.Error())
	}
	conf := fmt.Sprintf("[global.config]\n  as = %d\n", as) + "  router-id = \"10.99.0.1\"\n  local-address-list = [\"10.99.0.1\"]\n"
	for _, h := range l.Hosts {
		conf += fmt.Sprintf("[[neighbors]]\n  [neighbors.config]\n    neighbor-address = %q\n    peer-as = 64512\n    auth-password = %q\n", h.Addr, password)
	}
	cf := filepath.Join(l.Dir, "gobgpd.toml")
	os.WriteFile(cf, []byte(conf), 0o644)
	logf, _ := os.Create(filepath.Join(l.Dir, "gobgpd.log"))
	tor := l.InSwitch("gobgpd", "-f", cf, "--api-hosts", "127.0.0.1:50151")
	tor.Stdout, tor.Stderr = logf, logf
	tor.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := tor.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tor.Process.Kill(); tor.Wait() })
	return func(args ...string) (string, error) {
		out, err := l.InSwitch(append([]string{"gobgp", "-u", "127.0.0.1", "-p", "50151"}, args...)...).CombinedOutput()
		return string(out), err
	}
}

// Debian's gobgpd stands for a top-of-rack router: configured as a global
// BGPPeer with an MD5 password it learns every host's blocks, and a route it
// announces reaches the hosts' kernels when the peer's BGPFilter accepts
// it (a Reject rule first, and what no rule accepts, stay out).
func TestExternalBGPPeer(t *testing.T) {
	l := lab.New(t, lab.Options{Hosts: 2})
	n0, n1 := l.Hosts[0], l.Hosts[1]
	gobgp := startGoBGPD(t, l, "s3cret")
	// What the router may announce is opted in with a BGPFilter: its
	// 10.200.0.0/16, but not 10.200.9.0/24.
	applyYAML(t, l, n0, "tor.yaml", "apiVersion: tabby/v1\nkind: BGPFilter\nmetadata: {name: tor-in}\n"+
		"spec:\n  importV4:\n  - {action: Reject, matchOperator: Equal, cidr: 10.200.9.0/24}\n  - {action: Accept, matchOperator: In, cidr: 10.200.0.0/16}\n---\n"+
		"apiVersion: tabby/v1\nkind: BGPPeer\nmetadata: {name: tor-1}\nspec: {peerIP: 10.99.0.1, asNumber: 65000, password: s3cret, filters: [tor-in]}\n")

	must(t, n0, "network", "create", tabbyNet, tabbyIPAM, "net1")
	must(t, n0, "run", "--net", "net1", "--name", "containerA", "-tid", "busybox")
	ipA := ipOf(t, n0, "containerA", "net1")
	eventually(t, 30*time.Second, "the router learns node00's block from node00", func() (string, bool) {
		out, _ := gobgp("global", "rib")
		return out, regexp.MustCompile(regexp.QuoteMeta(blockOf(ipA)) + ` +` + regexp.QuoteMeta(n0.Addr)).MatchString(out)
	})
	for _, p := range []string{"10.200.0.0/24", "10.200.9.0/24", "10.201.0.0/24"} {
		if out, err := gobgp("global", "rib", "add", p, "nexthop", "10.99.0.1"); err != nil {
			t.Fatalf("announce %s from gobgpd: %v %s", p, err, out)
		}
	}
	for _, h := range []*lab.Host{n0, n1} {
		eventually(t, 30*time.Second, h.Name+" installs the router's route", func() (string, bool) {
			r, _ := h.Exec("ip", "route")
			return r, strings.Contains(r, "10.200.0.0/24 via 10.99.0.1 dev eth0 proto 77")
		})
	}
	for _, h := range []*lab.Host{n0, n1} {
		if r, _ := h.Exec("ip", "route"); strings.Contains(r, "10.200.9.0/24") || strings.Contains(r, "10.201.0.0/24") {
			t.Fatalf("%s installed what the BGPFilter does not accept:\n%s", h.Name, r)
		}
	}
	if out := mustTabby(t, n0, "get", "bgpfilters"); !strings.Contains(out, "tor-in") {
		t.Fatalf("get bgpfilters:\n%s", out)
	}
	eventually(t, 30*time.Second, "node status lists the router as a global peer", func() (string, bool) {
		out, _ := n1.Tabby("node", "status")
		return out, regexp.MustCompile(`\| 10\.99\.0\.1 +\| global +\| up`).MatchString(out)
	})
	if out, err := gobgp("global", "rib", "del", "10.200.0.0/24"); err != nil {
		t.Fatalf("withdraw from gobgpd: %v %s", err, out)
	}
	eventually(t, 30*time.Second, "withdrawn route leaves the kernel", func() (string, bool) {
		r, _ := n1.Exec("ip", "route")
		return r, !strings.Contains(r, "10.200.0.0/24")
	})
}

package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tabbynet/tabby/plugin/e2e/lab"
)

// composeBin is Docker Compose v2, built by `make compose`.
func composeBin(t *testing.T) string {
	t.Helper()
	bin := os.Getenv("TABBY_COMPOSE")
	if bin == "" {
		bin = "/var/cache/tabby/compose/docker-compose"
	}
	if _, err := os.Stat(bin); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("CI must build Docker Compose (make compose): " + err.Error())
		}
		t.Skip("needs Docker Compose: run make compose (" + err.Error() + ")")
	}
	return bin
}

// compose runs Docker Compose against host h's dockerd.
func compose(t *testing.T, bin string, h *lab.Host, dir string, args ...string) (string, error) {
	cmd := exec.Command(bin, append([]string{"--project-directory", dir, "-f", filepath.Join(dir, "compose.yaml")}, args...)...)
	cmd.Env = append(os.Environ(), "DOCKER_HOST=unix://"+h.DockerSock)
	out, err := cmd.CombinedOutput()
	return strings.TrimSpace(string(out)), err
}

const composeFile = `name: shop
services:
  web:
    image: busybox
    command: ["nc", "-ll", "-p", "80", "-e", "echo", "web"]
    networks: [front, shared]
  client:
    image: busybox
    command: ["sleep", "3600"]
    networks: [front]
  api:
    image: busybox
    command: ["nc", "-ll", "-p", "80", "-e", "echo", "api"]
    networks: [front]
networks:
  front:
    driver: tabby
    driver_opts: {com.docker.network.driver.mtu: "1400"}
    ipam:
      driver: tabby
      config: [{subnet: 10.40.0.0/16}]
  shared:
    external: true
`

// One compose file, `docker compose up` on two hosts with the same
// project: the network Compose creates on the first host is mirrored to
// the second with Compose's labels, so Compose there takes it; driver_opts
// and ipam.config apply on both; an external network works; the services
// reach each other across hosts; `down` on the first host leaves the
// second's containers working; a service on one host resolves by its name
// on the other through tabby's DNS.
func TestComposeOnTwoHosts(t *testing.T) {
	const fault = "compose"
	bin := composeBin(t)
	l := lab.New(t, lab.Options{Hosts: 2, DNS: true})
	n0, n1 := l.Hosts[0], l.Hosts[1]
	applyYAML(t, l, n0, "pool.yaml", "apiVersion: tabby/v1\nkind: IPPool\nmetadata: {name: shop}\nspec: {cidr: 10.40.0.0/16}\n")
	createEverywhere(t, l, n0, "shared")
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "compose.yaml"), []byte(composeFile), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := compose(t, bin, n0, dir, "up", "-d")
	report(t, fault, "docker compose up on node00", firstLine(out, "rror"), err == nil)
	if err != nil {
		t.Fatalf("compose up on node00: %v\n%s", err, out)
	}
	eventually(t, 15*time.Second, "shop_front mirrored to node01", func() (string, bool) {
		out, _ := n1.Docker("network", "inspect", "-f", `{{index .Labels "com.docker.compose.network"}} {{index .Labels "com.docker.compose.project"}}`, "shop_front")
		return out, out == "front shop"
	})
	report(t, fault, "the mirror on node01 carries Compose's labels", "front shop", true)
	out, err = compose(t, bin, n1, dir, "up", "-d", "web", "client") // api runs on node00 only
	report(t, fault, "docker compose up on node01 (same project)", firstLine(out, "rror"), err == nil)
	if err != nil {
		t.Fatalf("compose up on node01: %v\n%s", err, out)
	}
	ip0 := ipOf(t, n0, "shop-web-1", "shop_front")
	ip1 := ipOf(t, n1, "shop-web-1", "shop_front")
	inPool := strings.HasPrefix(ip0, "10.40.") && strings.HasPrefix(ip1, "10.40.")
	report(t, fault, "ipam.config subnet on both hosts", ip0+" "+ip1, inPool)
	mtu, _ := n1.Docker("exec", "shop-client-1", "cat", "/sys/class/net/cali0/mtu")
	report(t, fault, "driver_opts mtu on node01", mtu, mtu == "1400")
	for _, c := range []struct {
		h    *lab.Host
		ip   string
		what string
	}{{n1, ip0, "node01's client reaches node00's web"}, {n0, ip1, "node00's client reaches node01's web"}} {
		var got string
		for i := 0; i < 20 && got != "web"; i++ {
			got, _ = c.h.Docker("exec", "shop-client-1", "sh", "-c", "echo | nc -w 2 "+c.ip+" 80")
			time.Sleep(250 * time.Millisecond)
		}
		report(t, fault, c.what, got, got == "web")
	}
	// A service that runs on the other host only resolves by its name
	// through tabby's DNS (Docker's own resolver knows its host's only),
	// for containers of its network and no other.
	ipAPI := ipOf(t, n0, "shop-api-1", "shop_front")
	var ns string
	for i := 0; i < 20 && !strings.Contains(ns, ipAPI); i++ {
		ns, _ = n1.Docker("exec", "shop-client-1", "nslookup", "api")
		time.Sleep(250 * time.Millisecond)
	}
	report(t, fault, "node01's client resolves service api (on node00 only)", firstLine(ns, ipAPI), strings.Contains(ns, ipAPI))
	got, _ := n1.Docker("exec", "shop-client-1", "sh", "-c", "echo | nc -w 2 api 80")
	report(t, fault, "node01's client reaches api by name", got, got == "api")
	must(t, n1, "run", "--net", "shared", "--name", "outsider", "-tid", "busybox")
	ns, _ = n1.Docker("exec", "outsider", "nslookup", "api")
	report(t, fault, "a container of another network resolves api", firstLine(ns, "Address"), !strings.Contains(ns, ipAPI))
	ipShared := ipOf(t, n0, "shop-web-1", "shared")
	report(t, fault, "the external network is attached", ipShared, ipShared != "")

	out, err = compose(t, bin, n0, dir, "down")
	report(t, fault, "docker compose down on node00", firstLine(out, "rror"), err == nil)
	got = ""
	for i := 0; i < 20 && got != "web"; i++ {
		got, _ = n1.Docker("exec", "shop-client-1", "sh", "-c", "echo | nc -w 2 "+ip1+" 80")
		time.Sleep(250 * time.Millisecond)
	}
	report(t, fault, "after down on node00, node01's services still talk", got, got == "web")
	n1.Docker("rm", "-f", "outsider")
	out, err = compose(t, bin, n1, dir, "down")
	report(t, fault, "docker compose down on node01", firstLine(out, "rror"), err == nil)
}

package e2e

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tabbynet/tabby/plugin/e2e/lab"
)

// report records one row of `make reliability-report`: the fault, what
// was checked, the figure measured, and whether it passed. A failed row
// also fails the test.
func report(t *testing.T, fault, check, figure string, pass bool) {
	t.Helper()
	result := "pass"
	if !pass {
		result = "FAIL"
		t.Errorf("%s: %s: %s", fault, check, figure)
	}
	t.Logf("REPORT\t%s\t%s\t%s\t%s", fault, check, figure, result)
}

var receivedRE = regexp.MustCompile(`(\d+) packets transmitted, (\d+) packets received`)

// pingFor pings ip from ctr n times, 0.2 s apart, and returns how many
// answers were lost (n when the output is unreadable).
func pingFor(h *lab.Host, ctr, ip string, n int) (lost int, out string) {
	out, _ = h.Docker("exec", ctr, "ping", "-c", strconv.Itoa(n), "-i", "0.2", "-W", "1", ip)
	m := receivedRE.FindStringSubmatch(out)
	if m == nil {
		return n, out
	}
	got, _ := strconv.Atoi(m[2])
	return n - got, out
}

// isolated reports whether ctr fails to reach ip (another network's).
func isolated(h *lab.Host, ctr, ip string) bool {
	_, ok := pings(h, ctr, ip)
	return !ok
}

// forgedSource is an address containerA holds but tabby never gave it.
const forgedSource = "192.168.250.250"

// forgedDropped reports whether containerA's packets from forgedSource to
// ip go unanswered.
func forgedDropped(h *lab.Host, ip string) bool {
	_, err := h.Docker("exec", "containerA", "ping", "-c", "2", "-W", "1", "-I", forgedSource, ip)
	return err != nil
}

// ipamClean runs `tabby ipam check` and reports its verdict.
func ipamClean(h *lab.Host) (bool, string) {
	out, err := h.Tabby("ipam", "check")
	return err == nil && strings.Contains(out, "IPAM is consistent"), out
}

// twoHostLab: net1 and net2 on two hosts, A (net1) on node00, C (net1) and
// X (net2) on node01, with A reaching C.
func twoHostLab(t *testing.T) (l *lab.Lab, n0, n1 *lab.Host, ipC, ipX string) {
	l = lab.New(t, lab.Options{Hosts: 2})
	n0, n1 = l.Hosts[0], l.Hosts[1]
	createEverywhere(t, l, n0, "net1")
	createEverywhere(t, l, n0, "net2")
	must(t, n0, "run", "--net", "net1", "--name", "containerA", "--restart", "always", "--cap-add", "NET_ADMIN", "-tid", "busybox")
	must(t, n0, "exec", "containerA", "ip", "addr", "add", forgedSource+"/32", "dev", "cali0")
	must(t, n1, "run", "--net", "net1", "--name", "containerC", "--restart", "always", "-tid", "busybox")
	must(t, n1, "run", "--net", "net2", "--name", "containerX", "--restart", "always", "-tid", "busybox")
	ipC, ipX = ipOf(t, n1, "containerC", "net1"), ipOf(t, n1, "containerX", "net2")
	eventually(t, 30*time.Second, "containerA reaches containerC", func() (string, bool) { return pings(n0, "containerA", ipC) })
	return l, n0, n1, ipC, ipX
}

// kill -9 of each host's tabby in turn while a container on one host
// pings a container on the other: no packet lost, and after the restart
// the state is reconciled. node01 is the side of the BGP pair that waits for
// connections, node00 the side that connects.
func TestReliabilityDaemonCrash(t *testing.T) {
	_, n0, n1, ipC, ipX := twoHostLab(t)
	const fault = "tabby kill -9"
	for _, h := range []*lab.Host{n1, n0} {
		done := make(chan int, 1)
		go func() { lost, _ := pingFor(n0, "containerA", ipC, 50); done <- lost }()
		time.Sleep(time.Second)
		h.KillTabby()
		time.Sleep(3 * time.Second)
		h.StartTabby()
		lost := <-done
		report(t, fault, "packets lost, containerA -> containerC, "+h.Name+" crashed", fmt.Sprintf("%d of 50", lost), lost == 0)
		clean, out := ipamClean(h)
		report(t, fault, "tabby ipam check after "+h.Name+" restarted", strings.TrimSpace(strings.Split(out, "\n")[0]), clean)
	}
	must(t, n1, "run", "--net", "net1", "--name", "after", "-tid", "busybox")
	_, ok := pings(n0, "containerA", ipOf(t, n1, "after", "net1"))
	report(t, fault, "a container started after the restarts is reachable", fmt.Sprint(ok), ok)
	report(t, fault, "net1 -> net2 still dropped", fmt.Sprint(isolated(n0, "containerA", ipX)), isolated(n0, "containerA", ipX))
	report(t, fault, "a forged source still dropped", fmt.Sprint(forgedDropped(n0, ipC)), forgedDropped(n0, ipC))
}

// etcd stopped for 30 s: running containers keep talking, `docker run`
// fails within 5 s naming the datastore, and afterwards everything works
// with nothing leaked or doubled.
func TestReliabilityEtcdOutage(t *testing.T) {
	l, n0, n1, ipC, ipX := twoHostLab(t)
	const fault = "etcd stopped 30 s"
	must(t, n0, "run", "--net", "net1", "--name", "victim", "-tid", "busybox")
	ipV, epV := ipOf(t, n0, "victim", "net1"), endpointOf(t, n0, "victim", "net1")
	if err := l.Etcd.Freeze(); err != nil {
		t.Fatal(err)
	}
	thawed := false
	defer func() {
		if !thawed {
			l.Etcd.Thaw()
		}
	}()
	outageStart := time.Now()
	done := make(chan int, 1)
	go func() { lost, _ := pingFor(n0, "containerA", ipC, 140); done <- lost }()
	start := time.Now()
	out, err := n0.Docker("run", "--net", "net1", "--name", "during", "-tid", "busybox")
	took := time.Since(start)
	report(t, fault, "docker run fails within 5 s saying the datastore is unreachable",
		fmt.Sprintf("%.1f s: %s", took.Seconds(), firstLine(out, "datastore unreachable")),
		err != nil && took < 5*time.Second && strings.Contains(out, "datastore unreachable"))
	start = time.Now()
	out, err = n0.Docker("rm", "-f", "victim")
	took = time.Since(start)
	report(t, fault, "docker rm -f during the outage succeeds", fmt.Sprintf("%.1f s: %s", took.Seconds(), firstLine(out, "")),
		err == nil && took < 10*time.Second)
	time.Sleep(30*time.Second - time.Since(outageStart))
	if err := l.Etcd.Thaw(); err != nil {
		t.Fatal(err)
	}
	thawed = true
	lost := <-done
	report(t, fault, "packets lost between running containers during the outage", fmt.Sprintf("%d of 140", lost), lost == 0)
	var freed bool
	eventually(t, 30*time.Second, "the address of the container removed during the outage is released", func() (string, bool) {
		handle, out := handleOf(n0, ipV)
		freed = handle == "-" && !strings.Contains(out, short(epV))
		return out, freed
	})
	report(t, fault, "the address and record of a container removed during the outage are released", ipV, freed)
	n0.Docker("rm", "-f", "during")
	var ipD string
	eventually(t, 30*time.Second, "docker run works again", func() (string, bool) {
		n0.Docker("rm", "-f", "after")
		out, err := n0.Docker("run", "--net", "net1", "--name", "after", "-tid", "busybox")
		if err == nil {
			ipD = ipOf(t, n0, "after", "net1")
		}
		return out, err == nil
	})
	_, ok := pings(n1, "containerC", ipD)
	report(t, fault, "after etcd is back a new container is reachable", fmt.Sprint(ok), ok)
	stale := must(t, n0, "network", "inspect", "net1", "-f", "{{range $k, $v := .Containers}}{{$k}} {{$v.Name}} {{$v.EndpointID}}; {{end}}")
	report(t, fault, "Docker keeps no stale endpoint of the removed container", strings.TrimSpace(stale),
		!strings.Contains(stale, "victim") && !strings.Contains(stale, epV[:12]))
	clean, out := ipamClean(n0)
	report(t, fault, "tabby ipam check (nothing leaked or assigned twice)", strings.TrimSpace(strings.Split(out, "\n")[0]), clean)
	report(t, fault, "net1 -> net2 still dropped", fmt.Sprint(isolated(n0, "containerA", ipX)), isolated(n0, "containerA", ipX))
	report(t, fault, "a forged source still dropped", fmt.Sprint(forgedDropped(n0, ipC)), forgedDropped(n0, ipC))
}

// firstLine returns the first line of out that holds s, or out's first line.
func firstLine(out, s string) string {
	for _, l := range strings.Split(out, "\n") {
		if strings.Contains(l, s) {
			if i := strings.Index(l, s); i > 0 && len(l) > 120 {
				return "..." + l[max(0, i-40):min(len(l), i+200)] + "..."
			}
			return l
		}
	}
	return strings.Split(out, "\n")[0]
}

// dockerd restarted with containers under --restart always: they come back
// on their networks (a fixed --ip stays), reach the other host, and nothing
// is orphaned: no stale endpoint, interface or assignment.
func TestReliabilityDockerRestart(t *testing.T) {
	l, n0, n1, _, _ := twoHostLab(t)
	const fault = "dockerd restart"
	createEverywhere(t, l, n0, "net3", "--subnet", "192.168.200.0/24")
	must(t, n1, "run", "--net", "net3", "--ip", "192.168.200.50", "--name", "fixed", "--restart", "always", "-tid", "busybox")
	oldEP := endpointOf(t, n1, "containerC", "net1")
	n1.StopDocker()
	n1.StartDocker()
	var ipC string
	eventually(t, 60*time.Second, "containers back on node01", func() (string, bool) {
		out, _ := n1.Docker("ps", "--format", "{{.Names}}")
		return out, strings.Contains(out, "containerC") && strings.Contains(out, "containerX") && strings.Contains(out, "fixed")
	})
	ipC = ipOf(t, n1, "containerC", "net1")
	newEP := endpointOf(t, n1, "containerC", "net1")
	report(t, fault, "containerC back on net1 with a new endpoint", ipC+" ("+short(oldEP)+" -> "+short(newEP)+")", ipC != "" && newEP != oldEP)
	got := ipOf(t, n1, "fixed", "net3")
	report(t, fault, "a container with --ip keeps its address", got, got == "192.168.200.50")
	var ok bool
	eventually(t, 30*time.Second, "containerA reaches containerC again", func() (string, bool) {
		var out string
		out, ok = pings(n0, "containerA", ipC)
		return out, ok
	})
	report(t, fault, "containerA (node00) reaches the restarted containerC", fmt.Sprint(ok), ok)
	clean, out := ipamClean(n1)
	report(t, fault, "tabby ipam check (old endpoints and addresses gone)", strings.TrimSpace(strings.Split(out, "\n")[0]), clean)
	links, _ := n1.Exec("sh", "-c", "ip -o link | grep -c ' cali'")
	eps := strings.Count(mustTabby(t, n1, "get", "workloadendpoints"), " node01 ")
	report(t, fault, "host-side interfaces match endpoints on node01", links+" interfaces, "+fmt.Sprint(eps)+" endpoints", links == fmt.Sprint(eps))
	ipX := ipOf(t, n1, "containerX", "net2") // addresses are handed out anew
	report(t, fault, "net1 -> net2 still dropped", fmt.Sprint(isolated(n0, "containerA", ipX)), isolated(n0, "containerA", ipX))
	report(t, fault, "a forged source still dropped", fmt.Sprint(forgedDropped(n0, ipC)), forgedDropped(n0, ipC))
}

func short(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	return id
}

// A host is lost (its daemon killed and its uplink down): the others
// withdraw its routes within the configured hold time, and `tabby delete
// node` releases its addresses and blocks.
func TestReliabilityHostLoss(t *testing.T) {
	const hold = 6
	l := lab.New(t, lab.Options{Hosts: 3})
	n0, n1, n2 := l.Hosts[0], l.Hosts[1], l.Hosts[2]
	const fault = "host lost"
	applyYAML(t, l, n0, "hold.yaml", fmt.Sprintf("apiVersion: tabby/v1\nkind: BGPConfiguration\nmetadata: {name: default}\nspec: {holdTime: %d}\n", hold))
	createEverywhere(t, l, n0, "net1")
	must(t, n0, "run", "--net", "net1", "--name", "containerA", "-tid", "busybox")
	must(t, n1, "run", "--net", "net1", "--name", "containerB", "-tid", "busybox")
	must(t, n2, "run", "--net", "net1", "--name", "containerC", "-tid", "busybox")
	ipB, ipC := ipOf(t, n1, "containerB", "net1"), ipOf(t, n2, "containerC", "net1")
	route := blockOf(ipB) + " via " + n1.Addr
	eventually(t, 30*time.Second, "node00 routes node01's block", func() (string, bool) {
		r, _ := n0.Exec("ip", "route")
		return r, strings.Contains(r, route)
	})
	time.Sleep(2 * time.Second) // daemons move their liveness leases to the new hold time as soon as they see it
	n1.KillTabby()
	mustExec(t, n1, "ip", "link", "set", "eth0", "down")
	lost := time.Now()
	var took time.Duration
	for took = 0; took < 3*hold*time.Second; took = time.Since(lost) {
		if r, _ := n0.Exec("ip", "route"); !strings.Contains(r, route) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	report(t, fault, fmt.Sprintf("node00 withdraws node01's route (hold time %d s)", hold), fmt.Sprintf("%.1f s", took.Seconds()),
		took <= (hold+1)*time.Second)
	_, ok := pings(n0, "containerA", ipC)
	report(t, fault, "the surviving hosts still reach each other", fmt.Sprint(ok), ok)
	out, err := n0.Tabby("ipam", "check")
	report(t, fault, "ipam check sees node01's addresses as held (endpoints remain)", firstLine(out, "IPAM"), err == nil)
	out = mustTabby(t, n0, "delete", "node", "node01")
	report(t, fault, "tabby delete node node01 releases its blocks", strings.TrimSpace(out), strings.Contains(out, "1 endpoints"))
	show := mustTabby(t, n0, "ipam", "show")
	clean, cout := ipamClean(n0)
	report(t, fault, "ipam show lists no block of node01; ipam check clean", firstLine(cout, "IPAM"), clean && !strings.Contains(show, "node01"))
	if nodes := mustTabby(t, n0, "get", "nodes"); strings.Contains(nodes, "node01") {
		t.Fatalf("node01 still listed:\n%s", nodes)
	}
	// Bring node01 back, so tearing the lab down does not wait on a plugin
	// socket that will never come.
	mustExec(t, n1, "ip", "link", "set", "eth0", "up")
	mustExec(t, n1, "ip", "route", "replace", "default", "via", "10.99.0.1")
	n1.StartTabby()
}

// Security: a BGP peer with the wrong MD5 password never gets a session;
// the plugin and control sockets are not world-writable.
func TestReliabilitySecurity(t *testing.T) {
	l := lab.New(t, lab.Options{Hosts: 2})
	n0 := l.Hosts[0]
	const fault = "security"
	gobgp := startGoBGPD(t, l, "s3cret")
	applyYAML(t, l, n0, "tor.yaml", "apiVersion: tabby/v1\nkind: BGPPeer\nmetadata: {name: tor-1}\nspec: {peerIP: 10.99.0.1, asNumber: 65000, password: wrong}\n")
	established := false
	for i := 0; i < 20 && !established; i++ { // 20 s: many connect attempts at 2 s apart
		out, _ := gobgp("neighbor")
		established = strings.Contains(out, "Establ")
		time.Sleep(time.Second)
	}
	report(t, fault, "BGP peer with a wrong MD5 password, 20 s", fmt.Sprintf("established: %v", established), !established)
	applyYAML(t, l, n0, "tor.yaml", "apiVersion: tabby/v1\nkind: BGPPeer\nmetadata: {name: tor-1}\nspec: {peerIP: 10.99.0.1, asNumber: 65000, password: s3cret}\n")
	var out string
	eventually(t, 30*time.Second, "the right password establishes", func() (string, bool) {
		out, _ = gobgp("neighbor")
		return out, strings.Count(out, "Establ") == 2
	})
	report(t, fault, "the same peer with the right password", "2 sessions established", true)
	for _, sock := range []string{n0.PluginDir + "/tabby.sock", n0.Dir + "/run/ctl.sock"} {
		mode, _ := n0.Exec("stat", "-c", "%a", sock)
		report(t, fault, "socket "+strings.TrimPrefix(sock, n0.Dir+"/")+" is not world-writable", "mode "+mode,
			len(mode) == 3 && mode[2] != '2' && mode[2] != '3' && mode[2] != '6' && mode[2] != '7')
	}
}

// Load: three hosts each start 100 containers at once on one network. No
// address is handed out twice, every container reaches one on another
// host, and once all are removed nothing is left assigned.
func TestReliabilityLoad(t *testing.T) {
	const perHost = 100
	l := lab.New(t, lab.Options{Hosts: 3})
	const fault = "load: 3 x 100 containers"
	createEverywhere(t, l, l.Hosts[0], "busy")
	start := time.Now()
	failed := startMany(l, perHost, "busy")
	report(t, fault, "containers started concurrently", fmt.Sprintf("%d of %d in %.0f s", 3*perHost-len(failed), 3*perHost, time.Since(start).Seconds()), len(failed) == 0)
	if len(failed) > 0 {
		t.Fatalf("failed runs (first): %s", failed[0].String())
	}
	byHost := checkDistinct(t, l, fault, "busy", 3*perHost)
	var wg sync.WaitGroup
	var mu sync.Mutex
	// Every container pings one on the next host, 25 at a time.
	sem := make(chan struct{}, 25)
	unreachable := 0
	for hi, h := range l.Hosts {
		peers := byHost[(hi+1)%len(l.Hosts)]
		for i := 0; i < perHost; i++ {
			wg.Add(1)
			sem <- struct{}{}
			go func() {
				defer func() { <-sem; wg.Done() }()
				name := fmt.Sprintf("%s-c%d", h.Name, i)
				target := peers[i%len(peers)]
				ok := false
				for try := 0; try < 3 && !ok; try++ {
					_, ok = pings(h, name, target)
				}
				if !ok {
					mu.Lock()
					unreachable++
					mu.Unlock()
				}
			}()
		}
	}
	wg.Wait()
	report(t, fault, "containers that cannot reach one on another host", fmt.Sprintf("%d of %d", unreachable, 3*perHost), unreachable == 0)
	removeAllAndCheck(t, l, fault)
}

// failedRun is one `docker run` of startMany that failed.
type failedRun struct {
	name      string
	at, after time.Duration // since startMany began; how long the run took
	err       string
}

func (f failedRun) String() string {
	return fmt.Sprintf("%s after %.0f s: %s", f.name, f.after.Seconds(), f.err)
}

// startMany starts perHost containers on every host at once, on network
// net, and returns the runs that failed.
func startMany(l *lab.Lab, perHost int, net string) []failedRun {
	start := time.Now()
	var wg sync.WaitGroup
	var mu sync.Mutex
	var failed []failedRun
	for _, h := range l.Hosts {
		for i := 0; i < perHost; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				name := fmt.Sprintf("%s-c%d", h.Name, i)
				t0 := time.Now()
				// runc and containerd share two cores among every run at
				// once: a slow machine stretches the queue, not tabby's part
				// (the report prints how long it took); a hang still fails.
				if out, err := h.DockerWithin(6*time.Minute, "run", "-d", "--net", net, "--name", name, "busybox", "sleep", "3600"); err != nil {
					mu.Lock()
					failed = append(failed, failedRun{name: name, at: t0.Sub(start), after: time.Since(t0), err: fmt.Sprintf("%v: %s", err, firstLine(out, "Error"))})
					mu.Unlock()
				}
			}()
		}
	}
	wg.Wait()
	return failed
}

// checkDistinct reports whether the running containers on net hold want
// distinct addresses, and returns each host's addresses.
func checkDistinct(t *testing.T, l *lab.Lab, fault, net string, want int) [][]string {
	ips := map[string][]string{} // address -> containers
	byHost := make([][]string, len(l.Hosts))
	for hi, h := range l.Hosts {
		out := must(t, h, "ps", "-q")
		fields := append([]string{"inspect", "-f", "{{.Name}} {{.NetworkSettings.Networks." + net + ".IPAddress}}"}, strings.Fields(out)...)
		for _, line := range strings.Split(must(t, h, fields...), "\n") {
			name, ip, _ := strings.Cut(strings.TrimPrefix(line, "/"), " ")
			ips[ip] = append(ips[ip], name)
			byHost[hi] = append(byHost[hi], ip)
		}
	}
	doubled := 0
	for _, names := range ips {
		if len(names) > 1 {
			doubled++
		}
	}
	report(t, fault, "addresses handed out twice", fmt.Sprintf("%d (%d distinct for %d containers)", doubled, len(ips), want), doubled == 0 && len(ips) == want)
	return byHost
}

// removeAllAndCheck removes every container of every host and reports
// whether IPAM is left clean with nothing assigned.
func removeAllAndCheck(t *testing.T, l *lab.Lab, fault string) {
	var wg sync.WaitGroup
	for _, h := range l.Hosts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if ids, err := h.Docker("ps", "-aq"); err == nil && ids != "" {
				h.Docker(append([]string{"rm", "-f"}, strings.Fields(ids)...)...)
			}
		}()
	}
	wg.Wait()
	out := mustTabby(t, l.Hosts[0], "ipam", "show")
	total := regexp.MustCompile(`(?m)^TOTAL\s+(\d+)`).FindStringSubmatch(out)
	clean, cout := ipamClean(l.Hosts[0])
	report(t, fault, "addresses still assigned after removing all", total[1]+" ("+firstLine(cout, "IPAM")+")", clean && total[1] == "0")
}

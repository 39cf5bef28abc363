package lab

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Diagnose says where a host that stopped making progress waits: dockerd's
// goroutines grouped by the call they wait in (from the stack dump dockerd
// writes on SIGUSR1), and how many runc and shim processes run inside it.
// A failed test prints it before the lab is torn down.
func (h *Host) Diagnose() string {
	var b strings.Builder
	if procs, err := exec.Command("ps", "-eo", "comm").Output(); err == nil {
		counts := map[string]int{}
		for _, c := range strings.Fields(string(procs)) {
			if strings.HasPrefix(c, "runc") || strings.HasPrefix(c, "containerd") {
				counts[c]++
			}
		}
		fmt.Fprintf(&b, "processes on the machine: %v\n", counts)
	}
	pid, err := os.ReadFile(filepath.Join(h.Dir, "docker.pid"))
	if err != nil {
		return b.String()
	}
	n, err := strconv.Atoi(strings.TrimSpace(string(pid)))
	if err != nil || syscall.Kill(n, syscall.SIGUSR1) != nil {
		return b.String()
	}
	// dockerd logs where it wrote the dump.
	re := regexp.MustCompile(`goroutine stacks written to (\S+)`)
	for i := 0; i < 20; i++ {
		time.Sleep(250 * time.Millisecond)
		log, _ := os.ReadFile(filepath.Join(h.Dir, "dockerd.log"))
		if m := re.FindAllSubmatch(log, -1); len(m) > 0 {
			path := strings.Trim(string(m[len(m)-1][1]), `"\`)
			if dump, err := os.ReadFile(path); err == nil {
				b.WriteString("dockerd goroutines, by where they wait:\n")
				b.WriteString(SummarizeStacks(string(dump), 10))
			}
			break
		}
	}
	return b.String()
}

// SummarizeStacks groups a Go goroutine dump by state and the first frame
// outside the runtime and the standard library's plumbing, and lists the
// top groups, largest first.
func SummarizeStacks(dump string, top int) string {
	counts := map[string]int{}
	for _, g := range strings.Split(dump, "\n\n") {
		lines := strings.Split(strings.TrimSpace(g), "\n")
		if len(lines) < 2 || !strings.HasPrefix(lines[0], "goroutine ") {
			continue
		}
		state := lines[0]
		if i, j := strings.Index(state, "["), strings.Index(state, "]"); i >= 0 && j > i {
			state = strings.SplitN(state[i+1:j], ",", 2)[0]
		}
		where := ""
		for _, l := range lines[1:] {
			if strings.HasPrefix(l, "\t") || strings.HasPrefix(l, "created by") {
				continue
			}
			f := l
			if i := strings.LastIndex(f, "("); i > 0 {
				f = f[:i]
			}
			if where == "" || !plumbing(f) {
				where = f // the first frame, unless one outside the plumbing follows
				if !plumbing(f) {
					break
				}
			}
		}
		counts[state+" in "+where]++
	}
	keys := make([]string, 0, len(counts))
	for k := range counts {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		return counts[keys[i]] > counts[keys[j]] || counts[keys[i]] == counts[keys[j]] && keys[i] < keys[j]
	})
	var b strings.Builder
	for i, k := range keys {
		if i == top {
			break
		}
		fmt.Fprintf(&b, "  %5d %s\n", counts[k], k)
	}
	return b.String()
}

func plumbing(f string) bool {
	for _, p := range []string{"runtime.", "sync.", "internal/", "net.", "net/http.", "io.", "bufio.", "os.", "syscall.",
		"google.golang.org/grpc", "golang.org/x/net/http2", "crypto/tls.", "context.", "time."} {
		if strings.HasPrefix(f, p) {
			return true
		}
	}
	return false
}

package plugin

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/tabbynet/tabby/datastore"
)

// Config is every setting of the daemon and the CLI. Defaults live in
// DefaultConfig, environment overrides in FromEnv, checks in Validate.
type Config struct {
	Socket           string
	RunDir           string
	DataDir          string
	EtcdEndpoints    []string
	EtcdCAFile       string
	EtcdCertFile     string
	EtcdKeyFile      string
	EmbeddedEtcdAddr string
	NodeName         string
	IP               string
	IP6              string
	IPAutodetection  string
	IP6Autodetection string
	AS               string
	PoolCIDR         string
	PoolIPIP         string
	PoolVXLAN        string
	PoolV6CIDR       string
	DockerHost       string
	// EndpointToHost is what containers may send to their own host beyond
	// the resolver: accept (Docker's bridge: all of it) or drop. tabby's
	// own ports (BGP, metrics, embedded etcd) are closed to them either way.
	EndpointToHost string
	// DockerExecMount is where Docker's exec root (its netns/ holds the
	// containers' namespaces) is mounted, when not at its own path (the
	// managed plugin); "" otherwise.
	DockerExecMount string
	DNSAddr         string
	DNSUpstream     []string
	MetricsAddr     string
	LogLevel        string
	// IPAMGCGrace is how long an address this host assigned for Docker may
	// stay unused by any endpoint before the IPAM collector releases it
	// ("0" turns the collector off).
	IPAMGCGrace string
	// GoRuntimeFromEnv: GOGC or GOMEMLIMIT is set, and the Go runtime took
	// it at start; FelixConfiguration's goGCThreshold and goMemoryLimitMB
	// are then not applied (as Felix does).
	GoRuntimeFromEnv bool
}

// DefaultConfig returns the documented defaults.
func DefaultConfig() Config {
	host, _ := os.Hostname()
	return Config{
		Socket:          "/run/docker/plugins/tabby.sock",
		RunDir:          "/run/tabby",
		DataDir:         "/var/lib/tabby",
		NodeName:        host,
		IP:              "autodetect",
		IPAutodetection: "first-found",
		PoolCIDR:        "192.168.0.0/16",
		PoolIPIP:        "Never",
		PoolVXLAN:       "Never",
		PoolV6CIDR:      "fd00:192:168::/48",
		DockerHost:      "unix:///var/run/docker.sock",
		MetricsAddr:     "127.0.0.1:9091",
		LogLevel:        "info",
		IPAMGCGrace:     "15m",
		EndpointToHost:  "accept",
	}
}

// envVars maps each setting to its environment variable.
func (c *Config) envVars() map[string]*string {
	return map[string]*string{
		"TABBY_SOCKET": &c.Socket, "TABBY_RUN_DIR": &c.RunDir, "TABBY_DATA_DIR": &c.DataDir,
		"ETCD_CA_CERT_FILE": &c.EtcdCAFile, "ETCD_CERT_FILE": &c.EtcdCertFile, "ETCD_KEY_FILE": &c.EtcdKeyFile,
		"TABBY_EMBEDDED_ETCD_ADDR": &c.EmbeddedEtcdAddr,
		"NODENAME":                 &c.NodeName, "IP": &c.IP, "IP6": &c.IP6, "IP_AUTODETECTION_METHOD": &c.IPAutodetection,
		"IP6_AUTODETECTION_METHOD": &c.IP6Autodetection, "TABBY_IPV6POOL_CIDR": &c.PoolV6CIDR,
		"AS": &c.AS, "TABBY_IPV4POOL_CIDR": &c.PoolCIDR, "TABBY_IPV4POOL_IPIP": &c.PoolIPIP,
		"TABBY_IPV4POOL_VXLAN": &c.PoolVXLAN, "DOCKER_HOST": &c.DockerHost, "TABBY_DOCKER_EXEC_MOUNT": &c.DockerExecMount, "TABBY_ENDPOINT_TO_HOST": &c.EndpointToHost, "TABBY_DNS_ADDR": &c.DNSAddr,
		"TABBY_METRICS_ADDR": &c.MetricsAddr, "TABBY_LOG_LEVEL": &c.LogLevel,
		"TABBY_IPAM_GC_GRACE": &c.IPAMGCGrace,
	}
}

// FromEnv overrides defaults with the environment (flags come after).
func (c *Config) FromEnv(getenv func(string) string) {
	for name, p := range c.envVars() {
		if v := getenv(name); v != "" {
			*p = v
		}
	}
	if v := getenv("ETCD_ENDPOINTS"); v != "" {
		c.EtcdEndpoints = splitList(v)
	}
	if v := getenv("TABBY_DNS_UPSTREAM"); v != "" {
		c.DNSUpstream = splitList(v)
	}
	c.GoRuntimeFromEnv = getenv("GOGC") != "" || getenv("GOMEMLIMIT") != ""
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// Validate checks every setting and names the bad one and its fix.
func (c *Config) Validate() error {
	var errs []error
	bad := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }
	for name, p := range map[string]string{"--socket": c.Socket, "--run-dir": c.RunDir, "--data-dir": c.DataDir} {
		if !filepath.IsAbs(p) {
			bad("%s %q must be an absolute path", name, p)
		}
	}
	if c.EndpointToHost != "accept" && c.EndpointToHost != "drop" {
		bad("--endpoint-to-host %q must be accept (all of the host, as Docker's bridge) or drop (only the resolver)", c.EndpointToHost)
	}
	if c.NodeName == "" {
		bad("--nodename is empty: set NODENAME or give the host a hostname")
	} else if !datastore.ValidName(c.NodeName) || strings.Trim(c.NodeName, ".") == "" {
		// It names etcd keys, BGP sets and a directory of host-local state.
		bad("--nodename %q: use letters, digits, '-', '.' and '_' only (not . or ..)", c.NodeName)
	}
	if c.IP != "autodetect" {
		if a, err := netip.ParseAddr(c.IP); err != nil || !a.Is4() {
			bad("--ip %q must be an IPv4 address or 'autodetect'", c.IP)
		}
	}
	if c.IP6 != "" && c.IP6 != "autodetect" {
		if a, err := netip.ParseAddr(c.IP6); err != nil || !a.Is6() || a.Is4In6() {
			bad("--ip6 %q must be an IPv6 address, 'autodetect', or empty for no IPv6", c.IP6)
		}
	}
	if c.AS != "" {
		if _, err := strconv.ParseUint(c.AS, 10, 32); err != nil {
			bad("--as %q must be a number from 1 to 4294967295", c.AS)
		}
	}
	if p, err := netip.ParsePrefix(c.PoolCIDR); err != nil || !p.Addr().Is4() || p.Masked() != p {
		bad("--ipv4pool-cidr %q must be an IPv4 CIDR without host bits, like 192.168.0.0/16", c.PoolCIDR)
	}
	if p, err := netip.ParsePrefix(c.PoolV6CIDR); err != nil || !p.Addr().Is6() || p.Masked() != p || p.Bits() > 122 {
		bad("--ipv6pool-cidr %q must be an IPv6 CIDR of /122 or larger without host bits, like fd00:192:168::/48", c.PoolV6CIDR)
	}
	for name, v := range map[string]string{"--ipv4pool-ipip": c.PoolIPIP, "--ipv4pool-vxlan": c.PoolVXLAN} {
		if v != "Always" && v != "CrossSubnet" && v != "Never" {
			bad("%s %q must be Always, CrossSubnet or Never", name, v)
		}
	}
	if c.PoolIPIP != "Never" && c.PoolVXLAN != "Never" {
		bad("--ipv4pool-ipip and --ipv4pool-vxlan cannot both be on: set one to Never")
	}
	if c.DNSAddr != "" && c.DNSAddr != "off" {
		if _, _, err := net.SplitHostPort(c.DNSAddr); err != nil {
			bad("--dns-addr %q must be HOST:PORT (like 10.0.0.5:53), off, or empty for this host's IPv4:53", c.DNSAddr)
		}
	}
	for _, u := range c.DNSUpstream {
		if _, _, err := net.SplitHostPort(u); err != nil {
			bad("--dns-upstream %q must be HOST:PORT (like 192.0.2.53:53)", u)
		}
	}
	if c.MetricsAddr != "" && c.MetricsAddr != "off" {
		if _, _, err := net.SplitHostPort(c.MetricsAddr); err != nil {
			bad("--metrics-addr %q must be HOST:PORT (like 127.0.0.1:9091) or off", c.MetricsAddr)
		}
	}
	if _, err := c.Level(); err != nil {
		errs = append(errs, err)
	}
	if _, err := c.GCGrace(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// Level parses LogLevel.
func (c *Config) Level() (slog.Level, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(c.LogLevel)); err != nil {
		return 0, fmt.Errorf("--log-level %q must be debug, info, warn or error", c.LogLevel)
	}
	return l, nil
}

// GCGrace parses IPAMGCGrace (0: no collector).
func (c *Config) GCGrace() (time.Duration, error) {
	d, err := time.ParseDuration(c.IPAMGCGrace)
	if c.IPAMGCGrace == "0" {
		d, err = 0, nil
	}
	if err != nil || d < 0 || (d > 0 && d < time.Second) {
		return 0, fmt.Errorf("--ipam-gc-grace %q must be a duration of at least 1s (like 15m), or 0 to turn the IPAM collector off", c.IPAMGCGrace)
	}
	return d, nil
}

// IPv6 reports whether this host takes part in IPv6 (IP6 is set).
func (c *Config) IPv6() bool { return c.IP6 != "" }

// ip6Method is the IPv6 autodetection method: its own, or the IPv4 one.
func (c *Config) ip6Method() string {
	if c.IP6Autodetection != "" {
		return c.IP6Autodetection
	}
	return c.IPAutodetection
}

// ControlSocket is where the daemon answers the CLI's node status.
func (c *Config) ControlSocket() string { return filepath.Join(c.RunDir, "ctl.sock") }

// LocalStateDir holds where this host's endpoints joined (one file each).
// It is under the data directory, which a managed plugin keeps across
// disable, enable and upgrade (its run directory it does not): a daemon
// that lost it would take its running containers' interfaces for leaks.
// Files of endpoints gone meanwhile (a reboot) go with their records. Per
// node name, so daemons that share a data directory (a lab, a renamed
// host) never take each other's files for their own.
func (c *Config) LocalStateDir() string { return filepath.Join(c.DataDir, "endpoints", c.NodeName) }

// ManagedControlSockets is where a managed plugin's control socket is seen
// from the host: Docker mounts <exec-root>/plugins/<plugin ID> at the
// plugin's /run/docker/plugins, where config.json puts its run dir, so no
// host directory has to exist before `docker plugin enable`.
const ManagedControlSockets = "/run/docker/plugins/*/ctl.sock"

// ManagedEtcdSockets is where a managed plugin's embedded etcd socket is
// seen from the host (beside its control socket).
const ManagedEtcdSockets = "/run/docker/plugins/*/etcd.sock"

// FindDaemonSocket (the control or the embedded etcd socket) returns def
// when a daemon listens there, else the one managed plugin's socket
// matching pattern, else def (whose error then names the --run-dir).
func FindDaemonSocket(def, pattern string) string {
	if _, err := os.Stat(def); err == nil {
		return def
	}
	if m, _ := filepath.Glob(pattern); len(m) == 1 {
		return m[0]
	}
	return def
}

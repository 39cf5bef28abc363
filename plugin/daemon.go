// Package plugin is tabby's daemon and CLI: configuration, one unix socket
// serving both of Docker's plugin APIs, the datastore connection (embedded
// etcd by default) and the lifecycle of the background loops.
package plugin

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/docker/docker/client"
	"github.com/tabbynet/tabby/bgp"
	"github.com/tabbynet/tabby/datastore"
	"github.com/tabbynet/tabby/driver"
	"github.com/tabbynet/tabby/driver/dataplane"
	"github.com/tabbynet/tabby/driver/hostlocal"
	"github.com/tabbynet/tabby/driver/policy"
	"github.com/tabbynet/tabby/ipamdriver"
	"github.com/tabbynet/tabby/plugin/autodetect"
	"github.com/tabbynet/tabby/plugin/dns"
	"github.com/tabbynet/tabby/plugin/dockersync"
	"github.com/tabbynet/tabby/plugin/metrics"
)

// Version is set at build time.
var Version = "dev"

// Daemon is one host's tabby.
type Daemon struct {
	cfg   Config
	log   *slog.Logger
	rules ruleCheck // repairRules' goroutine's alone
}

// New checks the configuration and returns a daemon ready to Run.
func New(cfg Config, log *slog.Logger) (*Daemon, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &Daemon{cfg: cfg, log: log}, nil
}

// openStore connects to etcd, starting the embedded one when no endpoints
// are configured. The returned stop closes both.
func openStore(ctx context.Context, cfg Config, log *slog.Logger) (*datastore.Store, func(), error) {
	endpoints := cfg.EtcdEndpoints
	stopEmbedded := func() {}
	if len(endpoints) == 0 {
		dir := filepath.Join(cfg.DataDir, "etcd")
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, nil, fmt.Errorf("--data-dir %s: %w", cfg.DataDir, err)
		}
		emb, err := datastore.StartEmbedded(datastore.EmbeddedConfig{Dir: dir, ClientAddr: cfg.EmbeddedEtcdAddr, SockDir: cfg.RunDir})
		if err != nil {
			return nil, nil, err
		}
		log.Info("embedded etcd started", "dir", dir, "endpoint", emb.Endpoint)
		endpoints, stopEmbedded = []string{emb.Endpoint}, emb.Close
	}
	// A short request timeout makes an etcd outage fail plugin calls (and
	// so `docker run`) within seconds, with an error that names etcd.
	st, err := datastore.Open(ctx, datastore.Config{Endpoints: endpoints,
		CAFile: cfg.EtcdCAFile, CertFile: cfg.EtcdCertFile, KeyFile: cfg.EtcdKeyFile, Timeout: 3 * time.Second, Log: log})
	if err != nil {
		stopEmbedded()
		return nil, nil, err
	}
	return st, func() { st.Close(); stopEmbedded() }, nil
}

// Run serves until ctx ends, then shuts down cleanly.
func (d *Daemon) Run(ctx context.Context) error {
	cfg := d.cfg
	st, closeStore, err := openStore(ctx, cfg, d.log)
	if err != nil {
		return err
	}
	defer closeStore()
	host, err := d.prepare(ctx, st)
	if err != nil {
		return err
	}
	bg, stopBG := context.WithCancel(ctx)
	defer stopBG()
	view, err := startView(ctx, bg, st)
	if err != nil {
		return err
	}
	var gort *goRuntime
	if !cfg.GoRuntimeFromEnv {
		gort = &goRuntime{node: cfg.NodeName, log: d.log}
		gort.apply(datastore.ViewList[datastore.FelixConfiguration](view, datastore.FelixConfigDir))
	}
	dp, fwd, drv, err := d.dataplane(ctx, st, view, host)
	if err != nil {
		return err
	}
	defer dp.Close()
	m := metrics.New(st, view, cfg.NodeName)
	enf, err := policy.NewEnforcer()
	if err != nil {
		return err
	}
	pol := metrics.TimedApplier{M: m, To: enf}
	if err := drv.SyncPolicy(ctx, pol); err != nil {
		return err
	}

	speaker, closeBGP, err := d.startBGP(bg, st, view, dp.Table(), host, m, drv)
	if err != nil {
		return err
	}
	defer closeBGP()
	d.startDNS(bg, view, host)
	// The policy and DNS indexes have taken what they need of every
	// endpoint and follow their changes, as BGP's owners do of IPAM's
	// blocks and handles: of other hosts' endpoints, blocks, affinities and
	// handles the view keeps the keys only (most of a large cluster's
	// records), from here on, before the plugin serves: held longer, the
	// values are most of a restarted daemon's peak memory.
	view.Thin(datastore.EndpointsDir, datastore.EndpointsOf(cfg.NodeName))
	view.Thin(datastore.AffinitiesDir, datastore.AffinitiesOf(cfg.NodeName))
	view.ThinUnless(datastore.BlocksDir, datastore.BlockOf(cfg.NodeName))
	view.ThinUnless(datastore.HandlesDir, datastore.HandleOf(cfg.NodeName))
	docker, err := client.NewClientWithOpts(client.WithHost(cfg.DockerHost), client.WithAPIVersionNegotiation())
	if err != nil {
		return fmt.Errorf("--docker-host %s: %w", cfg.DockerHost, err)
	}
	defer docker.Close()
	// The plugin socket opens last: Docker talks to tabby only once every
	// part behind it is up.
	ln, err := listen(cfg.Socket)
	if err != nil {
		return err
	}
	ipd := ipamdriver.New(st, cfg.NodeName, cfg.IPv6())
	ipd.Allocator().UseView(view)
	srv := &http.Server{Handler: NewHandler(drv, ipd, d.log, m), ReadHeaderTimeout: 10 * time.Second}
	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(ln) }()

	// The loops that write kernel state are waited for at stop: one still
	// repairing a rule while the uninstall removes it left a chain behind.
	var loops sync.WaitGroup
	loops.Go(func() { speaker.Run(bg) })
	loops.Go(func() { drv.RunBlackholes(bg, 30*time.Second) })
	loops.Go(func() { drv.RunNAT(bg, fwd, 30*time.Second) })
	loops.Go(func() { drv.RunPolicy(bg, pol, 30*time.Second) })
	loops.Go(func() { drv.RunNames(bg, 30*time.Second, 30*time.Second) })
	loops.Go(func() { keepTunnel(bg, st, view, ipd.Allocator(), cfg.NodeName, drv.WireGuardActive, d.log) })
	loops.Go(func() { drv.RunTunnels(bg, 30*time.Second) })
	// Rules that a flush removed come back by themselves, without an etcd
	// change: a few checks every 3 s.
	d.rules.legacy = !dataplane.IPTablesOnNFTables()
	loops.Go(func() { every(bg, 3*time.Second, func() { d.repairRules(enf, fwd) }) })
	loops.Go(func() { every(bg, 5*time.Second, func() { d.repairRoutes(dp.Table()) }) })
	loops.Go(func() {
		dp.Table().Follow(bg, func(err error) {
			d.log.Warn("following the host's routes stopped; learned routes are checked against a listing until it resumes", "err", err)
		})
	})
	if dp.ForwardsPerLink() {
		// Links made since (tunnels, a new uplink) forward too.
		loops.Go(func() {
			every(bg, 30*time.Second, func() {
				if err := dp.ForwardPerLink(); err != nil {
					d.log.Warn("forwarding link by link", "err", err)
				}
			})
		})
	}
	loops.Go(func() { dockersync.SyncNames(bg, docker, drv, d.log) })
	loops.Go(func() { dockersync.SyncLabels(bg, docker, drv, d.log) })
	loops.Go(func() { dockersync.SyncUntrack(bg, docker, drv, d.log) })
	loops.Go(func() { dockersync.Replicate(bg, docker, view, cfg.NodeName, d.log) })
	loops.Go(func() { d.keepNode(bg, st, host) })
	if gort != nil {
		loops.Go(func() { gort.keep(bg, view) })
	}
	if len(cfg.EtcdEndpoints) == 0 {
		loops.Go(func() { every(bg, time.Minute, func() { d.maintainEtcd(bg, st) }) })
	}
	if grace, _ := cfg.GCGrace(); grace > 0 {
		loops.Go(func() { d.collectIPAM(bg, ipd.Allocator(), grace, m) })
		loops.Go(func() {
			dockersync.SweepEndpoints(bg, docker, view, drv, cfg.NodeName, grace, sweepInterval(grace), d.log)
		})
	}
	d.log.Info("tabby daemon serving", "socket", cfg.Socket, "node", cfg.NodeName)

	select {
	case <-ctx.Done():
	case err := <-serveErr:
		return fmt.Errorf("plugin socket %s: %w", cfg.Socket, err)
	}
	stopBG()
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_ = srv.Shutdown(sctx)
	stopped := make(chan struct{})
	go func() { loops.Wait(); close(stopped) }()
	select {
	case <-stopped:
	case <-time.After(5 * time.Second):
		d.log.Warn("background loops still running at stop")
	}
	os.Remove(cfg.Socket)
	return d.uninstallIfIdle(sctx, drv, fwd, enf)
}

// startView starts the daemon's one copy of the cluster (kept until bg
// ends) and returns once it holds everything written so far, this host's
// registration included.
func startView(ctx, bg context.Context, st *datastore.Store) (*datastore.View, error) {
	view := st.NewView()
	go view.Run(bg)
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	rev, err := st.Revision(ctx)
	if err == nil {
		err = view.Wait(ctx, rev)
	}
	if err != nil {
		return nil, fmt.Errorf("read the cluster from etcd: %w", err)
	}
	return view, nil
}

// startBGP keeps this host's liveness lease, starts the speaker (its
// kernel routes timed by the metrics) and serves metrics, health and the
// control socket; stop closes the servers.
func (d *Daemon) startBGP(bg context.Context, st *datastore.Store, view *datastore.View, dp bgp.Routes, host hostAddrs, m *metrics.Metrics, wg wgSource) (*bgp.Speaker, func(), error) {
	cfg := d.cfg
	// Liveness: peers keep this host's sessions (and routes) while the
	// lease lives; it ends the hold time less the liveness grace after this
	// daemon stops answering, and the peers wait out the grace.
	holdChanged := make(chan struct{}, 1)
	kick := func() {
		select {
		case holdChanged <- struct{}{}:
		default:
		}
	}
	view.Subscribe(datastore.BGPConfigDir, func(datastore.Change) { kick() })
	// A deleted liveness key is written again (only deletes: the rewrite
	// is itself a change of the key).
	view.Subscribe(datastore.LivenessKey(cfg.NodeName), func(ch datastore.Change) {
		if ch.Deleted {
			kick()
		}
	})
	go st.KeepAlive(bg, datastore.LivenessKey(cfg.NodeName), cfg.NodeName, func() int64 {
		bc, _, _ := datastore.ViewGet[datastore.BGPConfiguration](view, datastore.BGPConfigKey())
		return bc.LivenessTTL()
	}, holdChanged)
	asn, _ := strconv.ParseUint(cfg.AS, 10, 32)
	speaker := bgp.New(view, bgp.Config{Node: cfg.NodeName, RouterID: host.v4.Addr.Addr(), IPv6: host.v6.Addr.Addr(),
		ASN: uint32(asn)}, metrics.TimedRoutes{Routes: dp, M: m}, d.log)
	if err := speaker.Start(bg); err != nil {
		return nil, nil, err
	}
	m.SetSpeaker(speaker)
	msrv, err := metrics.Serve(bg, cfg.MetricsAddr, m, &metrics.Health{Store: st, Speaker: speaker}, d.log)
	if err != nil {
		return nil, nil, err
	}
	ctl, err := serveControl(cfg.ControlSocket(), speaker, wg)
	if err != nil {
		if msrv != nil {
			msrv.Close()
		}
		return nil, nil, err
	}
	return speaker, func() {
		ctl.Close()
		if msrv != nil {
			msrv.Close()
		}
	}, nil
}

// hostAddrs are this host's addresses for tabby: IPv4, and IPv6 when IP6
// is set (else v6 is zero).
type hostAddrs struct{ v4, v6 autodetect.Result }

// detect finds this host's addresses as configured.
func (c *Config) detect() (hostAddrs, error) {
	var h hostAddrs
	var err error
	if h.v4, err = autodetect.Host(c.IP, c.IPAutodetection, 4); err != nil {
		return h, fmt.Errorf("this host's address: %w", err)
	}
	if c.IPv6() {
		if h.v6, err = autodetect.Host(c.IP6, c.ip6Method(), 6); err != nil {
			return h, fmt.Errorf("this host's IPv6 address: %w", err)
		}
	}
	return h, nil
}

// prepare makes the default pools, finds this host's addresses and
// registers the node.
func (d *Daemon) prepare(ctx context.Context, st *datastore.Store) (hostAddrs, error) {
	cfg := d.cfg
	if cfg.PoolIPIP != datastore.ModeNever {
		if err := IPIPSupported(); err != nil {
			return hostAddrs{}, fmt.Errorf("--ipv4pool-ipip %s: %w", cfg.PoolIPIP, err)
		}
	}
	if err := ipamdriver.EnsureDefaultPools(ctx, st, cfg.PoolCIDR, cfg.PoolIPIP, cfg.PoolVXLAN, cfg.PoolV6CIDR); err != nil {
		return hostAddrs{}, fmt.Errorf("default pool: %w", err)
	}
	host, err := cfg.detect()
	if err != nil {
		return host, err
	}
	if err := registerNode(ctx, st, cfg, host); err != nil {
		return host, err
	}
	ip6 := ""
	if host.v6.Addr.IsValid() {
		ip6 = host.v6.Addr.String()
	}
	d.log.Info("node registered", "node", cfg.NodeName, "ip", host.v4.Addr.String(), "ifname", host.v4.Iface, "ip6", ip6)
	return host, nil
}

// dataplane binds netlink and iptables, installs the forwarding and NAT
// rules and makes the kernel match etcd before anything is served.
func (d *Daemon) dataplane(ctx context.Context, st *datastore.Store, view *datastore.View, host hostAddrs) (*dataplane.Dataplane, *dataplane.Forwarding, *driver.Driver, error) {
	dp, err := dataplane.New("")
	if err != nil {
		return nil, nil, nil, err
	}
	fail := func(err error) (*dataplane.Dataplane, *dataplane.Forwarding, *driver.Driver, error) {
		dp.Close()
		return nil, nil, nil, err
	}
	fwd, err := dataplane.NewForwarding("", "", d.cfg.IPv6())
	if err != nil {
		return fail(err)
	}
	if err := fwd.Ensure(); errors.Is(err, dataplane.ErrForwardingOff) {
		// IPv4 only: IPv6 has no per-link switch over netlink, and Ensure
		// fails outright for it.
		if err := dp.ForwardPerLink(); err != nil {
			return fail(err)
		}
		d.log.Warn("net.ipv4.ip_forward is off and read-only here: forwarding link by link", "err", err)
	} else if err != nil {
		return fail(err)
	}
	local, bad, err := hostlocal.Open(d.cfg.LocalStateDir())
	if err != nil {
		return fail(err)
	}
	for _, err := range bad {
		d.log.Warn("host-local endpoint state dropped", "err", err)
	}
	drv := driver.New(st, view, local, d.cfg.NodeName, dp, d.log)
	drv.SetSandboxPaths(dockersync.SandboxPaths(d.cfg.DockerHost, d.cfg.DockerExecMount))
	drv.SetHostAccess(d.cfg.hostAccess())
	drv.SetHostMTU(autodetect.MTU(host.v4.Iface))
	drv.SetWireGuardKeyFile(filepath.Join(d.cfg.DataDir, "wireguard", d.cfg.NodeName+".key"))
	if err := drv.SyncNAT(ctx, fwd); err != nil {
		return fail(err)
	}
	if err := drv.Reconcile(ctx); err != nil {
		return fail(fmt.Errorf("reconcile kernel state with etcd: %w", err))
	}
	return dp, fwd, drv, nil
}

// hostAccess is what containers may reach on their host: never tabby's own
// TCP ports (BGP, metrics, the embedded etcd's client and peer ports); the
// rest per --endpoint-to-host, the resolver's port always.
func (c *Config) hostAccess() policy.HostAccess {
	h := policy.HostAccess{ControlTCP: []uint16{bgp.Port}, DropOthers: c.EndpointToHost == "drop"}
	port := func(addr string) (uint16, bool) {
		_, p, err := net.SplitHostPort(addr)
		n, perr := strconv.ParseUint(p, 10, 16)
		return uint16(n), err == nil && perr == nil && n > 0
	}
	if p, ok := port(c.MetricsAddr); ok && c.MetricsAddr != "off" {
		h.ControlTCP = append(h.ControlTCP, p)
	}
	if p, ok := port(c.EmbeddedEtcdAddr); ok && len(c.EtcdEndpoints) == 0 { // TCP only when asked for
		h.ControlTCP = append(h.ControlTCP, p, p+1) // client, peer
	}
	switch {
	case c.DNSAddr == "off":
	case c.DNSAddr == "":
		h.OpenPorts = []uint16{53}
	default:
		if p, ok := port(c.DNSAddr); ok {
			h.OpenPorts = []uint16{p}
		}
	}
	return h
}

// repairRules puts back tabby's nftables table and iptables chains and
// jumps when something flushed them. It looks only when the ruleset
// changed since its last clean look (see ruleCheck).
func (d *Daemon) repairRules(enf *policy.Enforcer, fwd *dataplane.Forwarding) {
	gen, due := d.rules.due(time.Now())
	if !due {
		return
	}
	clean := true
	if did, err := enf.Repair(); err != nil {
		d.log.Warn("policy repair", "err", err)
		clean = false
	} else if did {
		d.log.Warn("tabby's nftables table was gone (flushed?): put back")
	}
	if err := fwd.Repair(); err != nil {
		d.log.Warn("iptables repair", "err", err)
		clean = false
	}
	if clean {
		d.rules.done(gen, time.Now())
	}
}

// startDNS runs the cluster name resolver unless --dns-addr is off. A
// resolver that cannot start (port 53 taken) is logged: networking works
// without it.
func (d *Daemon) startDNS(ctx context.Context, view *datastore.View, host hostAddrs) {
	if d.cfg.DNSAddr == "off" {
		return
	}
	addrs := []string{d.cfg.DNSAddr}
	if d.cfg.DNSAddr == "" {
		// The IPv6 address too: a container of an IPv6-only network has
		// no route to the host's IPv4 address.
		addrs = []string{net.JoinHostPort(host.v4.Addr.Addr().String(), "53")}
		if host.v6.Addr.IsValid() {
			addrs = append(addrs, net.JoinHostPort(host.v6.Addr.Addr().String(), "53"))
		}
	}
	ups := d.cfg.DNSUpstream
	if len(ups) == 0 {
		var err error
		if ups, err = dns.Upstreams("/etc/resolv.conf", addrs...); err != nil {
			d.log.Warn("DNS: no upstream resolvers; other names will fail", "err", err)
		}
	}
	srv := dns.New(view, ups, func(e datastore.WorkloadEndpoint) string { return e.Labels[driver.LabelNetwork] }, d.cfg.NodeName, d.log)
	if err := srv.Run(ctx, addrs...); err != nil {
		d.log.Warn("cluster name resolver not started", "err", err)
		return
	}
	d.log.Info("cluster name resolver serving", "addr", strings.Join(addrs, ","), "upstreams", strings.Join(ups, ","))
}

// maintainEtcd keeps the embedded etcd writable and its file small; it
// compacts by itself (datastore.Retention).
func (d *Daemon) maintainEtcd(ctx context.Context, st *datastore.Store) {
	did, err := st.Maintain(ctx, 64<<20)
	if did != "" {
		d.log.Info("embedded etcd maintained", "did", did)
	}
	if err != nil && ctx.Err() == nil {
		d.log.Warn("embedded etcd maintenance", "err", err)
	}
}

// keepNode re-registers the node periodically, so a deleted or edited
// record comes back; an address change takes a restart to reach BGP.
func (d *Daemon) keepNode(ctx context.Context, st *datastore.Store, host hostAddrs) {
	every(ctx, 30*time.Second, func() {
		if now, err := d.cfg.detect(); err == nil && now != host {
			d.log.Warn("host address changed; restart tabby to move BGP to it", "ip", now.v4.Addr.String(),
				"ip6", now.v6.Addr.String(), "was", host.v4.Addr.String(), "was6", host.v6.Addr.String())
		}
		if err := registerNode(ctx, st, d.cfg, host); err != nil && ctx.Err() == nil {
			d.log.Warn("node registration failed", "err", err)
		}
	})
}

// registerNode records this host in etcd with its detected address, keeping
// what users set on the Node (route reflector cluster ID, AS).
func registerNode(ctx context.Context, st *datastore.Store, cfg Config, host hostAddrs) error {
	err := datastore.Update(ctx, st, datastore.NodeKey(cfg.NodeName), func(n *datastore.Node, _ bool) error {
		n.Name, n.IPv4, n.IPv6 = cfg.NodeName, host.v4.Addr.String(), ""
		if host.v6.Addr.IsValid() {
			n.IPv6 = host.v6.Addr.String()
		}
		if cfg.AS != "" {
			asn, _ := strconv.ParseUint(cfg.AS, 10, 32)
			n.ASNumber = uint32(asn)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("register node %s: %w", cfg.NodeName, err)
	}
	return nil
}

// uninstallIfIdle removes tabby's rules, blackholes, tunnels and learned
// routes when no endpoint is left on this host; with endpoints they stay, so
// a restart keeps containers connected.
func (d *Daemon) uninstallIfIdle(ctx context.Context, drv *driver.Driver, fwd *dataplane.Forwarding, enf *policy.Enforcer) error {
	n, err := drv.LocalEndpoints(ctx)
	if err != nil || n > 0 {
		d.log.Info("tabby daemon stopped; kernel state kept for running endpoints", "endpoints", n)
		return nil
	}
	if err := errors.Join(fwd.Remove(), enf.Remove(), drv.RemoveBlackholes(), drv.RemoveTunnelsAndRoutes()); err != nil {
		return fmt.Errorf("remove tabby's rules: %w", err)
	}
	d.log.Info("tabby daemon stopped; no endpoints left, rules, policy table, tunnels and routes removed")
	return nil
}

// listen opens the plugin socket, replacing a stale one, not world-writable.
func listen(path string) (net.Listener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("--socket %s: %w", path, err)
	}
	if c, err := net.Dial("unix", path); err == nil {
		c.Close()
		return nil, fmt.Errorf("--socket %s is in use by another process: stop the other tabby first", path)
	}
	os.Remove(path)
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("--socket %s: %w", path, err)
	}
	if err := os.Chmod(path, 0o660); err != nil {
		ln.Close()
		return nil, fmt.Errorf("--socket %s: %w", path, err)
	}
	return ln, nil
}

// collectIPAM runs the IPAM collector: addresses this host assigned for
// Docker that no endpoint used for the grace period are released. It
// sweeps four times per grace period, at most once a minute.
func (d *Daemon) collectIPAM(ctx context.Context, alloc *ipamdriver.Allocator, grace time.Duration, m *metrics.Metrics) {
	c := ipamdriver.NewCollector(alloc, grace)
	every(ctx, sweepInterval(grace), func() {
		released, err := c.Sweep(ctx)
		m.GCReleased(len(released))
		for _, f := range released {
			d.log.Warn("released a leaked address", "ip", f.IP, "handle", f.Handle)
		}
		if err != nil {
			d.log.Warn("IPAM collector", "err", err)
		}
	})
}

// sweepInterval is four sweeps per grace period, at most one a minute.
func sweepInterval(grace time.Duration) time.Duration {
	return min(max(grace/4, time.Second), time.Minute)
}

// repairRoutes puts back tabby's routes that were flushed or edited.
func (d *Daemon) repairRoutes(t *dataplane.Table) {
	n, err := t.Repair()
	if err != nil {
		d.log.Warn("route repair failed", "routes", n, "err", err)
	} else if n > 0 {
		d.log.Info("routes repaired", "routes", n)
	}
}

// every runs fn each interval until ctx ends.
func every(ctx context.Context, interval time.Duration, fn func()) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			fn()
		}
	}
}

// IPIPSupported checks this host's kernel for IPIP (tabby apply, before an
// IPIP pool is stored).
func IPIPSupported() error { return probeKernel((*dataplane.Dataplane).IPIPSupported) }

// WireGuardSupported reports whether this host's kernel makes WireGuard
// devices (tabby apply checks before turning encryption on).
func WireGuardSupported() error { return probeKernel((*dataplane.Dataplane).WireGuardSupported) }

// probeKernel asks the host's own namespace what its kernel can do.
func probeKernel(probe func(*dataplane.Dataplane) error) error {
	dp, err := dataplane.New("")
	if err != nil {
		return err
	}
	defer dp.Close()
	return probe(dp)
}

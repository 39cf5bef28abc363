// Package metrics is tabby's Prometheus metrics and health endpoints:
// counters of plugin calls and dataplane applies, and figures that the
// datastore and BGP already hold, read when scraped so they cannot drift.
package metrics

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/tabbynet/tabby/bgp"
	"github.com/tabbynet/tabby/datastore"
	"github.com/tabbynet/tabby/driver/policy"
	"github.com/tabbynet/tabby/ipamdriver"
)

// Metrics are tabby's Prometheus metrics. Counts that etcd or BGP already
// hold are read when scraped, so they cannot drift from the truth.
type Metrics struct {
	reg      *prometheus.Registry
	state    *stateCollector
	requests *prometheus.CounterVec
	latency  *prometheus.HistogramVec
	apply    *prometheus.HistogramVec
	gc       prometheus.Counter
}

// Speaker is what the metrics read of the BGP speaker.
type Speaker interface {
	Status(ctx context.Context) ([]bgp.PeerStatus, error)
	LearnedRoutes() int
}

// New registers tabby's metrics; the speaker is attached with
// SetSpeaker once it exists (its routes are timed through these metrics).
func New(st *datastore.Store, view *datastore.View, node string) *Metrics {
	m := &Metrics{reg: prometheus.NewRegistry(), state: &stateCollector{st: st, view: view, node: node},
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tabby_plugin_requests_total",
			Help: "Docker plugin API calls by method and result."}, []string{"method", "result"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "tabby_plugin_request_duration_seconds",
			Help: "Docker plugin API call latency by method.", Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14)}, []string{"method"}),
		apply: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "tabby_dataplane_apply_duration_seconds",
			Help: "Time to program the kernel, by what was programmed.", Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14)}, []string{"what"}),
		gc: prometheus.NewCounter(prometheus.CounterOpts{Name: "tabby_ipam_gc_released_total",
			Help: "Leaked addresses the IPAM collector released."}),
	}
	m.reg.MustRegister(m.requests, m.latency, m.apply, m.gc, collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}), m.state)
	return m
}

func (m *Metrics) SetSpeaker(sp Speaker) {
	m.state.mu.Lock()
	defer m.state.mu.Unlock()
	m.state.sp = sp
}

// ObserveRequest implements RequestObserver.
func (m *Metrics) ObserveRequest(method string, ok bool, took time.Duration) {
	result := "ok"
	if !ok {
		result = "error"
	}
	m.requests.WithLabelValues(method, result).Inc()
	m.latency.WithLabelValues(method).Observe(took.Seconds())
}

// timed records how long fn took under what.
func (m *Metrics) timed(what string, fn func() error) error {
	start := time.Now()
	err := fn()
	m.apply.WithLabelValues(what).Observe(time.Since(start).Seconds())
	return err
}

var (
	descEndpoints = prometheus.NewDesc("tabby_local_endpoints", "Workload endpoints on this host.", nil, nil)
	descBlocks    = prometheus.NewDesc("tabby_ipam_blocks", "IPAM blocks this host has affinity for.", nil, nil)
	descInUse     = prometheus.NewDesc("tabby_ipam_addresses_in_use", "Addresses assigned in this host's blocks.", nil, nil)
	descPeers     = prometheus.NewDesc("tabby_bgp_peers", "BGP sessions by state.", []string{"state"}, nil)
	descRoutes    = prometheus.NewDesc("tabby_routes_installed", "Routes learned over BGP and installed in the kernel.", nil, nil)
	descUp        = prometheus.NewDesc("tabby_datastore_up", "1 when etcd answered this scrape.", nil, nil)
	descPending   = prometheus.NewDesc("tabby_datastore_pending_writes",
		"Writes Docker was already answered for that wait for etcd to answer.", nil, nil)
	descDBSize = prometheus.NewDesc("tabby_datastore_db_size_bytes",
		"Size of each etcd member's database file.", []string{"endpoint"}, nil)
	descDBInUse = prometheus.NewDesc("tabby_datastore_db_in_use_bytes",
		"What of each etcd member's database file holds data (the rest a defragmentation frees).", []string{"endpoint"}, nil)
	descDBFull = prometheus.NewDesc("tabby_datastore_db_full",
		"1 while an etcd member refuses writes because its database reached its quota.", []string{"endpoint"}, nil)
	descRequests = prometheus.NewDesc("tabby_datastore_requests_total",
		"etcd calls this daemon made, by method (Range, Txn, LeaseGrant, ...).", []string{"method"}, nil)
	descLists = prometheus.NewDesc("tabby_datastore_lists_total",
		"Times this daemon listed the whole cluster from etcd: once at start, again only after a compaction its watch could not bridge.", nil, nil)
)

// stateCollector reads etcd and the speaker at scrape time.
type stateCollector struct {
	st   *datastore.Store
	view *datastore.View
	node string
	mu   sync.Mutex
	sp   Speaker
}

func (c *stateCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descEndpoints, descBlocks, descInUse, descPeers, descRoutes, descUp, descPending,
		descDBSize, descDBInUse, descDBFull, descLists, descRequests} {
		ch <- d
	}
}

func (c *stateCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	// Counts come from the view, this host's own records only: a scrape
	// costs etcd nothing and grows with this host, not the cluster.
	up := 1.0
	if stats, err := c.st.DBStats(ctx); err == nil {
		for _, s := range stats {
			full := 0.0
			if s.Full {
				full = 1
			}
			ch <- prometheus.MustNewConstMetric(descDBSize, prometheus.GaugeValue, float64(s.Size), s.Endpoint)
			ch <- prometheus.MustNewConstMetric(descDBInUse, prometheus.GaugeValue, float64(s.InUse), s.Endpoint)
			ch <- prometheus.MustNewConstMetric(descDBFull, prometheus.GaugeValue, full, s.Endpoint)
		}
	} else {
		up = 0
	}
	ch <- prometheus.MustNewConstMetric(descLists, prometheus.CounterValue, float64(c.view.Lists()))
	for method, n := range c.st.Requests() {
		ch <- prometheus.MustNewConstMetric(descRequests, prometheus.CounterValue, float64(n), method)
	}
	ch <- prometheus.MustNewConstMetric(descEndpoints, prometheus.GaugeValue, float64(len(c.view.Keys(datastore.EndpointsOf(c.node)))))
	var blocks []datastore.Block
	for _, k := range c.view.Keys(datastore.AffinitiesOf(c.node)) {
		if b, _, ok := datastore.ViewGet[datastore.Block](c.view, datastore.BlocksDir+k[strings.LastIndex(k, "/")+1:]); ok {
			blocks = append(blocks, b)
		}
	}
	n, used := 0, 0
	for _, u := range ipamdriver.Usage(blocks) {
		if u.Affinity == c.node {
			n, used = n+1, used+u.InUse
		}
	}
	ch <- prometheus.MustNewConstMetric(descBlocks, prometheus.GaugeValue, float64(n))
	ch <- prometheus.MustNewConstMetric(descInUse, prometheus.GaugeValue, float64(used))
	ch <- prometheus.MustNewConstMetric(descUp, prometheus.GaugeValue, up)
	ch <- prometheus.MustNewConstMetric(descPending, prometheus.GaugeValue, float64(c.st.Pending()))
	c.mu.Lock()
	sp := c.sp
	c.mu.Unlock()
	if sp == nil {
		return
	}
	if peers, err := sp.Status(ctx); err == nil {
		states := map[string]int{"established": 0, "down": 0}
		for _, p := range peers {
			if p.Info == "Established" {
				states["established"]++
			} else {
				states["down"]++
			}
		}
		for s, n := range states {
			ch <- prometheus.MustNewConstMetric(descPeers, prometheus.GaugeValue, float64(n), s)
		}
	}
	ch <- prometheus.MustNewConstMetric(descRoutes, prometheus.GaugeValue, float64(sp.LearnedRoutes()))
}

// Health answers /healthz (the process serves) and /readyz: the datastore
// answers and, since start, every BGP session has been established once.
type Health struct {
	Store     *datastore.Store
	Speaker   Speaker
	peersSeen atomic.Bool
}

func (h *Health) ready(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if _, err := h.Store.ListKeys(ctx, datastore.BGPConfigDir); err != nil {
		return fmt.Errorf("datastore unreachable: %w", err)
	}
	if h.peersSeen.Load() {
		return nil
	}
	peers, err := h.Speaker.Status(ctx)
	if err != nil {
		return err
	}
	var down []string
	for _, p := range peers {
		if p.Info != "Established" {
			down = append(down, p.Address+" "+p.Info)
		}
	}
	if len(down) > 0 {
		return fmt.Errorf("BGP peers not established yet: %s", strings.Join(down, ", "))
	}
	h.peersSeen.Store(true)
	return nil
}

// Serve serves /metrics, /healthz and /readyz on addr ("off": not
// at all). It returns once the listener is open.
func Serve(ctx context.Context, addr string, m *Metrics, h *Health, log *slog.Logger) (*http.Server, error) {
	if addr == "" || addr == "off" {
		return nil, nil
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, r *http.Request) {
		if err := h.ready(r.Context()); err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ready")
	})
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("--metrics-addr %s: %w", addr, err)
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) && ctx.Err() == nil {
			log.Warn("metrics server stopped", "err", err)
		}
	}()
	return srv, nil
}

// TimedApplier times policy applies.
type TimedApplier struct {
	M  *Metrics
	To interface {
		ApplyIndexed(string, policy.SetSource, map[string]policy.SetChange) (bool, error)
		ApplyElements(map[string]policy.SetChange) (bool, error)
	}
}

// ApplyIndexed applies and times script.
func (t TimedApplier) ApplyIndexed(script string, sets policy.SetSource, delta map[string]policy.SetChange) (changed bool, err error) {
	err = t.M.timed("policy", func() error {
		changed, err = t.To.ApplyIndexed(script, sets, delta)
		return err
	})
	return changed, err
}

// ApplyElements applies and times a set element update.
func (t TimedApplier) ApplyElements(delta map[string]policy.SetChange) (changed bool, err error) {
	err = t.M.timed("policy", func() error {
		changed, err = t.To.ApplyElements(delta)
		return err
	})
	return changed, err
}

// TimedRoutes times the kernel route installs of BGP.
type TimedRoutes struct {
	bgp.Routes
	M *Metrics
}

// Learn installs and times a batch of routes.
func (t TimedRoutes) Learn(dst []netip.Prefix, gw []netip.Addr) error {
	return t.M.timed("routes", func() error { return t.Routes.Learn(dst, gw) })
}

// GCReleased counts addresses the IPAM collector released.
func (m *Metrics) GCReleased(n int) { m.gc.Add(float64(n)) }

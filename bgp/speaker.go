package bgp

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	api "github.com/osrg/gobgp/v3/api"
	"github.com/osrg/gobgp/v3/pkg/apiutil"
	"github.com/osrg/gobgp/v3/pkg/packet/bgp"
	"github.com/osrg/gobgp/v3/pkg/server"
	"github.com/tabbynet/tabby/datastore"
)

// Routes is the host's route table as BGP sees it: BGP claims what it
// learns, and the table (the driver's dataplane, its one writer) decides
// what wins a destination (a tunnel the driver routes the block over does)
// and puts back what was flushed. Tests may fake it.
type Routes interface {
	Learn(dst []netip.Prefix, gw []netip.Addr) error
	Unlearn(dst ...netip.Prefix) error
	// Learned counts the destinations BGP claims.
	Learned() int
	// LearnedSynced: every learned route is claimed, so one a previous run
	// learned that no peer announced again may go.
	LearnedSynced() error
	// Protected lists the routes a learned one must not cover or replace
	// (noCover), or only not replace (noReplace).
	Protected() (noCover, noReplace []netip.Prefix, err error)
}

// Config is what the speaker needs to know of its host.
type Config struct {
	Node     string
	RouterID netip.Addr // the host's IPv4 address
	// IPv6 is the host's IPv6 address: IPv6 sessions and next hops (invalid:
	// no IPv6).
	IPv6 netip.Addr
	// ASN overrides the AS of BGPConfiguration (the --as setting).
	ASN        uint32
	ListenPort int32
	// Resync is how often the whole state is recomputed besides watches.
	Resync time.Duration
	// RestartTime is how long peers keep our routes while we restart.
	RestartTime uint32
}

// Speaker is one host's BGP speaker.
type Speaker struct {
	// view is the daemon's copy of the cluster; the speaker only reads.
	view   *datastore.View
	cfg    Config
	routes Routes
	log    *slog.Logger
	srv    *server.BgpServer

	mu      sync.Mutex
	peers   map[netip.Addr]PeerSpec
	adv     map[netip.Prefix][]byte // path UUIDs of what we advertise
	asn     uint32
	started bool
	// installs carries best-path changes from GoBGP's callback to the
	// kernel installer.
	installs chan install
	// pools are the enabled pools' prefixes, the only ones nodes may
	// announce; refused keeps learned routes the checks turned away, to
	// try again when something changes.
	pools   []netip.Prefix
	refused map[netip.Prefix]install
	// policySets is what the GoBGP policy sets hold (policyDone: once set).
	policySets policySets
	policyDone bool
	// The external peers' filter policy: its generation, what it was built
	// from, and its sets.
	filterGen  int
	filterSig  string
	filterSets []*api.DefinedSet
	filterDone bool
	// filterPolicy and filterExport are the filter policies in the import
	// and export chains ("" for none).
	filterPolicy, filterExport string
	// own follows IPAM's grants; ownHave is what the owner sets hold per
	// node; ownPolicy (generation ownGen, built from ownSig) is the owner
	// policy in the import chain.
	own       *owners
	ownHave   map[string]map[ownerEntry]bool
	ownGen    int
	ownSig    string
	ownPolicy string
	// missingSince is when each node whose liveness key was last seen
	// present was first read without it (zero while present); recheck wakes
	// Run when a missing key's grace ends.
	missingSince map[string]time.Time
	recheck      chan struct{}
}

// Port is the TCP port a speaker listens on unless Config.ListenPort says
// otherwise (BGP's own).
const Port = bgp.BGP_PORT

// New returns a speaker; Run starts it.
func New(view *datastore.View, cfg Config, routes Routes, log *slog.Logger) *Speaker {
	if cfg.ListenPort == 0 {
		cfg.ListenPort = bgp.BGP_PORT
	}
	if cfg.Resync == 0 {
		cfg.Resync = 10 * time.Second
	}
	if cfg.RestartTime == 0 {
		cfg.RestartTime = 120
	}
	return &Speaker{view: view, cfg: cfg, routes: routes, log: log,
		peers: map[netip.Addr]PeerSpec{}, adv: map[netip.Prefix][]byte{},
		refused: map[netip.Prefix]install{}, missingSince: map[string]time.Time{}, recheck: make(chan struct{}, 1),
		installs: make(chan install, 4096), own: newOwners(log), ownHave: map[string]map[ownerEntry]bool{}}
}

// Start brings the BGP server up; Run then keeps it current.
func (s *Speaker) Start(ctx context.Context) error {
	if !s.cfg.RouterID.Is4() {
		return errors.New("BGP needs this host's IPv4 address: set IP or IP_AUTODETECTION_METHOD")
	}
	if err := s.view.Wait(ctx, 0); err != nil {
		return err
	}
	bc, _, _ := datastore.ViewGet[datastore.BGPConfiguration](s.view, datastore.BGPConfigKey())
	s.asn = bc.AS()
	if s.cfg.ASN != 0 {
		s.asn = s.cfg.ASN
	}
	s.srv = server.NewBgpServer(server.LoggerOption(&logAdapter{s.log}))
	go s.srv.Serve()
	listen := []string{s.cfg.RouterID.String()}
	if s.cfg.IPv6.IsValid() {
		listen = append(listen, s.cfg.IPv6.String())
	}
	err := s.srv.StartBgp(ctx, &api.StartBgpRequest{Global: &api.Global{
		Asn: s.asn, RouterId: s.cfg.RouterID.String(), ListenPort: s.cfg.ListenPort, ListenAddresses: listen,
	}})
	if err != nil {
		s.srv.Stop()
		return fmt.Errorf("start BGP on %s:%d (AS %d): %w", s.cfg.RouterID, s.cfg.ListenPort, s.asn, err)
	}
	if err := s.installPolicy(ctx); err != nil {
		s.srv.Stop()
		return err
	}
	// Grants before any session is judged (one judged before them would
	// refuse every node), and before the daemon thins the view's IPAM
	// records of other hosts: the owners take what they need as they come.
	// Handles first: the blocks handed over then find their addresses'
	// holders known, so the owners never hold a whole cluster's addresses
	// as odd until the handles come (affinities grant nothing).
	s.view.Subscribe(datastore.HandlesDir, s.own.handle)
	s.view.Subscribe(datastore.BlocksDir, s.own.handle)
	s.started = true
	go s.runInstaller(ctx)
	filter := &api.WatchEventRequest_Table_Filter{Type: api.WatchEventRequest_Table_Filter_BEST, Init: true}
	return s.srv.WatchEvent(ctx, &api.WatchEventRequest{Table: &api.WatchEventRequest_Table{
		Filters: []*api.WatchEventRequest_Table_Filter{filter}}}, func(r *api.WatchEventResponse) {
		for _, p := range r.GetTable().GetPaths() {
			s.onBest(p)
		}
	})
}

// Run keeps peers and advertisements current from the cluster view and a
// periodic resync until ctx ends. It leaves the session up on the way out
// without a NOTIFICATION, so peers keep our routes (graceful restart) while
// the daemon restarts.
func (s *Speaker) Run(ctx context.Context) {
	kick := make(chan struct{}, 1)
	select {
	case <-ctx.Done():
		return
	case <-s.view.Synced():
	}
	for _, dir := range []string{datastore.NodesDir, datastore.BGPPeersDir, datastore.BGPConfigDir, datastore.LivenessDir,
		datastore.AffinitiesOf(s.cfg.Node), datastore.EndpointsOf(s.cfg.Node), datastore.BGPFiltersDir, datastore.PoolsDir} {
		s.view.Subscribe(dir, func(datastore.Change) {
			select {
			case kick <- struct{}{}:
			default:
			}
		})
	}
	sweep := time.After(2 * s.cfg.Resync) // stale routes of a previous run
	tick := time.NewTicker(s.cfg.Resync)
	defer tick.Stop()
	for {
		if err := s.Sync(ctx); err != nil && ctx.Err() == nil {
			s.log.Warn("BGP sync failed", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-kick:
		case <-s.own.changed:
		case <-s.recheck:
		case <-tick.C:
		case <-sweep:
			if err := s.routes.LearnedSynced(); err != nil {
				s.log.Warn("removing routes of a previous run failed", "err", err)
			}
		}
	}
}

// Sync makes the sessions and the advertised prefixes match etcd.
func (s *Speaker) Sync(ctx context.Context) error {
	if err := s.view.Wait(ctx, 0); err != nil {
		return err
	}
	bc, _, _ := datastore.ViewGet[datastore.BGPConfiguration](s.view, datastore.BGPConfigKey())
	nodes := s.liveNodes(bc.LivenessGrace())
	peers := datastore.ViewList[datastore.BGPPeer](s.view, datastore.BGPPeersDir)
	want := s.wantedPrefixes()
	pools := datastore.ViewList[datastore.IPPool](s.view, datastore.PoolsDir)
	s.mu.Lock()
	defer s.mu.Unlock()
	before := slices.Clone(s.pools)
	s.pools = s.pools[:0]
	for _, p := range pools {
		if pp, err := netip.ParsePrefix(p.CIDR); err == nil && !p.Disabled {
			s.pools = append(s.pools, pp.Masked())
		}
	}
	poolsChanged := !slices.Equal(before, s.pools)
	defer func() { go s.retryRefused() }()
	// Advertise before adding peers: a session that comes up before our
	// paths exist would end with an empty End-of-RIB, and a peer helping us
	// through a restart would flush the routes it kept for us.
	advErr := s.syncAdverts(ctx, want)
	desired := DesiredPeers(s.cfg.Node, nodes, peers, bc)
	for a, p := range desired {
		p.HoldTime = bc.Hold()
		desired[a] = p
	}
	// The policy first: a peer added now is judged by it.
	polErr := s.syncPolicy(ctx, desired, s.validFilters(ctx))
	ownErr := s.syncOwners(ctx, nodes, poolsChanged)
	return errors.Join(advErr, polErr, ownErr, s.syncPeers(ctx, desired))
}

// liveNodes lists the nodes whose daemon holds its liveness lease (and this
// one), or held it less than grace ago. A host that stopped answering for
// the hold time loses its sessions: deleting them drops its routes at once,
// where graceful restart would keep them. The grace covers daemons taking
// new leases after an etcd outage that outlived them all.
func (s *Speaker) liveNodes(grace time.Duration) []datastore.Node {
	nodes := datastore.ViewList[datastore.Node](s.view, datastore.NodesDir)
	keys := s.view.Keys(datastore.LivenessDir)
	present := map[string]bool{s.cfg.Node: true}
	for _, k := range keys {
		present[strings.TrimPrefix(k, datastore.LivenessDir)] = true
	}
	// The grace counts from the first read that misses the key, not from
	// the last read that saw it: during an etcd outage the view keeps the
	// keys it had, and their deletes come once etcd answers again.
	now := time.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	var wake time.Duration
	for name, since := range s.missingSince {
		if present[name] {
			continue
		}
		if since.IsZero() {
			since = now
			s.missingSince[name] = now
		}
		if left := grace - now.Sub(since); left > 0 {
			if wake == 0 || left < wake {
				wake = left
			}
		} else {
			delete(s.missingSince, name)
		}
	}
	for name := range present {
		s.missingSince[name] = time.Time{}
	}
	out := nodes[:0]
	for _, n := range nodes {
		if _, ok := s.missingSince[n.Name]; ok {
			out = append(out, n)
		}
	}
	if wake > 0 {
		time.AfterFunc(wake, func() {
			select {
			case s.recheck <- struct{}{}:
			default:
			}
		})
	}
	return out
}

// wantedPrefixes are the blocks this host owns and its addresses that lie
// outside them (borrowed from another host's block).
func (s *Speaker) wantedPrefixes() map[netip.Prefix]bool {
	keys := s.view.Keys(datastore.AffinitiesOf(s.cfg.Node))
	want := map[netip.Prefix]bool{}
	var blocks []netip.Prefix
	for _, k := range keys {
		if p, err := netip.ParsePrefix(datastore.KeyToCIDR(k[strings.LastIndex(k, "/")+1:])); err == nil {
			want[p] = true
			blocks = append(blocks, p)
		}
	}
	for _, e := range datastore.ViewList[datastore.WorkloadEndpoint](s.view, datastore.EndpointsOf(s.cfg.Node)) {
		for _, a := range e.Addrs() {
			inside := false
			for _, b := range blocks {
				inside = inside || b.Contains(a)
			}
			if !inside {
				want[netip.PrefixFrom(a, a.BitLen())] = true
			}
		}
	}
	return want
}

// sameSession reports whether two specs make the same session: filters
// are the policy's, and change no session.
func sameSession(a, b PeerSpec) bool {
	return a.Address == b.Address && a.ASN == b.ASN && a.Type == b.Type && a.Password == b.Password &&
		a.RRClient == b.RRClient && a.ClusterID == b.ClusterID && a.Passive == b.Passive && a.HoldTime == b.HoldTime
}

func (s *Speaker) syncPeers(ctx context.Context, want map[netip.Addr]PeerSpec) error {
	var errs []error
	for addr, have := range s.peers {
		if w, ok := want[addr]; ok && sameSession(w, have) {
			continue
		}
		if err := s.srv.DeletePeer(ctx, &api.DeletePeerRequest{Address: addr.String()}); err != nil {
			errs = append(errs, fmt.Errorf("remove peer %s: %w", addr, err))
			continue
		}
		delete(s.peers, addr)
		s.log.Info("BGP peer removed", "peer", addr.String())
	}
	for addr, w := range want {
		if _, ok := s.peers[addr]; ok {
			continue
		}
		if err := s.srv.AddPeer(ctx, &api.AddPeerRequest{Peer: s.peerConf(w)}); err != nil {
			errs = append(errs, fmt.Errorf("add peer %s: %w", addr, err))
			continue
		}
		s.peers[addr] = w
		s.log.Info("BGP peer added", "peer", addr.String(), "type", w.Type, "as", w.ASN)
	}
	return errors.Join(errs...)
}

// peerConf is the GoBGP configuration of one session: IPv4 unicast from the
// host's IPv4 address, or IPv6 unicast from its IPv6 address.
func (s *Speaker) peerConf(w PeerSpec) *api.Peer {
	family := &api.Family{Afi: api.Family_AFI_IP, Safi: api.Family_SAFI_UNICAST}
	local := s.cfg.RouterID
	if w.Address.Is6() {
		family.Afi, local = api.Family_AFI_IP6, s.cfg.IPv6
	}
	p := &api.Peer{
		Conf:      &api.PeerConf{NeighborAddress: w.Address.String(), PeerAsn: w.ASN, AuthPassword: w.Password},
		Transport: &api.Transport{LocalAddress: local.String(), PassiveMode: w.Passive},
		Timers: &api.Timers{Config: &api.TimersConfig{ConnectRetry: 2, HoldTime: uint64(max(w.HoldTime, 3)),
			KeepaliveInterval: uint64(max(w.HoldTime/3, 1))}},
		// Graceful restart both ways: peers keep our routes while we
		// restart, and we keep theirs.
		GracefulRestart: &api.GracefulRestart{Enabled: true, RestartTime: s.cfg.RestartTime},
		AfiSafis: []*api.AfiSafi{{
			Config:            &api.AfiSafiConfig{Family: family, Enabled: true},
			MpGracefulRestart: &api.MpGracefulRestart{Config: &api.MpGracefulRestartConfig{Enabled: true}},
		}},
	}
	if w.RRClient {
		p.RouteReflector = &api.RouteReflector{RouteReflectorClient: true, RouteReflectorClusterId: w.ClusterID}
	}
	return p
}

func (s *Speaker) syncAdverts(ctx context.Context, want map[netip.Prefix]bool) error {
	var errs []error
	added, withdrawn := 0, 0
	for p, uuid := range s.adv {
		if want[p] {
			continue
		}
		if err := s.srv.DeletePath(ctx, &api.DeletePathRequest{TableType: api.TableType_GLOBAL, Uuid: uuid}); err != nil {
			errs = append(errs, fmt.Errorf("withdraw %s: %w", p, err))
			continue
		}
		delete(s.adv, p)
		withdrawn++
		s.log.Debug("BGP withdrew", "prefix", p.String())
	}
	for p := range want {
		if _, ok := s.adv[p]; ok || (p.Addr().Is6() && !s.cfg.IPv6.IsValid()) {
			continue
		}
		path, err := s.newPath(p)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		resp, err := s.srv.AddPath(ctx, &api.AddPathRequest{TableType: api.TableType_GLOBAL, Path: path})
		if err != nil {
			errs = append(errs, fmt.Errorf("advertise %s: %w", p, err))
			continue
		}
		s.adv[p] = resp.Uuid
		added++
		s.log.Debug("BGP advertised", "prefix", p.String())
	}
	if added+withdrawn > 0 {
		s.log.Info("BGP advertisements changed", "advertised", added, "withdrawn", withdrawn, "total", len(s.adv))
	}
	return errors.Join(errs...)
}

// newPath is our advertisement of p with this host as next hop: the
// NEXT_HOP attribute for IPv4, MP_REACH_NLRI for IPv6.
func (s *Speaker) newPath(p netip.Prefix) (*api.Path, error) {
	origin := bgp.NewPathAttributeOrigin(bgp.BGP_ORIGIN_ATTR_TYPE_IGP)
	if p.Addr().Is4() {
		return apiutil.NewPath(bgp.NewIPAddrPrefix(uint8(p.Bits()), p.Addr().String()), false,
			[]bgp.PathAttributeInterface{origin, bgp.NewPathAttributeNextHop(s.cfg.RouterID.String())}, time.Now())
	}
	nlri := bgp.NewIPv6AddrPrefix(uint8(p.Bits()), p.Addr().String())
	return apiutil.NewPath(nlri, false, []bgp.PathAttributeInterface{origin,
		bgp.NewPathAttributeMpReachNLRI(s.cfg.IPv6.String(), []bgp.AddrPrefixInterface{nlri})}, time.Now())
}

// PeerStatus is one row of `tabby node status`.
type PeerStatus struct {
	Address string `json:"address"`
	Type    string `json:"type"`
	State   string `json:"state"`
	Since   string `json:"since"`
	Info    string `json:"info"`
}

// Status lists the sessions with their state, as BIRD's `show protocols`.
func (s *Speaker) Status(ctx context.Context) ([]PeerStatus, error) {
	if !s.started {
		return nil, errors.New("BGP is not running")
	}
	s.mu.Lock()
	types := map[string]string{}
	for a, p := range s.peers {
		types[a.String()] = p.Type
	}
	s.mu.Unlock()
	var out []PeerStatus
	err := s.srv.ListPeer(ctx, &api.ListPeerRequest{EnableAdvertised: false}, func(p *api.Peer) {
		st := p.GetState()
		row := PeerStatus{Address: st.GetNeighborAddress(), Type: types[st.GetNeighborAddress()], State: "start"}
		if st.GetSessionState() == api.PeerState_ESTABLISHED {
			row.State, row.Info = "up", "Established"
			if up := p.GetTimers().GetState().GetUptime(); up != nil {
				row.Since = up.AsTime().UTC().Format("2006-01-02")
			}
		} else {
			name := strings.ToLower(st.GetSessionState().String())
			row.Info = strings.ToUpper(name[:1]) + name[1:]
			if down := p.GetTimers().GetState().GetDowntime(); down != nil && down.AsTime().Unix() > 0 {
				row.Since = down.AsTime().UTC().Format("2006-01-02")
			}
		}
		out = append(out, row)
	})
	sort.Slice(out, func(i, j int) bool { return out[i].Address < out[j].Address })
	return out, err
}

// LearnedRoutes counts the routes learned from peers and claimed in the
// table (the metrics); a tunnel may carry some of them instead.
func (s *Speaker) LearnedRoutes() int { return s.routes.Learned() }

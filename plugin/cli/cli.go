// Package cli is the tabby command: the daemon's entry point, and the
// resources (apply, get, delete), IPAM and node commands, which read and
// write etcd with the daemon's settings.
package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"github.com/tabbynet/tabby/datastore"
	"github.com/tabbynet/tabby/plugin"
)

// New builds the tabby command tree; getenv supplies the environment.
func New(stdout, stderr io.Writer, getenv func(string) string) *cobra.Command {
	cfg := plugin.DefaultConfig()
	cfg.FromEnv(getenv)
	root := &cobra.Command{
		Use:           "tabby",
		Short:         "Calico-style routed networking for Docker",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetOut(stdout)
	root.SetErr(stderr)
	pf := root.PersistentFlags()
	pf.StringSliceVar(&cfg.EtcdEndpoints, "etcd-endpoints", cfg.EtcdEndpoints, "etcd URLs, comma separated (env ETCD_ENDPOINTS; empty: embedded etcd)")
	pf.StringVar(&cfg.DataDir, "data-dir", cfg.DataDir, "embedded etcd data (env TABBY_DATA_DIR)")
	pf.StringVar(&cfg.EmbeddedEtcdAddr, "embedded-etcd-addr", cfg.EmbeddedEtcdAddr, "TCP address of the embedded etcd, unauthenticated (env TABBY_EMBEDDED_ETCD_ADDR; empty: a root-only unix socket in --run-dir)")
	pf.StringVar(&cfg.RunDir, "run-dir", cfg.RunDir, "directory of the control socket (env TABBY_RUN_DIR)")
	pf.StringVar(&cfg.LogLevel, "log-level", cfg.LogLevel, "debug, info, warn or error (env TABBY_LOG_LEVEL)")

	root.AddCommand(daemonCmd(&cfg, getenv("TABBY_MANAGED") == "1"), versionCmd(), applyCmd(&cfg), getCmd(&cfg), deleteCmd(&cfg), nodeCmd(&cfg), ipamCmd(&cfg))
	return root
}

// daemonCmd runs the daemon; managed (the managed plugin's config.json sets
// TABBY_MANAGED=1) keeps a daemon that failed to start answering Docker with
// the reason, so that docker plugin enable shows it.
func daemonCmd(cfg *plugin.Config, managed bool) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "daemon",
		Short: "Serve the Docker network and IPAM plugin",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := cfg.Validate(); err != nil {
				return err
			}
			level, err := cfg.Level()
			if err != nil {
				return err
			}
			log := slog.New(slog.NewTextHandler(cmd.ErrOrStderr(), &slog.HandlerOptions{Level: level}))
			d, err := plugin.New(*cfg, log)
			if err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			err = d.Run(ctx)
			if err != nil && managed && ctx.Err() == nil {
				log.Error("start failed; answering Docker with the reason", "err", err)
				if serr := plugin.ServeStartError(ctx, cfg.Socket, err); serr != nil {
					return errors.Join(err, serr)
				}
			}
			return err
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.Socket, "socket", cfg.Socket, "plugin socket (env TABBY_SOCKET)")
	f.StringVar(&cfg.NodeName, "nodename", cfg.NodeName, "this host's name (env NODENAME)")
	f.StringVar(&cfg.IP, "ip", cfg.IP, "this host's IPv4 address or autodetect (env IP)")
	f.StringVar(&cfg.IP6, "ip6", cfg.IP6, "this host's IPv6 address or autodetect (env IP6)")
	f.StringVar(&cfg.IPAutodetection, "ip-autodetection-method", cfg.IPAutodetection, "how to find the host address (env IP_AUTODETECTION_METHOD)")
	f.StringVar(&cfg.IP6Autodetection, "ip6-autodetection-method", cfg.IP6Autodetection, "how to find the host IPv6 address; empty: as for IPv4 (env IP6_AUTODETECTION_METHOD)")
	f.StringVar(&cfg.AS, "as", cfg.AS, "this host's AS number (env AS)")
	f.StringVar(&cfg.PoolCIDR, "ipv4pool-cidr", cfg.PoolCIDR, "default pool, made at first start (env TABBY_IPV4POOL_CIDR)")
	f.StringVar(&cfg.PoolIPIP, "ipv4pool-ipip", cfg.PoolIPIP, "default pool IPIP mode (env TABBY_IPV4POOL_IPIP)")
	f.StringVar(&cfg.PoolVXLAN, "ipv4pool-vxlan", cfg.PoolVXLAN, "default pool VXLAN mode (env TABBY_IPV4POOL_VXLAN)")
	f.StringVar(&cfg.PoolV6CIDR, "ipv6pool-cidr", cfg.PoolV6CIDR, "default IPv6 pool, made at first start (env TABBY_IPV6POOL_CIDR)")
	f.StringVar(&cfg.DockerHost, "docker-host", cfg.DockerHost, "the local Docker API (env DOCKER_HOST)")
	f.StringVar(&cfg.EndpointToHost, "endpoint-to-host", cfg.EndpointToHost, "what containers may reach on their host beyond the resolver: accept or drop; tabby's own ports are closed either way (env TABBY_ENDPOINT_TO_HOST)")
	f.StringVar(&cfg.DockerExecMount, "docker-exec-mount", cfg.DockerExecMount, "where Docker's exec root is mounted, if not at its own path (env TABBY_DOCKER_EXEC_MOUNT; the managed plugin's)")
	f.StringVar(&cfg.DNSAddr, "dns-addr", cfg.DNSAddr, "cluster name resolver address, empty for this host's IPv4:53 (and IPv6:53 with --ip6), or off (env TABBY_DNS_ADDR)")
	f.StringSliceVar(&cfg.DNSUpstream, "dns-upstream", cfg.DNSUpstream, "resolvers for other names, HOST:PORT list (env TABBY_DNS_UPSTREAM; default: /etc/resolv.conf)")
	f.StringVar(&cfg.MetricsAddr, "metrics-addr", cfg.MetricsAddr, "metrics and health address (env TABBY_METRICS_ADDR)")
	f.StringVar(&cfg.IPAMGCGrace, "ipam-gc-grace", cfg.IPAMGCGrace, "release an address this host assigned once no endpoint has used it this long; 0: never (env TABBY_IPAM_GC_GRACE)")
	return cmd
}

func versionCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print tabby's version",
		Args:  cobra.NoArgs,
		Run:   func(cmd *cobra.Command, _ []string) { fmt.Fprintln(cmd.OutOrStdout(), "tabby", plugin.Version) },
	}
}

// cliStore connects the CLI to the daemon's etcd: the configured endpoints,
// or the embedded etcd's address.
func cliStore(cfg *plugin.Config) (*datastore.Store, error) {
	eps := cfg.EtcdEndpoints
	switch {
	case len(eps) > 0:
	case cfg.EmbeddedEtcdAddr != "":
		eps = []string{"http://" + cfg.EmbeddedEtcdAddr}
	default:
		// The embedded etcd's socket, in the daemon's run dir or, when that
		// is not chosen, the managed plugin's.
		sock := datastore.EmbeddedSocket(cfg.RunDir)
		if cfg.RunDir == plugin.DefaultConfig().RunDir {
			sock = plugin.FindDaemonSocket(sock, plugin.ManagedEtcdSockets)
		}
		// Dial it first: the etcd client would retry a refused socket
		// until its timeout and say only "unreachable".
		c, err := net.Dial("unix", sock)
		if err != nil {
			return nil, fmt.Errorf("embedded etcd %s: %w (it answers root only; is tabby daemon running with this --run-dir?)", sock, err)
		}
		c.Close()
		eps = []string{"unix://" + sock}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return datastore.Open(ctx, datastore.Config{Endpoints: eps, CAFile: cfg.EtcdCAFile,
		CertFile: cfg.EtcdCertFile, KeyFile: cfg.EtcdKeyFile, Timeout: 5 * time.Second})
}

func applyCmd(cfg *plugin.Config) *cobra.Command {
	var file string
	cmd := &cobra.Command{
		Use:   "apply -f FILE",
		Short: "Create or update resources from a YAML or JSON file (- for stdin)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if file == "" {
				return errors.New("apply needs -f FILE (or -f - for standard input)")
			}
			var data []byte
			var err error
			if file == "-" {
				data, err = io.ReadAll(cmd.InOrStdin())
			} else {
				data, err = os.ReadFile(file)
			}
			if err != nil {
				return err
			}
			docs, err := parseDocuments(data)
			if err != nil {
				return fmt.Errorf("%s: %w", file, err)
			}
			st, err := cliStore(cfg)
			if err != nil {
				return err
			}
			defer st.Close()
			return apply(cmd.Context(), st, docs, cmd.OutOrStdout())
		},
	}
	cmd.Flags().StringVarP(&file, "filename", "f", "", "resource file")
	return cmd
}

func getCmd(cfg *plugin.Config) *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:   "get KIND [NAME]",
		Short: "List resources: nodes, ippools, networks, profiles, workloadendpoints, bgppeers, bgpfilters, bgpconfig, policies",
		Args:  cobra.RangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			k, err := kindOf(args[0])
			if err != nil {
				return err
			}
			st, err := cliStore(cfg)
			if err != nil {
				return err
			}
			defer st.Close()
			name := ""
			if len(args) == 2 {
				name = args[1]
			}
			return get(cmd.Context(), st, k, name, output, cmd.OutOrStdout())
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", "table", "table, wide, yaml or json")
	return cmd
}

func deleteCmd(cfg *plugin.Config) *cobra.Command {
	var force bool
	cmd := &cobra.Command{
		Use:   "delete KIND NAME",
		Short: "Delete a resource: ippool, networkpolicy, bgppeer, bgpfilter, felixconfig, a profile no network uses, or a gone node (releasing its addresses and blocks)",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			k, err := kindOf(args[0])
			if err != nil {
				return err
			}
			st, err := cliStore(cfg)
			if err != nil {
				return err
			}
			defer st.Close()
			switch k.name {
			case "IPPool":
			case "NetworkPolicy", "BGPPeer", "BGPFilter", "Profile", "FelixConfiguration":
				return deleteSimple(cmd, st, k, args[1])
			case "Node":
				return deleteNode(cmd.Context(), st, args[1], force, cmd.OutOrStdout())
			default:
				return fmt.Errorf("kind %s cannot be deleted with the CLI: Docker owns networks and endpoints", k.name)
			}
			var p datastore.IPPool
			if _, err := st.Get(cmd.Context(), datastore.PoolKey(args[1]), &p); err != nil {
				return fmt.Errorf("IPPool %q: %w", args[1], err)
			}
			if poolInUse(cmd.Context(), st, mustPrefix(p.CIDR)) {
				return fmt.Errorf("IPPool %s still has addresses in use: remove its containers first", p.Name)
			}
			if err := st.Delete(cmd.Context(), datastore.PoolKey(p.Name)); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "IPPool %s deleted\n", p.Name)
			return nil
		},
	}
	cmd.Flags().BoolVar(&force, "force", false, "delete a node even though its daemon still holds its liveness lease")
	return cmd
}

// deleteSimple deletes a resource that nothing else holds; a profile still
// used by a network is refused.
func deleteSimple(cmd *cobra.Command, st *datastore.Store, k kind, name string) error {
	ctx := cmd.Context()
	key := k.dir + name
	var raw json.RawMessage
	if _, err := st.Get(ctx, key, &raw); err != nil {
		return fmt.Errorf("%s %q: %w", k.name, name, err)
	}
	if k.name == "Profile" {
		nets, err := datastore.ListAs[datastore.Network](ctx, st, datastore.NetworksDir)
		if err != nil {
			return err
		}
		for _, n := range nets {
			if n.Profile == name {
				return fmt.Errorf("Profile %s belongs to network %s: remove the network with docker network rm", name, n.Name)
			}
		}
	}
	if err := st.Delete(ctx, key); err != nil {
		return err
	}
	fmt.Fprintf(cmd.OutOrStdout(), "%s %s deleted\n", k.name, name)
	return nil
}

func nodeCmd(cfg *plugin.Config) *cobra.Command {
	node := &cobra.Command{Use: "node", Short: "This host's tabby"}
	node.AddCommand(&cobra.Command{
		Use:   "status",
		Short: "Show the BGP sessions of the local daemon",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			sock := cfg.ControlSocket()
			if cfg.RunDir == plugin.DefaultConfig().RunDir { // not chosen: maybe the managed plugin
				sock = plugin.FindDaemonSocket(sock, plugin.ManagedControlSockets)
			}
			st, err := fetchStatus(sock)
			if err != nil {
				fmt.Fprintln(cmd.OutOrStdout(), "tabby process is not running.")
				return fmt.Errorf("no answer on %s (is tabby daemon running with this --run-dir?): %w", sock, err)
			}
			printStatus(cmd.OutOrStdout(), st)
			return nil
		},
	})
	return node
}

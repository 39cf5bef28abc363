package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"slices"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"
	"github.com/tabbynet/tabby/datastore"
	"github.com/tabbynet/tabby/ipamdriver"
	"github.com/tabbynet/tabby/plugin"
)

// ErrIPAMInconsistent makes `tabby ipam check` exit non-zero.
var ErrIPAMInconsistent = errors.New("IPAM check found problems")

func ipamCmd(cfg *plugin.Config) *cobra.Command {
	ipam := &cobra.Command{Use: "ipam", Short: "Inspect and repair address assignments"}
	var showIP string
	show := &cobra.Command{
		Use:   "show [--ip IP]",
		Short: "Blocks with their owners and use, or who holds one address",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return withStore(cfg, func(st *datastore.Store) error {
				return ipamShow(cmd.Context(), st, showIP, cmd.OutOrStdout())
			})
		},
	}
	show.Flags().StringVar(&showIP, "ip", "", "show the block, handle and endpoint of this address")
	check := &cobra.Command{
		Use:   "check",
		Short: "Find addresses assigned without an endpoint, endpoints without an assignment, and doubles",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return withStore(cfg, func(st *datastore.Store) error {
				return ipamCheck(cmd.Context(), st, cmd.OutOrStdout())
			})
		},
	}
	var relIP string
	var force bool
	release := &cobra.Command{
		Use:   "release --ip IP",
		Short: "Release an address no endpoint uses (a leak that ipam check reported)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			a, err := netip.ParseAddr(relIP)
			if err != nil {
				return fmt.Errorf("--ip %q is not an IP address", relIP)
			}
			return withStore(cfg, func(st *datastore.Store) error {
				return ipamRelease(cmd.Context(), st, a, force, cmd.OutOrStdout())
			})
		},
	}
	release.Flags().StringVar(&relIP, "ip", "", "the address to release")
	release.Flags().BoolVar(&force, "force", false, "release even if an endpoint still has the address")
	ipam.AddCommand(show, check, release)
	return ipam
}

func withStore(cfg *plugin.Config, fn func(*datastore.Store) error) error {
	st, err := cliStore(cfg)
	if err != nil {
		return err
	}
	defer st.Close()
	return fn(st)
}

func ipamShow(ctx context.Context, st *datastore.Store, ip string, out io.Writer) error {
	s, err := ipamdriver.ReadState(ctx, st)
	if err != nil {
		return err
	}
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	defer tw.Flush()
	if ip != "" {
		a, err := netip.ParseAddr(ip)
		if err != nil {
			return fmt.Errorf("--ip %q is not an IP address", ip)
		}
		block, handle := ipamdriver.HandleOf(s.Blocks, a)
		if block == "" {
			return fmt.Errorf("%s is in no block: tabby never assigned it", a)
		}
		var users []string
		for _, e := range holders(s.Endpoints, a) {
			users = append(users, fmt.Sprintf("%s on %s (%s)", short(e.EndpointID), e.Node, e.Interface))
		}
		fmt.Fprintln(tw, "IP\tBLOCK\tHANDLE\tENDPOINT")
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", a, block, orDash(handle), orDash(strings.Join(users, ", ")))
		return nil
	}
	fmt.Fprintln(tw, "BLOCK\tPOOL\tAFFINITY\tIN USE\tFREE")
	used, size := 0, 0
	for _, u := range ipamdriver.Usage(s.Blocks) {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\n", u.CIDR, u.Pool, orDash(u.Affinity), u.InUse, u.Size-u.InUse)
		used, size = used+u.InUse, size+u.Size
	}
	fmt.Fprintf(tw, "TOTAL\t\t\t%d\t%d\n", used, size-used)
	return nil
}

func ipamCheck(ctx context.Context, st *datastore.Store, out io.Writer) error {
	s, err := ipamdriver.ReadState(ctx, st)
	if err != nil {
		return err
	}
	found := ipamdriver.Check(s)
	if len(found) == 0 {
		fmt.Fprintf(out, "IPAM is consistent: %d endpoints, every assigned address accounted for.\n", len(s.Endpoints))
		return nil
	}
	for _, f := range found {
		fmt.Fprintln(out, f)
	}
	return fmt.Errorf("%w: %d (release leaks with 'tabby ipam release --ip IP')", ErrIPAMInconsistent, len(found))
}

func ipamRelease(ctx context.Context, st *datastore.Store, a netip.Addr, force bool, out io.Writer) error {
	s, err := ipamdriver.ReadState(ctx, st)
	if err != nil {
		return err
	}
	block, handle := ipamdriver.HandleOf(s.Blocks, a)
	if block == "" || handle == "" {
		fmt.Fprintf(out, "%s is not assigned; nothing to release\n", a)
		return nil
	}
	if hs := holders(s.Endpoints, a); len(hs) > 0 && !force {
		return fmt.Errorf("%s is in use by endpoint %s on %s: remove its container first (or --force)", a, short(hs[0].EndpointID), hs[0].Node)
	}
	// Releasing through an allocator of the block's owner keeps the handle
	// bookkeeping in the same transaction as the block.
	if err := ipamdriver.NewAllocator(st, "tabby-cli").ReleaseIP(ctx, a); err != nil {
		return err
	}
	fmt.Fprintf(out, "%s released (was handle %s in block %s)\n", a, handle, block)
	return nil
}

// holders returns the endpoints that have address a.
func holders(eps []datastore.WorkloadEndpoint, a netip.Addr) []datastore.WorkloadEndpoint {
	var out []datastore.WorkloadEndpoint
	for _, e := range eps {
		if slices.Contains(e.Addrs(), a) {
			out = append(out, e)
		}
	}
	return out
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func short(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	return id
}

// deleteNode removes a gone host: its endpoints' records and addresses,
// its tunnel addresses, its blocks (see Allocator.ReleaseNode) and its
// Node. A node whose daemon still answers is refused without force: it
// would register itself again and hold endpoints nobody knows of.
func deleteNode(ctx context.Context, st *datastore.Store, name string, force bool, out io.Writer) error {
	var n datastore.Node
	if _, err := st.Get(ctx, datastore.NodeKey(name), &n); err != nil {
		return fmt.Errorf("Node %q: %w", name, err)
	}
	live, err := st.ListKeys(ctx, datastore.LivenessDir)
	if err != nil {
		return err
	}
	for _, k := range live {
		if k == datastore.LivenessKey(name) && !force {
			return fmt.Errorf("node %s is alive (its daemon holds its liveness lease): stop tabby there first, or --force", name)
		}
	}
	eps, err := datastore.ListAs[datastore.WorkloadEndpoint](ctx, st, datastore.EndpointsOf(name))
	if err != nil {
		return err
	}
	var addrs []netip.Addr
	for _, e := range eps {
		addrs = append(addrs, e.Addrs()...)
	}
	blocks, err := ipamdriver.NewAllocator(st, "tabby-cli").ReleaseNode(ctx, name, addrs)
	if err != nil {
		return err
	}
	// etcd bounds the operations of one transaction (128 by default).
	for i := 0; i < len(eps); i += 100 {
		var ops []datastore.Op
		for _, e := range eps[i:min(i+100, len(eps))] {
			ops = append(ops, datastore.Op{Key: datastore.EndpointKey(name, e.EndpointID), Rev: datastore.Any})
		}
		if err := st.Commit(ctx, ops...); err != nil {
			return err
		}
	}
	if err := st.Commit(ctx, datastore.Op{Key: datastore.NodeKey(name), Rev: datastore.Any},
		datastore.Op{Key: datastore.LivenessKey(name), Rev: datastore.Any}); err != nil {
		return err
	}
	fmt.Fprintf(out, "Node %s deleted: %d endpoints, %d addresses and %d blocks released\n", name, len(eps), len(addrs), blocks)
	return nil
}

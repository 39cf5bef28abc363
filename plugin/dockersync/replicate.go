package dockersync

import (
	"context"
	"log/slog"
	"slices"
	"time"

	dnetwork "github.com/docker/docker/api/types/network"
	"github.com/docker/docker/client"
	"github.com/tabbynet/tabby/datastore"
)

// originOption marks a network tabby created to mirror one made on another
// host; the driver records it as the network's Origin.
const originOption = "tabby.origin"

// Replicate makes tabby networks cluster-wide, since Docker without a
// cluster store only knows its own: a network a user creates on any host is
// created here too, with the same name, subnet and options, and removed here
// once it is removed where it was made. Runs apart from plugin requests.
func Replicate(ctx context.Context, docker *client.Client, view *datastore.View, node string, log *slog.Logger) {
	view.OnChange(ctx, []string{datastore.NetworksDir}, 5*time.Second, nil, func() {
		replicateOnce(ctx, docker, datastore.ViewList[datastore.Network](view, datastore.NetworksDir), node, log)
	})
}

func replicateOnce(ctx context.Context, docker *client.Client, nets []datastore.Network, node string, log *slog.Logger) {
	local, err := tabbyNetworks(ctx, docker)
	if err != nil {
		log.Debug("replicate: docker network list", "err", err)
		return
	}
	drivers := tabbyDrivers(ctx, docker)
	byID := map[string]datastore.Network{}
	for _, n := range nets {
		byID[n.ID] = n
	}
	localByName := map[string]bool{}
	for _, l := range local {
		localByName[l.Name] = true
		rec, ok := byID[l.ID]
		if !ok || rec.Origin == "" {
			continue
		}
		if _, alive := byID[rec.Origin]; alive {
			continue
		}
		if err := docker.NetworkRemove(ctx, l.ID); err != nil {
			log.Warn("network removed on its origin host is still in use here", "network", l.Name, "err", err)
			continue
		}
		log.Info("network removed after its origin", "network", l.Name)
	}
	for _, n := range nets {
		if n.Origin != "" || n.Name == "" || n.Node == node || localByName[n.Name] {
			continue
		}
		drv := mirrorDriver(n.Driver, drivers)
		opts := map[string]string{originOption: n.ID}
		for k, v := range n.Options {
			opts[k] = v
		}
		ipam := &dnetwork.IPAM{Driver: drv}
		if n.Subnet != "" {
			ipam.Config = []dnetwork.IPAMConfig{{Subnet: n.Subnet}}
		}
		if n.Subnet6 != "" {
			ipam.Config = append(ipam.Config, dnetwork.IPAMConfig{Subnet: n.Subnet6})
		}
		// The origin's labels: Compose accepts a network on another host
		// only with its own labels on it.
		create := dnetwork.CreateOptions{Driver: drv, IPAM: ipam, Options: opts, Internal: n.Internal, Labels: n.Labels}
		if n.IPv6 {
			create.EnableIPv6 = &n.IPv6
		}
		if n.NoIPv4 {
			no := false
			create.EnableIPv4 = &no
		}
		if _, err := docker.NetworkCreate(ctx, n.Name, create); err != nil {
			log.Warn("could not mirror network", "network", n.Name, "err", err)
			continue
		}
		localByName[n.Name] = true
		log.Info("network mirrored from another host", "network", n.Name, "origin", n.Node)
	}
}

// mirrorDriver is the driver name a mirrored network is created with: the
// origin's, so every host names the same plugin reference, when tabby is
// known by it here; else this host's own (a managed plugin's name before
// the legacy "tabby").
func mirrorDriver(origin string, local map[string]bool) string {
	if local[origin] {
		return origin
	}
	var managed []string
	for n := range local {
		if !slices.Contains(legacyDriverNames, n) {
			managed = append(managed, n)
		}
	}
	if len(managed) == 0 {
		return "tabby"
	}
	slices.Sort(managed)
	return managed[0]
}

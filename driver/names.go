package driver

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/tabbynet/tabby/datastore"
)

// SetNetworkName records the name Docker gave a network and the driver
// name Docker used (learned from Docker outside any plugin request). Its
// profile and its endpoints' labels follow by reconciliation
// (ReconcileNames), so a rename that stops half-way still converges.
func (d *Driver) SetNetworkName(ctx context.Context, id, name, driverName string, labels map[string]string) error {
	err := datastore.Update(ctx, d.store, datastore.NetworkKey(id), func(n *datastore.Network, exists bool) error {
		if !exists {
			return datastore.ErrNotFound
		}
		n.Name, n.Profile = name, name
		if driverName != "" {
			n.Driver = driverName
		}
		if labels != nil {
			n.Labels = labels
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("name network %s: %w", short(id), err)
	}
	// The profile at once, so that `docker run` right after the create
	// finds it; the rest converges.
	prof := networkProfile(name, id)
	if err := d.store.Create(ctx, datastore.ProfileKey(name), &prof); err != nil && !errors.Is(err, datastore.ErrConflict) {
		return fmt.Errorf("profile %s: %w", name, err)
	}
	return nil
}

// networkProfile is the profile tabby makes for a network: members (the
// endpoints labelled with its name) reach each other, egress is open.
func networkProfile(name, id string) datastore.Profile {
	return datastore.Profile{Name: name, Network: id,
		Ingress: []datastore.Rule{{Action: "Allow", Source: datastore.RuleTarget{Selector: LabelNetwork + " == '" + name + "'"}}},
		Egress:  []datastore.Rule{{Action: "Allow"}}}
}

// ReconcileNames makes the records agree with the networks' names: this
// host's endpoints carry their network's profile and label, each network
// made here has its profile (one a user edited is left as it is), and a
// profile that tabby made for a network and that no network names any more
// is removed once it has stayed so for the grace (its network may be in
// the middle of being created elsewhere).
func (d *Driver) ReconcileNames(ctx context.Context, grace time.Duration) error {
	nets := datastore.ViewList[datastore.Network](d.view, datastore.NetworksDir)
	byID := make(map[string]datastore.Network, len(nets))
	named := map[string]bool{}
	for _, n := range nets {
		byID[n.ID] = n
		named[n.Profile] = true
	}
	var errs []error
	for _, e := range datastore.ViewList[datastore.WorkloadEndpoint](d.view, datastore.EndpointsOf(d.node)) {
		n, ok := byID[e.NetworkID]
		if !ok || n.Profile == "" || (slices.Equal(e.Profiles, []string{n.Profile}) && e.Labels[LabelNetwork] == n.Profile) {
			continue
		}
		errs = append(errs, d.relabel(ctx, e.EndpointID, n.Profile))
	}
	for _, n := range nets {
		if n.Node != d.node || n.Profile == "" {
			continue
		}
		if _, _, ok := datastore.ViewGet[datastore.Profile](d.view, datastore.ProfileKey(n.Profile)); ok {
			continue
		}
		prof := networkProfile(n.Profile, n.ID)
		if err := d.store.Create(ctx, datastore.ProfileKey(prof.Name), &prof); err != nil && !errors.Is(err, datastore.ErrConflict) {
			errs = append(errs, fmt.Errorf("profile %s: %w", prof.Name, err))
		} else if err == nil {
			d.log.Info("profile made", "network", n.Profile, "id", short(n.ID))
		}
	}
	now := time.Now()
	stale := map[string]time.Time{}
	for _, key := range d.view.Keys(datastore.ProfilesDir) {
		p, rev, ok := datastore.ViewGet[datastore.Profile](d.view, key)
		if !ok || p.Network == "" || named[p.Name] {
			continue // a user's profile, or in use
		}
		since, seen := d.staleProfiles[p.Name]
		if !seen {
			since = now
		}
		stale[p.Name] = since
		if now.Sub(since) < grace {
			continue
		}
		// Only as the view saw it: a profile made again since stays.
		err := d.store.Commit(ctx, datastore.Op{Key: key, Rev: rev})
		if err == nil {
			d.log.Info("profile of no network removed", "profile", p.Name)
		} else if !errors.Is(err, datastore.ErrConflict) {
			errs = append(errs, fmt.Errorf("remove profile %s: %w", p.Name, err))
		}
		delete(stale, p.Name)
	}
	d.staleProfiles = stale
	return errors.Join(errs...)
}

func (d *Driver) relabel(ctx context.Context, id, profile string) error {
	err := datastore.Update(ctx, d.store, datastore.EndpointKey(d.node, id), func(e *datastore.WorkloadEndpoint, exists bool) error {
		if !exists {
			return datastore.ErrNotFound
		}
		e.Profiles = []string{profile}
		labels := map[string]string{}
		for k, v := range e.Labels {
			labels[k] = v // the view's map is shared: a copy is changed
		}
		labels[LabelNetwork] = profile
		e.Labels = labels
		return nil
	})
	if err != nil && !errors.Is(err, datastore.ErrNotFound) {
		return fmt.Errorf("relabel endpoint %s: %w", short(id), err)
	}
	return nil
}

// RunNames keeps names converged as networks, profiles and this host's
// endpoints change, with a periodic resync.
func (d *Driver) RunNames(ctx context.Context, resync, grace time.Duration) {
	dirs := []string{datastore.NetworksDir, datastore.ProfilesDir, datastore.EndpointsOf(d.node)}
	d.view.OnChange(ctx, dirs, resync, nil, func() {
		if err := d.ReconcileNames(ctx, grace); err != nil && ctx.Err() == nil {
			d.log.Warn("network names", "err", err)
		}
	})
}

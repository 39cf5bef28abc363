package datastore

import "context"

// Compact compacts etcd's history up to now, so a watch from before fails
// as after a long outage.
func (s *Store) Compact(ctx context.Context) error {
	resp, err := s.cli.Get(ctx, "compact-probe")
	if err != nil {
		return err
	}
	_, err = s.cli.Compact(ctx, resp.Header.Revision)
	return err
}

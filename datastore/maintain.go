package datastore

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// ErrFull means etcd takes no writes: its database reached its quota.
var ErrFull = errors.New("etcd database full")

// fullHelp says how to get out of ErrFull.
const fullHelp = "etcd takes no more writes until space is freed and its NOSPACE alarm is disarmed; " +
	"the embedded etcd does both by itself within a minute, for an external one run " +
	"`etcdctl compact <revision>`, `etcdctl defrag` and `etcdctl alarm disarm`, or raise its --quota-backend-bytes"

func isFull(err error) bool {
	return errors.Is(err, rpctypes.ErrNoSpace) || errors.Is(err, rpctypes.ErrGRPCNoSpace) ||
		strings.Contains(err.Error(), rpctypes.ErrNoSpace.Error())
}

// DBStats is what one etcd member says of its database file.
type DBStats struct {
	Endpoint string
	// Size is the file's size, InUse what of it holds data; a
	// defragmentation gives the difference back.
	Size, InUse int64
	Revision    int64
	// Full is set while the member's NOSPACE alarm is raised.
	Full bool
	// Leader says the member leads the cluster now.
	Leader bool
}

// DBStats asks each endpoint for its database's size; unreachable members
// are left out, and none answering is an error.
func (s *Store) DBStats(ctx context.Context) ([]DBStats, error) {
	var out []DBStats
	var errs []error
	for _, ep := range s.cli.Endpoints() {
		// Each member its own, short, deadline: a dead one would otherwise
		// use up the others' time.
		sctx, cancel := context.WithTimeout(ctx, min(s.timeout, time.Second))
		st, err := s.cli.Status(sctx, ep)
		cancel()
		if err != nil {
			errs = append(errs, err)
			continue
		}
		d := DBStats{Endpoint: ep, Size: st.DbSize, InUse: st.DbSizeInUse, Revision: st.Header.Revision,
			Leader: st.Leader != 0 && st.Leader == st.Header.MemberId}
		for _, e := range st.Errors {
			d.Full = d.Full || strings.Contains(e, "NOSPACE")
		}
		out = append(out, d)
	}
	if len(out) == 0 {
		return nil, s.wrap(errors.Join(errs...))
	}
	return out, nil
}

// Maintain keeps a tabby-run etcd small and writable; the daemon calls it
// periodically for its embedded etcd only (an external etcd is its
// operator's). A member at its quota is compacted to now, defragmented and
// its alarm disarmed; a member whose file is mostly free space (more than
// half, above minFree) is defragmented. It reports what it did.
func (s *Store) Maintain(ctx context.Context, minFree int64) (string, error) {
	stats, err := s.DBStats(ctx)
	if err != nil {
		return "", err
	}
	var did []string
	for _, d := range stats {
		free := d.Size - d.InUse
		if !d.Full && (free < minFree || free*2 < d.Size) {
			continue
		}
		if d.Full {
			cctx, cancel := context.WithTimeout(ctx, s.timeout)
			_, err := s.cli.Compact(cctx, d.Revision)
			cancel()
			if err != nil && !errors.Is(err, rpctypes.ErrCompacted) {
				return strings.Join(did, "; "), fmt.Errorf("compact %s: %w", d.Endpoint, s.wrap(err))
			}
		}
		// Defragmenting blocks the member for a moment; its own timeout.
		dctx, cancel := context.WithTimeout(ctx, 4*s.timeout)
		_, err := s.cli.Defragment(dctx, d.Endpoint)
		cancel()
		if err != nil {
			return strings.Join(did, "; "), fmt.Errorf("defragment %s: %w", d.Endpoint, s.wrap(err))
		}
		if !d.Full {
			did = append(did, fmt.Sprintf("%s defragmented (%d of %d bytes in use)", d.Endpoint, d.InUse, d.Size))
		} else {
			actx, cancel := context.WithTimeout(ctx, s.timeout)
			_, err := s.cli.AlarmDisarm(actx, &clientv3.AlarmMember{}) // every alarm of every member
			cancel()
			if err != nil {
				return strings.Join(did, "; "), fmt.Errorf("disarm %s: %w", d.Endpoint, s.wrap(err))
			}
			did = append(did, fmt.Sprintf("%s was full (%d bytes): compacted to revision %d, defragmented, NOSPACE alarm disarmed", d.Endpoint, d.Size, d.Revision))
		}
	}
	return strings.Join(did, "; "), nil
}

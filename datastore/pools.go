package datastore

import (
	"context"
	"errors"
)

// PoolsVersionKey counts the writes of pools: a pool write compares it, so
// two writers whose pools overlap cannot both pass the overlap check.
const PoolsVersionKey = Prefix + "ippools-version"

// PoolWrite is the write of one pool (p, or a delete when p is nil) that
// holds only if no other pool write came since the version read at
// verRev (0: never written), with ver that version.
func PoolWrite(name string, p *IPPool, ver, verRev int64, poolRev int64) []Op {
	op := Op{Key: PoolKey(name), Rev: poolRev}
	if p != nil {
		op.Value = p
	}
	return []Op{op, {Key: PoolsVersionKey, Value: ver + 1, Rev: verRev}}
}

// PoolsVersion reads the pools' version and its revision (0, 0 when no pool
// was ever written).
func PoolsVersion(ctx context.Context, st *Store) (ver, rev int64, err error) {
	rev, err = st.Get(ctx, PoolsVersionKey, &ver)
	if errors.Is(err, ErrNotFound) {
		return 0, 0, nil
	}
	return ver, rev, err
}

package store

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/agentnet/agentnet/wire"
)

// bucketPolicies holds every accepted policy: 8-byte big-endian version →
// wire.PolicyRecord JSON. Versions come from the bucket's sequence, so they only
// grow.
var bucketPolicies = []byte("policies")

// Policy returns stored policy version v, or the latest if v is 0. ok is
// false if there is no such version (or, for 0, no stored policy at all).
func (t boltTx) Policy(v uint64) (wire.PolicyRecord, bool, error) {
	var rec wire.PolicyRecord
	b := t.tx.Bucket(bucketPolicies)
	if b == nil {
		return rec, false, nil
	}
	var val []byte
	if v == 0 {
		_, val = b.Cursor().Last()
	} else {
		val = b.Get(binary.BigEndian.AppendUint64(nil, v))
	}
	if val == nil {
		return rec, false, nil
	}
	if err := json.Unmarshal(val, &rec); err != nil {
		return rec, false, fmt.Errorf("store: decode policy v%d: %w", v, err)
	}
	return rec, true, nil
}

// AddPolicy stores rec as the next policy version and returns it with its
// Version set.
func (t boltTx) AddPolicy(rec wire.PolicyRecord) (wire.PolicyRecord, error) {
	if rec.Text == "" {
		return rec, errors.New("store: policy record has no text")
	}
	b, err := t.tx.CreateBucketIfNotExists(bucketPolicies)
	if err != nil {
		return rec, err
	}
	if rec.Version, err = b.NextSequence(); err != nil {
		return rec, err
	}
	v, err := json.Marshal(rec)
	if err != nil {
		return rec, err
	}
	return rec, b.Put(binary.BigEndian.AppendUint64(nil, rec.Version), v)
}

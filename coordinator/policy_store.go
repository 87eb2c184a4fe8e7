package coordinator

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// PolicyRecord is one accepted version of the policy document, as stored
// and as 'agentnet policy get' returns it. Version 0 is the built-in
// default (policy.DefaultText); it is never stored.
type PolicyRecord struct {
	Version uint64    `json:"version"`
	Text    string    `json:"text"`              // the YAML exactly as submitted
	Source  string    `json:"source,omitempty"`  // file name it was submitted from
	Created time.Time `json:"created,omitzero"`  // when it was accepted
	By      string    `json:"by,omitempty"`      // who submitted it, as the client said
	Address string    `json:"address,omitempty"` // the submitting client's address
}

// bucketPolicies holds every accepted policy: 8-byte big-endian version →
// PolicyRecord JSON. Versions come from the bucket's sequence, so they only
// grow.
var bucketPolicies = []byte("policies")

// Policy returns stored policy version v, or the latest if v is 0. ok is
// false if there is no such version (or, for 0, no stored policy at all).
func (t boltTx) Policy(v uint64) (PolicyRecord, bool, error) {
	var rec PolicyRecord
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
func (t boltTx) AddPolicy(rec PolicyRecord) (PolicyRecord, error) {
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

package store

import (
	"encoding/json"
	"errors"
	"fmt"

	"github.com/agentnet/agentnet/wire"
)

// Buckets of the node lifecycle (revocation, expiry, key rotation).
var (
	bucketRevoked     = []byte("revoked")      // DID → wire.Revocation
	bucketRetiredKeys = []byte("retired_keys") // base64 WireGuard key → RetiredKey
)

func (t boltTx) Revocation(did string) (wire.Revocation, bool, error) {
	var r wire.Revocation
	v := t.tx.Bucket(bucketRevoked).Get([]byte(did))
	if v == nil {
		return r, false, nil
	}
	if err := json.Unmarshal(v, &r); err != nil {
		return r, false, fmt.Errorf("store: decode revocation %s: %w", did, err)
	}
	return r, true, nil
}

func (t boltTx) PutRevocation(r wire.Revocation) error {
	if r.Node.DID == "" || r.State == "" {
		return errors.New("store: revocation lacks DID or state")
	}
	v, err := json.Marshal(r)
	if err != nil {
		return err
	}
	return t.tx.Bucket(bucketRevoked).Put([]byte(r.Node.DID), v)
}

func (t boltTx) Revocations() ([]wire.Revocation, error) {
	var out []wire.Revocation
	err := t.tx.Bucket(bucketRevoked).ForEach(func(k, v []byte) error {
		var r wire.Revocation
		if err := json.Unmarshal(v, &r); err != nil {
			return fmt.Errorf("store: decode revocation %s: %w", k, err)
		}
		out = append(out, r)
		return nil
	})
	return out, err
}

func (t boltTx) RetiredKey(wgKey string) (RetiredKey, bool, error) {
	var r RetiredKey
	v := t.tx.Bucket(bucketRetiredKeys).Get([]byte(wgKey))
	if v == nil {
		return r, false, nil
	}
	if err := json.Unmarshal(v, &r); err != nil {
		return r, false, fmt.Errorf("store: decode retired key: %w", err)
	}
	return r, true, nil
}

func (t boltTx) PutRetiredKey(r RetiredKey) error {
	if r.Key == "" || r.DID == "" {
		return errors.New("store: retired key lacks key or DID")
	}
	if err := t.bindWGKey(r.Key, r.DID); err != nil {
		return err
	}
	v, err := json.Marshal(r)
	if err != nil {
		return err
	}
	return t.tx.Bucket(bucketRetiredKeys).Put([]byte(r.Key), v)
}

// RetiredKeysOf scans every retired key; it runs only when an identity is
// revoked or expires.
func (t boltTx) RetiredKeysOf(did string) ([]RetiredKey, error) {
	var out []RetiredKey
	err := t.tx.Bucket(bucketRetiredKeys).ForEach(func(k, v []byte) error {
		var r RetiredKey
		if err := json.Unmarshal(v, &r); err != nil {
			return fmt.Errorf("store: decode retired key: %w", err)
		}
		if r.DID == did {
			out = append(out, r)
		}
		return nil
	})
	return out, err
}

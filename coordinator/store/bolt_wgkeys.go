package store

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"slices"

	bolt "go.etcd.io/bbolt"

	"github.com/agentnet/agentnet/wire"
)

// bucketWGKeys binds every WireGuard key the coordinator ever accepted to the
// identity that published it: raw 32-byte key → DID. Bindings are never
// removed (not by rotation, revocation, expiry or deletion), so a key
// belongs to one node, ever (issue 17, item 1: a node publishing another
// node's key took its traffic). Keys are compared as their 32 bytes, never
// as text.
var bucketWGKeys = []byte("wg_keys")

func (t boltTx) WGKeyOwner(key [32]byte) (string, bool, error) {
	v := t.tx.Bucket(bucketWGKeys).Get(key[:])
	return string(v), v != nil, nil
}

// bindWGKey binds the base64 key wgKey to did, or fails with ErrKeyInUse if
// another identity holds (or held) it. An empty key binds nothing.
func (t boltTx) bindWGKey(wgKey, did string) error {
	if wgKey == "" {
		return nil
	}
	k, err := rawWGKey(wgKey)
	if err != nil {
		return fmt.Errorf("store: %s: %w", did, err)
	}
	return t.bindRawWGKey(k, did)
}

// rawWGKey decodes a base64 WireGuard key to its 32 bytes. It is lenient on
// purpose: the coordinator accepts only canonical spellings
// (wire.ParseWGKey), but a store written before it did may hold others,
// and every spelling of a key must land on the same binding.
func rawWGKey(s string) ([32]byte, error) {
	raw, err := base64.StdEncoding.DecodeString(s)
	if err != nil || len(raw) != 32 {
		return [32]byte{}, fmt.Errorf("%w: %.12q is not 32 bytes of base64", wire.ErrBadWGKey, s)
	}
	return [32]byte(raw), nil
}

func (t boltTx) bindRawWGKey(k [32]byte, did string) error {
	b := t.tx.Bucket(bucketWGKeys)
	switch owner := b.Get(k[:]); {
	case owner == nil:
		return b.Put(k[:], []byte(did))
	case !bytes.Equal(owner, []byte(did)):
		return fmt.Errorf("%w: key %s is bound to %s, not %s", ErrKeyInUse, wire.Fingerprint(k[:]), owner, did)
	}
	return nil
}

func isKeyInUse(err error) bool { return errors.Is(err, ErrKeyInUse) }

// backfillWGKeys fills a new wg_keys bucket from a store written before it
// existed: retired keys first (they were in use earlier), then current keys
// by enrollment time. A key two nodes already share (the takeover this
// index prevents) stays bound to its earlier holder; the later node's next
// write of that key fails with ErrKeyInUse.
func backfillWGKeys(tx *bolt.Tx) error {
	t := boltTx{tx}
	var keys []RetiredKey
	err := tx.Bucket(bucketRetiredKeys).ForEach(func(_, v []byte) error {
		var r RetiredKey
		if err := json.Unmarshal(v, &r); err != nil {
			return fmt.Errorf("store: decode retired key: %w", err)
		}
		keys = append(keys, r)
		return nil
	})
	if err != nil {
		return err
	}
	slices.SortFunc(keys, func(a, b RetiredKey) int { return a.At.Compare(b.At) })
	nodes, err := t.Nodes()
	if err != nil {
		return err
	}
	slices.SortFunc(nodes, func(a, b wire.Node) int { return a.Created.Compare(b.Created) })
	for _, n := range nodes {
		keys = append(keys, RetiredKey{Key: n.WGKey, DID: n.DID})
	}
	for _, k := range keys {
		raw, err := rawWGKey(k.Key)
		if err != nil {
			continue // not a key: nothing to bind
		}
		if err := t.bindRawWGKey(raw, k.DID); err != nil && !isKeyInUse(err) {
			return err
		}
	}
	return nil
}

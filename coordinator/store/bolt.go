package store

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"time"

	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"

	"github.com/agentnet/agentnet/wire"
)

// Bucket names of the bbolt store. Values are JSON except where noted.
var (
	bucketNodes  = []byte("nodes")  // DID → wire.Node (Online is never stored)
	bucketNames  = []byte("names")  // name → DID
	bucketIPs    = []byte("ips")    // 4- or 16-byte address → DID
	bucketTokens = []byte("tokens") // token id → TokenRecord
	bucketMeta   = []byte("meta")   // key → raw bytes; "serial" is 8 bytes big-endian
)

var metaSerial = []byte("serial")

// boltStore is the default Store: one bbolt file, one write transaction per
// mutation (bbolt serialises writers).
type boltStore struct {
	db *bolt.DB
}

var _ Store = (*boltStore)(nil)

// OpenBolt opens (creating if needed, mode 0600) the bbolt store at path.
// It fails after one second if another process holds the file.
func OpenBolt(path string) (Store, error) {
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		if errors.Is(err, bolterrors.ErrTimeout) {
			return nil, fmt.Errorf("store: open %s: locked by another process (is another coordinator running on this data dir?)", path)
		}
		return nil, fmt.Errorf("store: open %s: %w", path, err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		backfill := tx.Bucket(bucketWGKeys) == nil
		for _, b := range [][]byte{bucketNodes, bucketNames, bucketIPs, bucketTokens, bucketMeta, bucketPolicies, bucketRevoked, bucketRetiredKeys, bucketWGKeys} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		if backfill {
			return backfillWGKeys(tx)
		}
		return nil
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("store: init %s: %w", path, err)
	}
	return &boltStore{db: db}, nil
}

func (s *boltStore) View(fn func(Tx) error) error {
	return mapClosed(s.db.View(func(tx *bolt.Tx) error { return fn(boltTx{tx}) }))
}

func (s *boltStore) Update(fn func(Tx) error) error {
	return mapClosed(s.db.Update(func(tx *bolt.Tx) error { return fn(boltTx{tx}) }))
}

func (s *boltStore) Close() error { return s.db.Close() }

func mapClosed(err error) error {
	if errors.Is(err, bolterrors.ErrDatabaseNotOpen) {
		return ErrClosed
	}
	return err
}

type boltTx struct{ tx *bolt.Tx }

func (t boltTx) Node(did string) (wire.Node, bool, error) {
	var n wire.Node
	v := t.tx.Bucket(bucketNodes).Get([]byte(did))
	if v == nil {
		return n, false, nil
	}
	if err := json.Unmarshal(v, &n); err != nil {
		return n, false, fmt.Errorf("store: decode node %s: %w", did, err)
	}
	return n, true, nil
}

func (t boltTx) Nodes() ([]wire.Node, error) {
	var out []wire.Node
	err := t.tx.Bucket(bucketNodes).ForEach(func(k, v []byte) error {
		var n wire.Node
		if err := json.Unmarshal(v, &n); err != nil {
			return fmt.Errorf("store: decode node %s: %w", k, err)
		}
		out = append(out, n)
		return nil
	})
	return out, err
}

func (t boltTx) PutNode(n wire.Node) error {
	if n.DID == "" || n.Name == "" || !n.IPv4.IsValid() || !n.IPv6.IsValid() {
		return fmt.Errorf("store: node %q/%q lacks DID, name or address", n.Name, n.DID)
	}
	if err := t.bindWGKey(n.WGKey, n.DID); err != nil {
		return err
	}
	old, ok, err := t.Node(n.DID)
	if err != nil {
		return err
	}
	if ok {
		if err := t.unindex(old); err != nil {
			return err
		}
	}
	n.Online = false // live state, never persisted
	v, err := json.Marshal(n)
	if err != nil {
		return err
	}
	did := []byte(n.DID)
	if err := t.tx.Bucket(bucketNodes).Put(did, v); err != nil {
		return err
	}
	if err := t.tx.Bucket(bucketNames).Put([]byte(n.Name), did); err != nil {
		return err
	}
	ips := t.tx.Bucket(bucketIPs)
	if err := ips.Put(n.IPv4.AsSlice(), did); err != nil {
		return err
	}
	return ips.Put(n.IPv6.AsSlice(), did)
}

// unindex removes the index entries of n that still point at n.
func (t boltTx) unindex(n wire.Node) error {
	names, ips := t.tx.Bucket(bucketNames), t.tx.Bucket(bucketIPs)
	if string(names.Get([]byte(n.Name))) == n.DID {
		if err := names.Delete([]byte(n.Name)); err != nil {
			return err
		}
	}
	for _, a := range []netip.Addr{n.IPv4, n.IPv6} {
		if a.IsValid() && string(ips.Get(a.AsSlice())) == n.DID {
			if err := ips.Delete(a.AsSlice()); err != nil {
				return err
			}
		}
	}
	return nil
}

func (t boltTx) DeleteNode(did string) error {
	n, ok, err := t.Node(did)
	if err != nil || !ok {
		return err
	}
	if err := t.unindex(n); err != nil {
		return err
	}
	return t.tx.Bucket(bucketNodes).Delete([]byte(did))
}

func (t boltTx) NameOwner(name string) (string, bool, error) {
	v := t.tx.Bucket(bucketNames).Get([]byte(name))
	return string(v), v != nil, nil
}

func (t boltTx) AddrOwner(a netip.Addr) (string, bool, error) {
	v := t.tx.Bucket(bucketIPs).Get(a.Unmap().AsSlice())
	return string(v), v != nil, nil
}

func (t boltTx) Token(id string) (TokenRecord, bool, error) {
	var r TokenRecord
	v := t.tx.Bucket(bucketTokens).Get([]byte(id))
	if v == nil {
		return r, false, nil
	}
	if err := json.Unmarshal(v, &r); err != nil {
		return r, false, fmt.Errorf("store: decode token %s: %w", id, err)
	}
	return r, true, nil
}

func (t boltTx) Tokens() ([]TokenRecord, error) {
	var out []TokenRecord
	err := t.tx.Bucket(bucketTokens).ForEach(func(k, v []byte) error {
		var r TokenRecord
		if err := json.Unmarshal(v, &r); err != nil {
			return fmt.Errorf("store: decode token %s: %w", k, err)
		}
		out = append(out, r)
		return nil
	})
	return out, err
}

func (t boltTx) PutToken(r TokenRecord) error {
	if r.ID == "" || r.SecretHash == "" {
		return errors.New("store: token record lacks id or secret hash")
	}
	v, err := json.Marshal(r)
	if err != nil {
		return err
	}
	return t.tx.Bucket(bucketTokens).Put([]byte(r.ID), v)
}

func (t boltTx) Meta(key string) ([]byte, error) {
	v := t.tx.Bucket(bucketMeta).Get([]byte(key))
	if v == nil {
		return nil, nil
	}
	return append([]byte(nil), v...), nil // bbolt memory is only valid inside the tx
}

func (t boltTx) PutMeta(key string, v []byte) error {
	return t.tx.Bucket(bucketMeta).Put([]byte(key), v)
}

func (t boltTx) Serial() (uint64, error) {
	v := t.tx.Bucket(bucketMeta).Get(metaSerial)
	if v == nil {
		return 0, nil
	}
	if len(v) != 8 {
		return 0, fmt.Errorf("store: serial is %d bytes, want 8", len(v))
	}
	return binary.BigEndian.Uint64(v), nil
}

func (t boltTx) BumpSerial() (uint64, error) {
	s, err := t.Serial()
	if err != nil {
		return 0, err
	}
	s++
	return s, t.tx.Bucket(bucketMeta).Put(metaSerial, binary.BigEndian.AppendUint64(nil, s))
}

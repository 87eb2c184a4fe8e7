package store

import (
	"encoding/json"
	"errors"
	"net/netip"
	"path/filepath"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/agentnet/agentnet/wire"
)

func keyNode(did, name string, last byte, key [32]byte) wire.Node {
	return wire.Node{DID: did, Name: name, WGKey: wire.WGKeyString(key),
		IPv4: netip.AddrFrom4([4]byte{100, 64, 0, last}), IPv6: netip.AddrFrom16([16]byte{0: 0xfd, 15: last})}
}

// PutNode binds a node's WireGuard key to its DID for good: another
// identity's PutNode (or PutRetiredKey) of it fails with ErrKeyInUse and
// writes nothing, also after the holder rotated away or was deleted.
func TestBoltWGKeyBinding(t *testing.T) {
	s := openTest(t)
	k1, k2 := [32]byte{1}, [32]byte{2}
	a, b := keyNode("did:key:a", "alpha", 1, k1), keyNode("did:key:b", "bravo", 2, k2)
	if err := s.Update(func(tx Tx) error { return errors.Join(tx.PutNode(a), tx.PutNode(b)) }); err != nil {
		t.Fatal(err)
	}
	steal := b
	steal.WGKey = a.WGKey
	if err := s.Update(func(tx Tx) error { return tx.PutNode(steal) }); !errors.Is(err, ErrKeyInUse) {
		t.Fatalf("PutNode with alpha's key = %v, want ErrKeyInUse", err)
	}
	if err := s.Update(func(tx Tx) error {
		return tx.PutRetiredKey(RetiredKey{Key: a.WGKey, DID: b.DID, State: KeyStateRetired})
	}); !errors.Is(err, ErrKeyInUse) {
		t.Fatalf("PutRetiredKey of alpha's key for bravo = %v, want ErrKeyInUse", err)
	}
	// alpha rotates to k3 and is deleted: k1 stays alpha's.
	a.WGKey = wire.WGKeyString([32]byte{3})
	if err := s.Update(func(tx Tx) error {
		return errors.Join(tx.PutNode(a), tx.DeleteNode(a.DID))
	}); err != nil {
		t.Fatal(err)
	}
	if err := s.Update(func(tx Tx) error { return tx.PutNode(steal) }); !errors.Is(err, ErrKeyInUse) {
		t.Fatalf("PutNode with a deleted node's old key = %v, want ErrKeyInUse", err)
	}
	_ = s.View(func(tx Tx) error {
		for _, c := range []struct {
			k   [32]byte
			did string
		}{{k1, a.DID}, {k2, b.DID}, {[32]byte{3}, a.DID}} {
			if did, ok, err := tx.WGKeyOwner(c.k); err != nil || !ok || did != c.did {
				t.Errorf("WGKeyOwner(%x) = %q, %v, %v; want %s", c.k[:1], did, ok, err, c.did)
			}
		}
		if n, _, _ := tx.Node(b.DID); n.WGKey != wire.WGKeyString(k2) {
			t.Errorf("bravo's key changed by a refused PutNode: %s", n.WGKey)
		}
		return nil
	})
}

// A store written before the key index existed gets it filled on open:
// retired keys first, then current keys by enrollment time, so of two
// nodes already sharing a key the earlier one keeps it.
func TestBoltWGKeyBackfill(t *testing.T) {
	path := filepath.Join(t.TempDir(), "coord.db")
	s, err := OpenBolt(path)
	if err != nil {
		t.Fatal(err)
	}
	k := [32]byte{7}
	t0 := time.Unix(1e9, 0)
	early, late := keyNode("did:key:early", "early", 1, k), keyNode("did:key:late", "late", 2, [32]byte{8})
	early.Created, late.Created = t0, t0.Add(time.Hour)
	if err := s.Update(func(tx Tx) error {
		return errors.Join(tx.PutNode(early), tx.PutNode(late),
			tx.PutRetiredKey(RetiredKey{Key: wire.WGKeyString([32]byte{9}), DID: "did:key:gone", State: wire.StateRevoked}))
	}); err != nil {
		t.Fatal(err)
	}
	s.Close()
	// Make the old layout: no index, and late sharing early's key (the
	// takeover as an old coordinator stored it).
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	late.WGKey = early.WGKey
	err = db.Update(func(tx *bolt.Tx) error {
		if err := tx.DeleteBucket(bucketWGKeys); err != nil {
			return err
		}
		v, err := json.Marshal(late)
		if err != nil {
			return err
		}
		return tx.Bucket(bucketNodes).Put([]byte(late.DID), v)
	})
	db.Close()
	if err != nil {
		t.Fatal(err)
	}
	if s, err = OpenBolt(path); err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	_ = s.View(func(tx Tx) error {
		if did, _, _ := tx.WGKeyOwner(k); did != early.DID {
			t.Errorf("shared key bound to %q, want the earlier node %s", did, early.DID)
		}
		if did, _, _ := tx.WGKeyOwner([32]byte{9}); did != "did:key:gone" {
			t.Errorf("retired key bound to %q", did)
		}
		return nil
	})
}

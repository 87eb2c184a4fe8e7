package store

import (
	"errors"
	"net/netip"
	"path/filepath"
	"testing"

	"github.com/agentnet/agentnet/wire"
)

func openTest(t *testing.T) Store {
	t.Helper()
	s, err := OpenBolt(filepath.Join(t.TempDir(), "coord.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// TestBoltNodeIndexes checks that PutNode keeps the name and address
// indexes in step with a renamed, renumbered and deleted node.
func TestBoltNodeIndexes(t *testing.T) {
	s := openTest(t)
	n := wire.Node{DID: "did:key:a", Name: "alpha", IPv4: netip.MustParseAddr("100.64.0.1"), IPv6: netip.MustParseAddr("fd00::1"), Online: true}
	if err := s.Update(func(tx Tx) error { return tx.PutNode(n) }); err != nil {
		t.Fatal(err)
	}
	n2 := n
	n2.Name, n2.IPv4 = "alpha2", netip.MustParseAddr("100.64.0.2")
	if err := s.Update(func(tx Tx) error { return tx.PutNode(n2) }); err != nil {
		t.Fatal(err)
	}
	err := s.View(func(tx Tx) error {
		got, ok, err := tx.Node(n.DID)
		if err != nil || !ok || got.Name != "alpha2" || got.Online {
			t.Errorf("Node = %+v, %v, %v; want alpha2, not online (never stored)", got, ok, err)
		}
		if _, ok, _ := tx.NameOwner("alpha"); ok {
			t.Error("old name still indexed")
		}
		if _, ok, _ := tx.AddrOwner(n.IPv4); ok {
			t.Error("old IPv4 still indexed")
		}
		if did, ok, _ := tx.AddrOwner(n2.IPv4); !ok || did != n.DID {
			t.Errorf("AddrOwner(new IPv4) = %q, %v", did, ok)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Update(func(tx Tx) error { return tx.DeleteNode(n.DID) }); err != nil {
		t.Fatal(err)
	}
	_ = s.View(func(tx Tx) error {
		if _, ok, _ := tx.NameOwner("alpha2"); ok {
			t.Error("name indexed after delete")
		}
		if _, ok, _ := tx.AddrOwner(n.IPv6); ok {
			t.Error("IPv6 indexed after delete")
		}
		return nil
	})
}

// TestBoltUpdateRollsBack checks that an Update whose fn fails keeps
// nothing it did.
func TestBoltUpdateRollsBack(t *testing.T) {
	s := openTest(t)
	boom := errors.New("boom")
	err := s.Update(func(tx Tx) error {
		if _, err := tx.BumpSerial(); err != nil {
			return err
		}
		if _, err := tx.AddPolicy(wire.PolicyRecord{Text: "rules: []\n"}); err != nil {
			return err
		}
		return boom
	})
	if !errors.Is(err, boom) {
		t.Fatalf("Update = %v, want boom", err)
	}
	_ = s.View(func(tx Tx) error {
		if serial, _ := tx.Serial(); serial != 0 {
			t.Errorf("serial %d after a failed Update, want 0", serial)
		}
		if _, ok, _ := tx.Policy(0); ok {
			t.Error("policy stored by a failed Update")
		}
		return nil
	})
}

// TestBoltPolicyVersions checks that versions only grow and 0 reads the
// latest.
func TestBoltPolicyVersions(t *testing.T) {
	s := openTest(t)
	for _, text := range []string{"a\n", "b\n"} {
		if err := s.Update(func(tx Tx) error { _, err := tx.AddPolicy(wire.PolicyRecord{Text: text}); return err }); err != nil {
			t.Fatal(err)
		}
	}
	_ = s.View(func(tx Tx) error {
		if rec, ok, err := tx.Policy(0); err != nil || !ok || rec.Version != 2 || rec.Text != "b\n" {
			t.Errorf("Policy(0) = %+v, %v, %v; want v2", rec, ok, err)
		}
		if rec, ok, err := tx.Policy(1); err != nil || !ok || rec.Text != "a\n" {
			t.Errorf("Policy(1) = %+v, %v, %v; want v1", rec, ok, err)
		}
		if _, ok, err := tx.Policy(3); err != nil || ok {
			t.Errorf("Policy(3) = %v, %v; want none", ok, err)
		}
		return nil
	})
}

func TestBoltClosed(t *testing.T) {
	s := openTest(t)
	s.Close()
	if err := s.View(func(Tx) error { return nil }); !errors.Is(err, ErrClosed) {
		t.Fatalf("View after Close = %v, want ErrClosed", err)
	}
}

func TestBoltLockedByAnother(t *testing.T) {
	path := filepath.Join(t.TempDir(), "coord.db")
	s, err := OpenBolt(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := OpenBolt(path); err == nil {
		t.Fatal("second OpenBolt of the same file succeeded")
	}
}

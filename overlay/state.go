package overlay

import (
	"crypto/ecdh"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/agentnet/agentnet/internal/atomicfile"
	"github.com/agentnet/agentnet/wire"
)

// Files kept under Config.StateDir, all 0600 in a 0700 directory.
const (
	stateFile  = "node.json"     // keys and coordinator trust
	mapFile    = "wire.json"     // last verified signed network map
	socketFile = "agentnet.sock" // local API
	lockFile   = "node.lock"     // held by the running node (statelock.go); holds its PID
)

// nodeState is what a node must remember across restarts. Secrets never
// leave this file except as signatures and public keys.
type nodeState struct {
	IdentitySeed   []byte `json:"identity_seed"`   // Ed25519 seed (32 bytes)
	WGPrivate      []byte `json:"wg_private"`      // X25519 private key (32 bytes)
	DiscoPrivate   []byte `json:"disco_private"`   // X25519 key sealing path probes (32 bytes); made on load when missing
	Name           string `json:"name,omitempty"`  // as assigned by the coordinator
	CoordinatorURL string `json:"coordinator_url"` // from the join token
	CoordinatorPin string `json:"coordinator_pin"`
	CoordinatorKey []byte `json:"coordinator_key,omitempty"` // Ed25519 key that signs maps; learnt at enrollment

	// Key lifecycle (rotate.go, lifecycle.go).
	WGNext    []byte              `json:"wg_next,omitempty"`   // X25519 key being rotated to; promoted at load
	WGRotated time.Time           `json:"wg_rotated,omitzero"` // when WGPrivate was made; the next rotation is due KeyRotation later
	Refused   *wire.ErrorResponse `json:"refused,omitempty"`   // the coordinator revoked or expired this identity: never start again
}

func (s *nodeState) identity() ed25519.PrivateKey { return ed25519.NewKeyFromSeed(s.IdentitySeed) }

func (s *nodeState) wgKeys() (priv, pub [32]byte, err error) {
	k, err := ecdh.X25519().NewPrivateKey(s.WGPrivate)
	if err != nil {
		return priv, pub, fmt.Errorf("wireguard key in state: %w", err)
	}
	copy(priv[:], k.Bytes())
	copy(pub[:], k.PublicKey().Bytes())
	return priv, pub, nil
}

// discoKeys returns the disco key pair.
func (s *nodeState) discoKeys() (*discoKeys, error) {
	k, err := ecdh.X25519().NewPrivateKey(s.DiscoPrivate)
	if err != nil {
		return nil, fmt.Errorf("disco key in state: %w", err)
	}
	var dk discoKeys
	copy(dk.priv[:], k.Bytes())
	copy(dk.pub[:], k.PublicKey().Bytes())
	return &dk, nil
}

func (s *nodeState) enrolled() bool { return len(s.CoordinatorKey) == ed25519.PublicKeySize }

// newState makes fresh keys.
func newState(now time.Time) (*nodeState, error) {
	seed := make([]byte, ed25519.SeedSize)
	_, _ = rand.Read(seed)
	wg, err := ecdh.X25519().GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	disco, err := ecdh.X25519().GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	return &nodeState{IdentitySeed: seed, WGPrivate: wg.Bytes(), DiscoPrivate: disco.Bytes(), WGRotated: now}, nil
}

// loadState reads the state dir; a missing state file is not an error
// (ok=false), a damaged one is.
func loadState(dir string, now time.Time) (*nodeState, bool, error) {
	b, err := os.ReadFile(filepath.Join(dir, stateFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("read node state: %w", err)
	}
	var s nodeState
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, false, fmt.Errorf("node state %s is damaged (%v); move it away to re-enroll with a new identity", filepath.Join(dir, stateFile), err)
	}
	if len(s.IdentitySeed) != ed25519.SeedSize || len(s.WGPrivate) != 32 || (s.WGNext != nil && len(s.WGNext) != 32) {
		return nil, false, fmt.Errorf("node state %s has malformed keys; move it away to re-enroll with a new identity", filepath.Join(dir, stateFile))
	}
	if s.WGNext != nil {
		// A rotation was cut short: the coordinator may already have
		// retired the old key, so go on with the new one (an update
		// with it completes the rotation either way).
		s.WGPrivate, s.WGNext, s.WGRotated = s.WGNext, nil, now
		if err := saveState(dir, &s); err != nil {
			return nil, false, fmt.Errorf("save node state: %w", err)
		}
	}
	if len(s.DiscoPrivate) != 32 {
		// State from before path discovery: add a disco key.
		k, err := ecdh.X25519().GenerateKey(rand.Reader)
		if err != nil {
			return nil, false, err
		}
		s.DiscoPrivate = k.Bytes()
		if err := saveState(dir, &s); err != nil {
			return nil, false, fmt.Errorf("save node state with a new disco key: %w", err)
		}
	}
	return &s, true, nil
}

func saveState(dir string, s *nodeState) error {
	b, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return err
	}
	return atomicfile.Write(filepath.Join(dir, stateFile), b, 0o600)
}

// signedMap is a network map as the node holds and caches it: the last
// whole signed map and the signed deltas of its netmap stream applied to it
// since, oldest first. Every part verifies with the coordinator key; the
// coordinator sends a whole map again once the deltas outgrow it.
type signedMap struct {
	wire.Signed                // the whole map
	Deltas      []*wire.Signed `json:"deltas,omitempty"`
}

// open verifies the map and every delta with key and returns the map they
// make.
func (s *signedMap) open(key ed25519.PublicKey) (*wire.Map, error) {
	m, err := s.Verify(key)
	if err != nil {
		return nil, err
	}
	for i, sd := range s.Deltas {
		d, err := sd.VerifyDelta(key)
		if err != nil {
			return nil, fmt.Errorf("delta %d: %w", i+1, err)
		}
		if m, err = m.Apply(d); err != nil {
			return nil, fmt.Errorf("delta %d: %w", i+1, err)
		}
	}
	return m, nil
}

// withDelta returns s with one more delta (s itself is not changed).
func (s *signedMap) withDelta(d *wire.Signed) *signedMap {
	return &signedMap{Signed: s.Signed, Deltas: append(s.Deltas[:len(s.Deltas):len(s.Deltas)], d)}
}

// loadCachedMap returns the cached map only if it, and every delta cached
// with it, verifies with key.
func loadCachedMap(dir string, key ed25519.PublicKey) (*signedMap, *wire.Map, error) {
	b, err := os.ReadFile(filepath.Join(dir, mapFile))
	if err != nil {
		return nil, nil, err
	}
	var s signedMap
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, nil, fmt.Errorf("cached network map is damaged: %w", err)
	}
	m, err := s.open(key)
	if err != nil {
		return nil, nil, fmt.Errorf("cached network map refused: %w", err)
	}
	return &s, m, nil
}

func saveCachedMap(dir string, s *signedMap) error {
	b, err := json.Marshal(s)
	if err != nil {
		return err
	}
	return atomicfile.Write(filepath.Join(dir, mapFile), b, 0o600)
}

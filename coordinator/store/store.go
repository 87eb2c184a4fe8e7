// Package store is the coordinator's durable state: the Store interface
// (one transaction per mutation; a refused or failed request keeps
// nothing) and its default implementation, one bbolt file (OpenBolt). It
// knows the records it keeps, not the rules that write them: those are the
// coordinator's.
package store

import (
	"errors"
	"net/netip"
	"time"

	"github.com/agentnet/agentnet/wire"
)

// Store is the coordinator's durable state. Every mutation runs inside one
// Update call: if fn returns an error nothing it did is kept, so a refused or
// failed request never leaves half a node, a dangling index or a consumed
// token behind. The bbolt implementation is OpenBolt; a distributed engine
// (etcd) can implement the same interface later.
//
// Implementations must serialise Update calls (or detect conflicts and retry
// fn); View may run concurrently with them.
type Store interface {
	View(fn func(Tx) error) error
	Update(fn func(Tx) error) error
	Close() error
}

// Tx is one transaction of a Store. A Tx must not be used after the View or
// Update call that created it returns.
type Tx interface {
	// Node returns the node enrolled under did.
	Node(did string) (wire.Node, bool, error)
	// Nodes returns every enrolled node, in no particular order.
	Nodes() ([]wire.Node, error)
	// PutNode creates or replaces a node keyed by its DID and keeps the
	// name and address indexes in step (old entries of a renamed or
	// renumbered node are removed). It binds the node's WireGuard key to
	// its DID for good, and fails with ErrKeyInUse (writing nothing) if
	// another identity holds or ever held that key (see WGKeyOwner).
	PutNode(n wire.Node) error
	// DeleteNode removes a node and its index entries; a missing node is
	// not an error.
	DeleteNode(did string) error
	// NameOwner returns the DID holding name.
	NameOwner(name string) (string, bool, error)
	// AddrOwner returns the DID holding an overlay address (IPv4 or IPv6).
	AddrOwner(a netip.Addr) (string, bool, error)
	// WGKeyOwner returns the DID a WireGuard key is bound to: the identity
	// that holds it or ever held it. Bindings are made by PutNode and
	// PutRetiredKey and never removed, so one key names one node, ever.
	// Keys are their raw 32 bytes, never a text spelling. Checking it and
	// writing the node in one Update is what keeps keys unique: an
	// implementation that retries fn on conflict must count this index in
	// the conflict set.
	WGKeyOwner(key [32]byte) (string, bool, error)

	// Token returns a join-token record by id.
	Token(id string) (TokenRecord, bool, error)
	// PutToken creates or replaces a token record.
	PutToken(t TokenRecord) error
	// Tokens returns every token record, in no particular order.
	Tokens() ([]TokenRecord, error)

	// Revocation returns the record of a revoked or expired identity.
	Revocation(did string) (wire.Revocation, bool, error)
	// PutRevocation stores the record of a revoked or expired identity.
	PutRevocation(r wire.Revocation) error
	// Revocations returns every revocation record, in no particular order.
	Revocations() ([]wire.Revocation, error)
	// RetiredKey returns what is known about a WireGuard key (base64) that
	// is no longer in use: rotated away, or its identity revoked/expired.
	RetiredKey(wgKey string) (RetiredKey, bool, error)
	// PutRetiredKey creates or replaces a retired-key record; it binds the
	// key like PutNode (ErrKeyInUse if bound to another identity).
	PutRetiredKey(k RetiredKey) error
	// RetiredKeysOf returns the retired keys of one identity.
	RetiredKeysOf(did string) ([]RetiredKey, error)

	// Meta returns the value stored under a meta key (nil if unset).
	Meta(key string) ([]byte, error)
	// PutMeta stores a meta value.
	PutMeta(key string, v []byte) error
	// BumpSerial increments and returns the map serial. Every change that
	// alters any node's map bumps it once.
	BumpSerial() (uint64, error)
	// Serial returns the current map serial.
	Serial() (uint64, error)

	// Policy returns stored policy version v, or the latest if v is 0; ok
	// is false if there is none.
	Policy(v uint64) (rec wire.PolicyRecord, ok bool, err error)
	// AddPolicy stores rec as the next policy version (versions only
	// grow) and returns it with Version set.
	AddPolicy(rec wire.PolicyRecord) (wire.PolicyRecord, error)
}

// TokenRecord is what the store keeps about a join token. The secret itself
// is never stored, only wire.HashSecret of it.
type TokenRecord struct {
	ID         string    `json:"id"`
	SecretHash string    `json:"secret_hash"`
	Tags       []string  `json:"tags,omitempty"`
	Reusable   bool      `json:"reusable"`
	Created    time.Time `json:"created"`
	Expires    time.Time `json:"expires"`
	Used       bool      `json:"used"`
	Uses       int       `json:"uses"`
	LastUsedBy string    `json:"last_used_by,omitempty"` // DID
	Revoked    bool      `json:"revoked,omitempty"`      // set by an admin; enrollment refuses it
	// NodeTTL, when > 0, is the identity lifetime of nodes enrolled with
	// the token (wire.Node.Expires = enrollment + NodeTTL).
	NodeTTL time.Duration `json:"node_ttl,omitempty"`
}

// RetiredKey is a WireGuard key the coordinator will never accept again,
// in an enrollment or an update, from any identity.
type RetiredKey struct {
	Key   string    `json:"key"`   // base64 WireGuard public key
	DID   string    `json:"did"`   // the identity that used it
	Name  string    `json:"name"`  // its name then
	State string    `json:"state"` // KeyStateRetired (rotated away), wire.StateRevoked or wire.StateExpired
	At    time.Time `json:"at"`
}

// KeyStateRetired is the RetiredKey.State of a key rotated away by its own
// node.
const KeyStateRetired = "retired"

// ErrClosed is returned by a Store used after Close.
var ErrClosed = errors.New("store: closed")

// ErrKeyInUse is returned (wrapped) by PutNode and PutRetiredKey for a
// WireGuard key bound to another identity (Tx.WGKeyOwner).
var ErrKeyInUse = errors.New("store: WireGuard key bound to another node identity")

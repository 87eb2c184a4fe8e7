package relay

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha1" //nolint:gosec // TURN REST credentials are HMAC-SHA1 by specification
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/agentnet/agentnet/internal/atomicfile"
	"github.com/agentnet/agentnet/wire"
)

// Files in Config.DataDir.
const (
	fileSecret = "relay.secret" // base64 of the shared secret, 0600
	fileCred   = "relay.cred"   // Cred JSON for the coordinator, 0600
	fileTLSKey = "tls.key"      // ECDSA P-256, PKCS#8 PEM
	fileTLSCrt = "tls.crt"      // self-signed, PEM
)

// secretLen is the size of a generated secret; MinSecretLen the smallest
// one accepted from a file.
const (
	secretLen    = 32
	MinSecretLen = 16
)

// maxUserLen bounds the node-name part of a TURN REST username.
const maxUserLen = 64

// Cred is what a coordinator needs to hand out credentials for a relay and
// to tell nodes where it is: the content of DataDir/relay.cred. It holds the
// relay's shared secret, so the file is 0600 and must be moved only over a
// secure channel.
type Cred struct {
	Name    string           `json:"name"`
	Addrs   []wire.RelayAddr `json:"addrs"`
	STUNAlt netip.AddrPort   `json:"stun_alt,omitzero"`
	TLSPin  string           `json:"tls_pin,omitempty"`
	Secret  []byte           `json:"secret"` // base64 in JSON
}

// Check reports what is wrong with c, if anything.
func (c Cred) Check() error {
	if c.Name == "" {
		return errors.New("no name")
	}
	if len(c.Addrs) == 0 {
		return errors.New("no addrs")
	}
	for i, a := range c.Addrs {
		switch a.Transport {
		case wire.TransportUDP, wire.TransportTCP:
		case wire.TransportTLS:
			if !strings.HasPrefix(c.TLSPin, wire.PinPrefix) {
				return fmt.Errorf("addr %d is tls but tls_pin %q is not a %s pin", i, c.TLSPin, wire.PinPrefix)
			}
		default:
			return fmt.Errorf("addr %d has transport %q; want udp, tcp or tls", i, a.Transport)
		}
		if !a.Addr.IsValid() || a.Addr.Port() == 0 || a.Addr.Addr().IsUnspecified() {
			return fmt.Errorf("addr %d (%v) is not a usable address:port", i, a.Addr)
		}
	}
	if len(c.Secret) < MinSecretLen {
		return fmt.Errorf("secret is %d bytes, want at least %d", len(c.Secret), MinSecretLen)
	}
	return nil
}

// LoadCred reads and checks a relay.cred file written by a relay.
func LoadCred(path string) (Cred, error) {
	var c Cred
	b, err := os.ReadFile(path)
	if err != nil {
		return c, fmt.Errorf("relay: read credential: %w (it is DATA/relay.cred of 'agentnet relay --data DATA')", err)
	}
	dec := json.NewDecoder(strings.NewReader(string(b)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&c); err != nil {
		return c, fmt.Errorf("relay: %s is not a relay credential: %w", path, err)
	}
	if err := c.Check(); err != nil {
		return c, fmt.Errorf("relay: %s: %w; copy it again from the relay's data directory", path, err)
	}
	return c, nil
}

// Relay returns the relay as it goes into a node's map, with a credential
// for user valid for ttl from now (see Credentials).
func (c Cred) Relay(user string, ttl time.Duration, now time.Time) wire.Relay {
	u, p, exp := Credentials(c.Secret, user, ttl, now)
	return wire.Relay{
		Name: c.Name, Addrs: c.Addrs, STUNAlt: c.STUNAlt, TLSPin: c.TLSPin,
		Username: u, Password: p, Expires: exp,
	}
}

// Credentials makes a TURN REST credential (draft-uberti-behave-turn-rest-00
// §2.2) for user: username "<unix expiry>:<user>", password base64 of
// HMAC-SHA1(secret, username). It expires ttl after now.
func Credentials(secret []byte, user string, ttl time.Duration, now time.Time) (username, password string, expires time.Time) {
	expires = now.Add(ttl).Truncate(time.Second)
	username = strconv.FormatInt(expires.Unix(), 10) + ":" + user
	return username, restPassword(secret, username), expires
}

func restPassword(secret []byte, username string) string {
	mac := hmac.New(sha1.New, secret)
	mac.Write([]byte(username))
	return base64.StdEncoding.EncodeToString(mac.Sum(nil))
}

// parseUsername splits a TURN REST username into its expiry and user.
func parseUsername(username string) (time.Time, string, error) {
	ts, user, ok := strings.Cut(username, ":")
	if !ok || user == "" || len(user) > maxUserLen {
		return time.Time{}, "", errors.New("username is not <expiry>:<node>")
	}
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil || sec <= 0 {
		return time.Time{}, "", errors.New("username expiry is not a unix time")
	}
	return time.Unix(sec, 0), user, nil
}

// loadOrCreateSecret reads the base64 secret in path or creates 32 random
// bytes there (0600) on first start.
func loadOrCreateSecret(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		secret := make([]byte, secretLen)
		_, _ = rand.Read(secret)
		if err := atomicfile.Write(path, []byte(base64.StdEncoding.EncodeToString(secret)+"\n"), 0o600); err != nil {
			return nil, fmt.Errorf("relay: write secret: %w", err)
		}
		return secret, nil
	}
	if err != nil {
		return nil, fmt.Errorf("relay: read secret: %w", err)
	}
	secret, err := base64.StdEncoding.DecodeString(strings.TrimSpace(string(b)))
	if err != nil || len(secret) < MinSecretLen {
		return nil, fmt.Errorf("relay: secret file %s must hold base64 of at least %d bytes (e.g. 'head -c32 /dev/urandom | base64'); delete it to have one generated", path, MinSecretLen)
	}
	return secret, nil
}

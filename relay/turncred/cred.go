// Package turncred holds a relay's TURN credentials as the control plane
// sees them: the relay.cred file a relay writes for its coordinator (Cred,
// LoadCred) and the TURN REST scheme (draft-uberti-behave-turn-rest-00
// §2.2) by which a coordinator mints short-lived per-node credentials from
// the relay's shared secret (Credentials, Cred.Relay) and the relay checks
// them (ParseUsername, Password) before the long-term credential mechanism
// of RFC 8489 §9.2 verifies the message integrity.
//
// It imports no TURN or DTLS code, so the coordinator links it without
// pion's server (the rule is a test: relay/deps_test.go).
package turncred

import (
	"crypto/hmac"
	"crypto/sha1" //nolint:gosec // TURN REST credentials are HMAC-SHA1 by specification
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/agentnet/agentnet/wire"
)

// MinSecretLen is the smallest shared secret a credential may carry.
const MinSecretLen = 16

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
		return c, fmt.Errorf("turncred: read credential: %w (it is DATA/relay.cred of 'agentnet relay --data DATA')", err)
	}
	dec := json.NewDecoder(strings.NewReader(string(b)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&c); err != nil {
		return c, fmt.Errorf("turncred: %s is not a relay credential: %w", path, err)
	}
	if err := c.Check(); err != nil {
		return c, fmt.Errorf("turncred: %s: %w; copy it again from the relay's data directory", path, err)
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
	return username, Password(secret, username), expires
}

// Password is the TURN REST password of username: base64 of
// HMAC-SHA1(secret, username). A relay verifies a credential by deriving
// it again from the username and its secret (after ParseUsername) and
// feeding it to the long-term credential check (RFC 8489 §9.2.2).
func Password(secret []byte, username string) string {
	mac := hmac.New(sha1.New, secret)
	mac.Write([]byte(username))
	return base64.StdEncoding.EncodeToString(mac.Sum(nil))
}

// ParseUsername splits a TURN REST username into its expiry and user
// (the node name). It does not judge the expiry; the relay does, with its
// clock.
func ParseUsername(username string) (time.Time, string, error) {
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

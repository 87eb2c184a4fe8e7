package wire

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/url"
	"strings"
)

// TokenPrefix starts every join token, so a pasted token is recognisable and
// a token of another format fails with a clear error.
const TokenPrefix = "agentnet-join-v1."

// MaxTokenLen bounds a token string; anything longer is refused unparsed.
const MaxTokenLen = 4096

// Token is what a join token carries: everything a node needs to reach and
// trust the coordinator, and the secret it proves itself with. The
// coordinator stores only HashSecret(Secret).
type Token struct {
	URL    string `json:"url"`    // coordinator base URL, https://host:port
	Pin    string `json:"pin"`    // coordinator TLS certificate pin (see CertPin)
	ID     string `json:"id"`     // token id, for listing and revoking
	Secret string `json:"secret"` // random; proves possession
}

// NewSecret returns 32 random bytes, base64url encoded.
func NewSecret() string {
	var b [32]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails (Go 1.24+)
	return base64.RawURLEncoding.EncodeToString(b[:])
}

// NewID returns a short random identifier.
func NewID() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// HashSecret is what the coordinator stores in place of a token secret.
func HashSecret(secret string) string {
	sum := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(sum[:])
}

// String encodes the token as TokenPrefix + base64url(JSON).
func (t Token) String() string {
	b, _ := json.Marshal(t)
	return TokenPrefix + base64.RawURLEncoding.EncodeToString(b)
}

// ParseToken decodes and validates a join token string.
func ParseToken(s string) (Token, error) {
	var t Token
	s = strings.TrimSpace(s)
	if s == "" {
		return t, fmt.Errorf("%w: empty; create one with 'agentnet token create'", ErrBadToken)
	}
	if len(s) > MaxTokenLen {
		return t, fmt.Errorf("%w: %d bytes, longer than %d", ErrBadToken, len(s), MaxTokenLen)
	}
	if !strings.HasPrefix(s, TokenPrefix) {
		return t, fmt.Errorf("%w: does not start with %q (was it cut when pasting?)", ErrBadToken, TokenPrefix)
	}
	raw, err := base64.RawURLEncoding.DecodeString(s[len(TokenPrefix):])
	if err != nil {
		return t, fmt.Errorf("%w: not base64url: %v", ErrBadToken, err)
	}
	dec := json.NewDecoder(strings.NewReader(string(raw)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&t); err != nil {
		return t, fmt.Errorf("%w: bad contents: %v", ErrBadToken, err)
	}
	u, err := url.Parse(t.URL)
	switch {
	case err != nil || u.Scheme != "https" || u.Host == "" || !strings.HasPrefix(t.URL, "https://"):
		// url.Parse lowercases the scheme; the token's own text must be
		// canonical too (found by FuzzParseToken: "httpS://…").
		return t, fmt.Errorf("%w: coordinator URL %q is not https://host:port", ErrBadToken, t.URL)
	case !strings.HasPrefix(t.Pin, PinPrefix):
		return t, fmt.Errorf("%w: certificate pin missing", ErrBadToken)
	case t.ID == "" || len(t.Secret) < 16:
		return t, fmt.Errorf("%w: id or secret missing", ErrBadToken)
	}
	return t, nil
}

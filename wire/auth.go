package wire

import (
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"net/http"
	"strconv"
	"time"
)

// Headers of a node-signed control request. Every request after (and
// including) enrollment is signed by the node's identity key; the join token
// is only ever used once, inside the enrollment body.
const (
	HeaderNode      = "Agentnet-Node"      // did:key of the signer
	HeaderTime      = "Agentnet-Time"      // unix seconds
	HeaderSignature = "Agentnet-Signature" // base64url Ed25519 signature
)

// MaxClockSkew is how far a signed request's time may be from the
// coordinator's clock.
const MaxClockSkew = 5 * time.Minute

const requestSigContext = "agentnet-request-v1\n"

func requestMessage(method, path, ts string, body []byte) []byte {
	sum := sha256.Sum256(body)
	return []byte(requestSigContext + method + "\n" + path + "\n" + ts + "\n" + hex.EncodeToString(sum[:]))
}

// SignRequest adds the node headers that authenticate r. body must be the
// exact request body (nil for none).
func SignRequest(r *http.Request, key ed25519.PrivateKey, body []byte, now time.Time) {
	ts := strconv.FormatInt(now.Unix(), 10)
	r.Header.Set(HeaderNode, DID(key.Public().(ed25519.PublicKey)))
	r.Header.Set(HeaderTime, ts)
	r.Header.Set(HeaderSignature, base64.RawURLEncoding.EncodeToString(ed25519.Sign(key, requestMessage(r.Method, r.URL.Path, ts, body))))
}

// VerifyRequest checks the node headers of r against body and returns the
// signer's DID and key.
func VerifyRequest(r *http.Request, body []byte, now time.Time) (string, ed25519.PublicKey, error) {
	did := r.Header.Get(HeaderNode)
	pub, err := ParseDID(did)
	if err != nil {
		return "", nil, err
	}
	ts := r.Header.Get(HeaderTime)
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return "", nil, fmt.Errorf("%w: bad %s header", ErrBadSignature, HeaderTime)
	}
	if d := now.Sub(time.Unix(sec, 0)); d > MaxClockSkew || d < -MaxClockSkew {
		return "", nil, fmt.Errorf("%w: request time off by %v (more than %v); check the node's clock", ErrBadSignature, d.Round(time.Second), MaxClockSkew)
	}
	// Strict: one signature has one header value (non-canonical trailing
	// bits are refused; found by FuzzVerifyRequest).
	sig, err := base64.RawURLEncoding.Strict().DecodeString(r.Header.Get(HeaderSignature))
	if err != nil || !ed25519.Verify(pub, requestMessage(r.Method, r.URL.Path, ts, body), sig) {
		return "", nil, fmt.Errorf("%w: request signature does not verify for %s", ErrBadSignature, did)
	}
	return did, pub, nil
}

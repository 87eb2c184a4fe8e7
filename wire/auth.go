package wire

import (
	"crypto/ed25519"
	"crypto/rand"
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
	HeaderNonce     = "Agentnet-Nonce"     // base64url (no padding) of NonceSize random bytes, one per request
	HeaderSignature = "Agentnet-Signature" // base64url Ed25519 signature
)

// MaxClockSkew is how far a signed request's time may be from the
// coordinator's clock.
const MaxClockSkew = 5 * time.Minute

// NonceSize is the length of a request nonce. The coordinator refuses a
// second request with the same (signer, nonce) while its time is within
// MaxClockSkew, so a signed request is accepted once (issue 17, item 3).
const NonceSize = 16

// requestSigContext names the signed message's layout. v2 (control
// protocol 2) added the raw query and the nonce: v1 signed neither, so a
// captured request could be replayed, and a stream request replayed with
// another query.
const requestSigContext = "agentnet-request-v2\n"

// requestMessage is what a node signs: method, path, raw query (as sent,
// not re-encoded), time, nonce and the SHA-256 of the body, each on its
// own line. No field can contain a newline that would shift the others:
// the time is digits, the nonce base64url, and net/http refuses a request
// line with a newline in method or URL.
func requestMessage(method, path, rawQuery, ts, nonce string, body []byte) []byte {
	sum := sha256.Sum256(body)
	return []byte(requestSigContext + method + "\n" + path + "\n" + rawQuery + "\n" + ts + "\n" + nonce + "\n" + hex.EncodeToString(sum[:]))
}

// SignRequest adds the node headers that authenticate r, with a fresh
// random nonce. body must be the exact request body (nil for none); r's
// method, path and query must not change after signing.
func SignRequest(r *http.Request, key ed25519.PrivateKey, body []byte, now time.Time) {
	var nonce [NonceSize]byte
	rand.Read(nonce[:]) // never fails (crypto/rand)
	signRequest(r, key, body, now, nonce)
}

func signRequest(r *http.Request, key ed25519.PrivateKey, body []byte, now time.Time, nonce [NonceSize]byte) {
	ts := strconv.FormatInt(now.Unix(), 10)
	n := base64.RawURLEncoding.EncodeToString(nonce[:])
	r.Header.Set(HeaderNode, DID(key.Public().(ed25519.PublicKey)))
	r.Header.Set(HeaderTime, ts)
	r.Header.Set(HeaderNonce, n)
	r.Header.Set(HeaderSignature, base64.RawURLEncoding.EncodeToString(ed25519.Sign(key, requestMessage(r.Method, r.URL.Path, r.URL.RawQuery, ts, n, body))))
}

// RequestAuth is what VerifyRequest proves about a request.
type RequestAuth struct {
	DID   string            // the signer
	Key   ed25519.PublicKey // its identity key
	Time  time.Time         // the signer's clock (whole seconds), within MaxClockSkew of the verifier's
	Nonce [NonceSize]byte   // unique per request; the verifier must refuse a second use
}

// VerifyRequest checks the node headers of r against body: the signature
// covers method, path, raw query, time, nonce and body. It does not know
// which nonces were used before: the caller keeps that (the coordinator's
// replay cache, keyed by DID and Nonce, for as long as Time is within
// MaxClockSkew).
func VerifyRequest(r *http.Request, body []byte, now time.Time) (RequestAuth, error) {
	did := r.Header.Get(HeaderNode)
	pub, err := ParseDID(did)
	if err != nil {
		return RequestAuth{}, err
	}
	ts := r.Header.Get(HeaderTime)
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return RequestAuth{}, fmt.Errorf("%w: bad %s header", ErrBadSignature, HeaderTime)
	}
	at := time.Unix(sec, 0)
	if d := now.Sub(at); d > MaxClockSkew || d < -MaxClockSkew {
		return RequestAuth{}, fmt.Errorf("%w: request time off by %v (more than %v); check the node's clock", ErrBadSignature, d.Round(time.Second), MaxClockSkew)
	}
	n := r.Header.Get(HeaderNonce)
	if n == "" {
		return RequestAuth{}, fmt.Errorf("%w: no %s header: the client speaks an older control protocol than %d; upgrade it", ErrBadSignature, HeaderNonce, ProtocolVersion)
	}
	// Strict and of exact length: one nonce has one spelling, so the
	// replay cache cannot be dodged by re-encoding it.
	var res RequestAuth
	if raw, err := base64.RawURLEncoding.Strict().DecodeString(n); err != nil || len(raw) != NonceSize {
		return RequestAuth{}, fmt.Errorf("%w: %s header is not %d bytes of base64url", ErrBadSignature, HeaderNonce, NonceSize)
	} else {
		res.Nonce = [NonceSize]byte(raw)
	}
	// Strict: one signature has one header value (non-canonical trailing
	// bits are refused; found by FuzzVerifyRequest).
	sig, err := base64.RawURLEncoding.Strict().DecodeString(r.Header.Get(HeaderSignature))
	if err != nil || !ed25519.Verify(pub, requestMessage(r.Method, r.URL.Path, r.URL.RawQuery, ts, n, body), sig) {
		return RequestAuth{}, fmt.Errorf("%w: request signature does not verify for %s", ErrBadSignature, did)
	}
	res.DID, res.Key, res.Time = did, pub, at
	return res, nil
}

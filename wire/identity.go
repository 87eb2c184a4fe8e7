package wire

import (
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"math/big"
	"strings"
)

// did:key for Ed25519 (W3C did:key method, multicodec 0xed 0x01, base58btc
// multibase prefix 'z').
const didKeyPrefix = "did:key:z"

var ed25519Multicodec = []byte{0xed, 0x01}

// DID returns the did:key naming an Ed25519 identity key.
func DID(pub ed25519.PublicKey) string {
	return didKeyPrefix + base58Encode(append(append([]byte{}, ed25519Multicodec...), pub...))
}

// ParseDID returns the Ed25519 key named by a did:key string. It accepts
// only the canonical spelling (the one DID returns), so a key compared or
// stored as its DID has exactly one name.
func ParseDID(did string) (ed25519.PublicKey, error) {
	if len(did) > 128 || !strings.HasPrefix(did, didKeyPrefix) {
		return nil, fmt.Errorf("%w: %.40q does not start with %q", ErrBadDID, did, didKeyPrefix)
	}
	raw, err := base58Decode(did[len(didKeyPrefix):])
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadDID, err)
	}
	if len(raw) != 2+ed25519.PublicKeySize || raw[0] != ed25519Multicodec[0] || raw[1] != ed25519Multicodec[1] {
		return nil, fmt.Errorf("%w: not an Ed25519 key", ErrBadDID)
	}
	pub := ed25519.PublicKey(raw[2:])
	// base58 as decoded here has one spelling per key, but the check is
	// what makes that a property rather than an accident of the decoder.
	if DID(pub) != did {
		return nil, fmt.Errorf("%w: %.40q is not the canonical spelling of its key", ErrBadDID, did)
	}
	return pub, nil
}

// Fingerprint is a short, log-safe name for a public key.
func Fingerprint(key []byte) string {
	sum := sha256.Sum256(key)
	return hex.EncodeToString(sum[:4])
}

// WGKeyString encodes a WireGuard (X25519) public key as WireGuard tools do:
// standard base64 of the 32 bytes.
func WGKeyString(k [32]byte) string { return base64.StdEncoding.EncodeToString(k[:]) }

// ParseWGKey decodes a base64 WireGuard key. It accepts only the canonical
// encoding, the one WGKeyString returns: 44 characters of standard base64
// with its padding, whose unused low bits are zero, and no line breaks.
// Lenient base64 gives each key several spellings (the last character's two
// unused bits, ignored CR and LF), and keys are stored and compared as text:
// a revoked key re-encoded would be a new key (issue 17, item 2).
func ParseWGKey(s string) ([32]byte, error) {
	var k [32]byte
	if len(s) != base64.StdEncoding.EncodedLen(len(k)) {
		return k, fmt.Errorf("%w: %.12q is %d characters, want %d", ErrBadWGKey, s, len(s), base64.StdEncoding.EncodedLen(len(k)))
	}
	var buf [33]byte // DecodedLen(44): room for the padding's phantom byte
	n, err := base64.StdEncoding.Strict().Decode(buf[:], []byte(s))
	if err != nil || n != len(k) {
		return k, fmt.Errorf("%w: %.12q is not 32 bytes of canonical base64", ErrBadWGKey, s)
	}
	copy(k[:], buf[:n])
	if WGKeyString(k) != s { // Strict still skips CR and LF
		return [32]byte{}, fmt.Errorf("%w: %.12q is not the canonical encoding of its key", ErrBadWGKey, s)
	}
	return k, nil
}

const base58Alphabet = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"

// base58Encode is the Bitcoin base58 alphabet used by multibase 'z'. Written
// by hand (about 30 lines) rather than adding a module for it; inputs are 34
// bytes, so math/big is fast enough.
func base58Encode(b []byte) string {
	zeros := 0
	for zeros < len(b) && b[zeros] == 0 {
		zeros++
	}
	n := new(big.Int).SetBytes(b)
	base, mod := big.NewInt(58), new(big.Int)
	var out []byte
	for n.Sign() > 0 {
		n.DivMod(n, base, mod)
		out = append(out, base58Alphabet[mod.Int64()])
	}
	for range zeros {
		out = append(out, '1')
	}
	for i, j := 0, len(out)-1; i < j; i, j = i+1, j-1 {
		out[i], out[j] = out[j], out[i]
	}
	return string(out)
}

func base58Decode(s string) ([]byte, error) {
	zeros := 0
	for zeros < len(s) && s[zeros] == '1' {
		zeros++
	}
	n := new(big.Int)
	base := big.NewInt(58)
	for _, c := range []byte(s) {
		i := strings.IndexByte(base58Alphabet, c)
		if i < 0 {
			return nil, fmt.Errorf("invalid base58 character %q", c)
		}
		n.Mul(n, base).Add(n, big.NewInt(int64(i)))
	}
	return append(make([]byte, zeros), n.Bytes()...), nil
}

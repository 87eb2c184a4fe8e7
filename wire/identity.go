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

// ParseDID returns the Ed25519 key named by a did:key string.
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
	return ed25519.PublicKey(raw[2:]), nil
}

// Fingerprint is a short, log-safe name for a public key.
func Fingerprint(key []byte) string {
	sum := sha256.Sum256(key)
	return hex.EncodeToString(sum[:4])
}

// WGKeyString encodes a WireGuard (X25519) public key as WireGuard tools do:
// standard base64 of the 32 bytes.
func WGKeyString(k [32]byte) string { return base64.StdEncoding.EncodeToString(k[:]) }

// ParseWGKey decodes a base64 WireGuard key.
func ParseWGKey(s string) ([32]byte, error) {
	var k [32]byte
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil || len(b) != 32 {
		return k, fmt.Errorf("netmap: WireGuard key %.12q is not 32 bytes of base64", s)
	}
	copy(k[:], b)
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

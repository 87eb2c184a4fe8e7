package wire

import (
	"crypto/ed25519"
	"encoding/base64"
	"errors"
	"strings"
	"testing"
)

const b64Alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"

// setUnusedBits returns the key's encoding with the two unused low bits of
// its last base64 character (before the '=') set to bits: the same 32 bytes
// to a lenient decoder, a different string to anything comparing text.
func setUnusedBits(canon string, bits int) string {
	i := len(canon) - 2
	v := strings.IndexByte(b64Alphabet, canon[i])
	return canon[:i] + string(b64Alphabet[v&^3|bits]) + canon[i+1:]
}

func TestParseWGKey(t *testing.T) {
	var k [32]byte
	for i := range k {
		k[i] = byte(7*i + 1)
	}
	canon := WGKeyString(k)
	if canon[len(canon)-1] != '=' || len(canon) != 44 {
		t.Fatalf("WGKeyString = %q, want 44 characters ending in '='", canon)
	}
	// The lenient decoder the parser used before: the first three forms
	// below decoded to k under it, which is how a retired key got back in.
	for bits := 1; bits <= 3; bits++ {
		b, err := base64.StdEncoding.DecodeString(setUnusedBits(canon, bits))
		if err != nil || [32]byte(b) != k {
			t.Fatalf("fixture: lenient base64 does not decode the bit-flipped form to the key (%v)", err)
		}
	}
	tests := []struct {
		name string
		in   string
		ok   bool
	}{
		{"canonical", canon, true},
		{"all zero key", WGKeyString([32]byte{}), true},
		{"unused bits 01", setUnusedBits(canon, 1), false},
		{"unused bits 10", setUnusedBits(canon, 2), false},
		{"unused bits 11", setUnusedBits(canon, 3), false},
		{"no padding", strings.TrimSuffix(canon, "="), false},
		{"extra padding", canon + "=", false},
		{"line feed inside", canon[:20] + "\n" + canon[20:], false},
		{"carriage return inside", canon[:20] + "\r" + canon[20:43], false},
		{"trailing line feed", canon + "\n", false},
		{"url alphabet", strings.NewReplacer("+", "-", "/", "_").Replace(WGKeyString([32]byte{0xfb, 0xff, 0xbf})), false},
		{"31 bytes", base64.StdEncoding.EncodeToString(k[:31]), false},
		{"33 bytes", base64.StdEncoding.EncodeToString(append(k[:], 0)), false},
		{"empty", "", false},
		{"spaces", strings.Repeat(" ", 44), false},
		{"44 characters, bad padding", canon[:42] + "==", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseWGKey(tt.in)
			if !tt.ok {
				if err == nil {
					t.Fatalf("ParseWGKey(%q) = %x, want an error", tt.in, got)
				}
				if !errors.Is(err, ErrBadWGKey) {
					t.Fatalf("error %v is not ErrBadWGKey", err)
				}
				if got != ([32]byte{}) {
					t.Fatalf("returned a key with the error: %x", got)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseWGKey(%q): %v", tt.in, err)
			}
			if WGKeyString(got) != tt.in {
				t.Fatalf("round trip %q → %q", tt.in, WGKeyString(got))
			}
		})
	}
}

func TestParseDIDCanonical(t *testing.T) {
	pub := ed25519.NewKeyFromSeed(make([]byte, ed25519.SeedSize)).Public().(ed25519.PublicKey)
	canon := DID(pub)
	body := strings.TrimPrefix(canon, didKeyPrefix)
	tests := []struct {
		name string
		in   string
		ok   bool
	}{
		{"canonical", canon, true},
		// base58 spells a leading zero byte as '1': the same big number
		// with a zero byte in front, which must not be the same key.
		{"leading 1", didKeyPrefix + "1" + body, false},
		{"upper-case method", "did:KEY:z" + body, false},
		{"other multibase", "did:key:Z" + body, false},
		{"trailing space", canon + " ", false},
		{"trailing newline", canon + "\n", false},
		{"char outside base58 (0)", canon[:len(canon)-1] + "0", false},
		{"char outside base58 (l)", canon[:len(canon)-1] + "l", false},
		{"truncated", canon[:len(canon)-1], false},
		{"one more digit", canon + "1", false},
		{"other multicodec (x25519)", didKeyPrefix + base58Encode(append([]byte{0xec, 0x01}, pub...)), false},
		{"non-minimal multicodec varint", didKeyPrefix + base58Encode(append([]byte{0xed, 0x81, 0x00}, pub...)), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseDID(tt.in)
			if !tt.ok {
				if err == nil {
					t.Fatalf("ParseDID(%q) = %x, want an error", tt.in, []byte(got))
				}
				if !errors.Is(err, ErrBadDID) {
					t.Fatalf("error %v is not ErrBadDID", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseDID(%q): %v", tt.in, err)
			}
			if !got.Equal(pub) {
				t.Fatalf("ParseDID returned %x, want %x", []byte(got), []byte(pub))
			}
		})
	}
}

package wire

import (
	"bytes"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"testing"
	"time"
)

// Fuzz targets for every parser in this package that reads untrusted
// input. The seeds below plus testdata/fuzz/<Name>/ run as ordinary tests
// under 'go test'; '.ci/fuzz' (and 'go test -fuzz') explores beyond them.

// fuzzKey is a fixed identity so seeds and invariants are reproducible.
func fuzzKey(b byte) ed25519.PrivateKey {
	return ed25519.NewKeyFromSeed(bytes.Repeat([]byte{b}, ed25519.SeedSize))
}

// FuzzParseToken: ParseToken never panics, refuses with ErrBadToken, and
// what it accepts is a well-formed token that survives a round trip.
func FuzzParseToken(f *testing.F) {
	good := Token{URL: "https://127.0.0.1:8443", Pin: PinPrefix + "AAAA", ID: "0123456789abcdef", Secret: "c2VjcmV0c2VjcmV0c2VjcmV0"}
	f.Add(good.String())
	f.Add(" " + good.String() + "\n")
	f.Add(TokenPrefix)
	f.Add(TokenPrefix + "e30")    // {}
	f.Add(TokenPrefix + "bnVsbA") // null
	f.Add(TokenPrefix + "!!!")
	f.Add(strings.Repeat("a", MaxTokenLen+1))
	f.Add(Token{URL: "https://[::1]:1/x?y#z", Pin: PinPrefix, ID: "i", Secret: strings.Repeat("s", 16)}.String())
	f.Fuzz(func(t *testing.T, s string) {
		tok, err := ParseToken(s)
		if err != nil {
			if !errors.Is(err, ErrBadToken) {
				t.Fatalf("ParseToken error %v is not ErrBadToken", err)
			}
			return
		}
		if !strings.HasPrefix(tok.URL, "https://") || !strings.HasPrefix(tok.Pin, PinPrefix) || tok.ID == "" || len(tok.Secret) < 16 {
			t.Fatalf("ParseToken accepted an incomplete token: %+v", tok)
		}
		again, err := ParseToken(tok.String())
		if err != nil || again != tok {
			t.Fatalf("round trip of accepted token %+v: %+v, %v", tok, again, err)
		}
	})
}

// FuzzParseDID: ParseDID never panics; it accepts only the canonical
// did:key of some Ed25519 key (parse → DID gives the same string back).
func FuzzParseDID(f *testing.F) {
	f.Add(DID(fuzzKey(1).Public().(ed25519.PublicKey)))
	f.Add(DID(make(ed25519.PublicKey, ed25519.PublicKeySize)))
	f.Add(didKeyPrefix)
	f.Add(didKeyPrefix + "1111111111111111111111111111111111111111111111")
	f.Add(didKeyPrefix + "0OIl")
	f.Add("did:key:z6Mk")
	f.Add("did:web:example")
	f.Add(didKeyPrefix + strings.Repeat("z", 200))
	f.Fuzz(func(t *testing.T, did string) {
		pub, err := ParseDID(did)
		if err != nil {
			if !errors.Is(err, ErrBadDID) {
				t.Fatalf("ParseDID error %v is not ErrBadDID", err)
			}
			return
		}
		if len(pub) != ed25519.PublicKeySize {
			t.Fatalf("ParseDID(%q) returned a %d-byte key", did, len(pub))
		}
		if back := DID(pub); back != did {
			t.Fatalf("ParseDID accepted a non-canonical did:key %q (canonical %q)", did, back)
		}
	})
}

// FuzzParseWGKey: ParseWGKey never panics, refuses with ErrBadWGKey, and
// accepts only the canonical encoding of some key (parse → WGKeyString
// gives the same string back).
func FuzzParseWGKey(f *testing.F) {
	canon := WGKeyString([32]byte{1, 2, 3, 31: 0xff})
	f.Add(canon)
	f.Add(canon[:42] + "B=") // unused bits set
	f.Add(canon[:20] + "\n" + canon[20:])
	f.Add(WGKeyString([32]byte{}))
	f.Add("")
	f.Add(strings.Repeat("=", 44))
	f.Fuzz(func(t *testing.T, s string) {
		k, err := ParseWGKey(s)
		if err != nil {
			if !errors.Is(err, ErrBadWGKey) {
				t.Fatalf("ParseWGKey error %v is not ErrBadWGKey", err)
			}
			return
		}
		if back := WGKeyString(k); back != s {
			t.Fatalf("ParseWGKey accepted a non-canonical key %q (canonical %q)", s, back)
		}
	})
}

// FuzzVerifySignedMap: Signed.Verify never panics and accepts nothing but
// the exact payload and signature the coordinator key produced.
func FuzzVerifySignedMap(f *testing.F) {
	key := fuzzKey(2)
	m := &Map{ProtocolVersion: ProtocolVersion, Serial: 7, Domain: DefaultDomain, DNSIP: DefaultDNSIP,
		Prefix4: DefaultPrefix4, Self: Node{Name: "alpha", IPv4: netip.MustParseAddr("100.96.0.2")}}
	good, err := Sign(key, m)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good.Payload, good.Sig)
	f.Add(good.Payload, []byte{})
	f.Add([]byte{}, good.Sig)
	f.Add([]byte("{}"), make([]byte, ed25519.SignatureSize))
	f.Add(append(bytes.Clone(good.Payload), ' '), good.Sig)
	f.Add([]byte(`{"serial":1e999}`), good.Sig[:32])
	pub := key.Public().(ed25519.PublicKey)
	f.Fuzz(func(t *testing.T, payload, sig []byte) {
		got, err := (&Signed{Payload: payload, Sig: sig}).Verify(pub)
		exact := bytes.Equal(payload, good.Payload) && bytes.Equal(sig, good.Sig)
		switch {
		case err == nil && !exact:
			t.Fatalf("Verify accepted a forged map: payload %q sig %x", payload, sig)
		case err == nil && got.Serial != m.Serial:
			t.Fatalf("Verify decoded serial %d, signed %d", got.Serial, m.Serial)
		case err != nil && exact:
			t.Fatalf("Verify refused the genuine map: %v", err)
		case err != nil && got != nil:
			t.Fatalf("Verify returned a map together with error %v", err)
		}
	})
}

// FuzzVerifyRequest: VerifyRequest never panics and accepts a request only
// when method, path, raw query, time, nonce, body and signer are exactly
// what the node key signed; it returns that nonce and time.
func FuzzVerifyRequest(f *testing.F) {
	key := fuzzKey(3)
	now := time.Unix(1_800_000_000, 0)
	body := []byte(`{"wg_key":"x"}`)
	nonce := [NonceSize]byte{1, 2, 3}
	req, _ := http.NewRequest(http.MethodGet, "https://127.0.0.1:1"+PathStream+"?a=1", nil)
	signRequest(req, key, body, now, nonce)
	did, ts, n, sig := req.Header.Get(HeaderNode), req.Header.Get(HeaderTime), req.Header.Get(HeaderNonce), req.Header.Get(HeaderSignature)
	f.Add(http.MethodGet, PathStream, "a=1", did, ts, n, sig, body)
	f.Add(http.MethodGet, PathStream, "a=2", did, ts, n, sig, body)
	f.Add(http.MethodGet, PathStream, "", did, ts, n, sig, body)
	f.Add(http.MethodGet, PathStream, "a=1&", did, ts, n, sig, body)
	f.Add(http.MethodGet, PathStream, "a%3D1", did, ts, n, sig, body)
	f.Add(http.MethodPost, PathStream, "a=1", did, ts, n, sig, body)
	f.Add(http.MethodGet, PathEnroll, "a=1", did, ts, n, sig, body)
	f.Add(http.MethodGet, PathStream, "a=1", did, ts+"0", n, sig, body)
	f.Add(http.MethodGet, PathStream, "a=1", did, "+"+ts, n, sig, body)
	f.Add(http.MethodGet, PathStream, "a=1", did, ts, n+"A", sig, body)
	f.Add(http.MethodGet, PathStream, "a=1", did, ts, "", sig, body)
	f.Add(http.MethodGet, PathStream, "a=1", did, ts, n, sig+"=", body)
	f.Add(http.MethodGet, PathStream, "a=1", "did:key:z", ts, n, sig, []byte{})
	f.Add(http.MethodGet, PathStream, "", did, "-9223372036854775808", "", "", []byte(nil))
	f.Fuzz(func(t *testing.T, method, path, query, gotDID, gotTS, gotNonce, gotSig string, gotBody []byte) {
		r := &http.Request{Method: method, URL: &url.URL{Path: path, RawQuery: query}, Header: http.Header{}}
		r.Header.Set(HeaderNode, gotDID)
		r.Header.Set(HeaderTime, gotTS)
		r.Header.Set(HeaderNonce, gotNonce)
		r.Header.Set(HeaderSignature, gotSig)
		auth, err := VerifyRequest(r, gotBody, now)
		if err != nil {
			if !errors.Is(err, ErrBadSignature) && !errors.Is(err, ErrBadDID) {
				t.Fatalf("VerifyRequest error %v is neither ErrBadSignature nor ErrBadDID", err)
			}
			return
		}
		exact := method == http.MethodGet && path == PathStream && query == "a=1" && gotDID == did && gotTS == ts &&
			gotNonce == n && gotSig == sig && bytes.Equal(gotBody, body)
		if !exact {
			t.Fatalf("VerifyRequest accepted a forged request: %s %q?%q node=%q time=%q nonce=%q sig=%q body=%q",
				method, path, query, gotDID, gotTS, gotNonce, gotSig, gotBody)
		}
		if auth.DID != did || !auth.Key.Equal(key.Public()) || auth.Nonce != nonce || !auth.Time.Equal(now) {
			t.Fatalf("VerifyRequest returned %+v, want signer %s, nonce %x, time %v", auth, did, nonce, now)
		}
	})
}

// FuzzDeltaApply: any delta JSON either fails to decode or Map.Apply
// refuses it with an error or gives a map whose peers are sorted by name,
// unique by DID, never Self, at the delta's serial; the base map is never
// changed.
func FuzzDeltaApply(f *testing.F) {
	base := &Map{Serial: 5, Self: Node{Name: "self", DID: "did:key:self"},
		Peers: []Node{{Name: "a", DID: "did:key:a"}, {Name: "c", DID: "did:key:c"}}}
	f.Add([]byte(`{"base":5,"serial":6,"upsert":[{"name":"b","did":"did:key:b"}],"remove":["did:key:a"]}`))
	f.Add([]byte(`{"base":5,"serial":5}`))
	f.Add([]byte(`{"base":5,"serial":9,"self":{"name":"self","did":"did:key:self"},"relays":[],"filter":{"inbound":[],"outbound":[]}}`))
	f.Add([]byte(`{"base":5,"serial":6,"upsert":[{"name":"a","did":"did:key:c"},{"name":"z","did":"did:key:c"}]}`))
	f.Add([]byte(`{"base":4,"serial":6}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		var d Delta
		if json.Unmarshal(b, &d) != nil {
			return
		}
		before, _ := json.Marshal(base)
		got, err := base.Apply(&d)
		if after, _ := json.Marshal(base); !bytes.Equal(before, after) {
			t.Fatalf("Apply changed the base map")
		}
		if err != nil {
			if got != nil {
				t.Fatalf("Apply returned a map with error %v", err)
			}
			return
		}
		if got.Serial != d.Serial || got.Self.DID != base.Self.DID {
			t.Fatalf("serial %d (delta %d), self %q", got.Serial, d.Serial, got.Self.DID)
		}
		seen := map[string]bool{}
		for i, p := range got.Peers {
			if i > 0 && got.Peers[i-1].Name > p.Name {
				t.Fatalf("peers not sorted: %q before %q", got.Peers[i-1].Name, p.Name)
			}
			if seen[p.DID] || p.DID == base.Self.DID {
				t.Fatalf("peer %q twice or self", p.DID)
			}
			seen[p.DID] = true
		}
	})
}

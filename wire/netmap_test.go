package wire

import (
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestDIDRoundTrip(t *testing.T) {
	for range 20 {
		pub, _, _ := ed25519.GenerateKey(rand.Reader)
		did := DID(pub)
		if !strings.HasPrefix(did, "did:key:z6Mk") {
			t.Fatalf("Ed25519 did:key should start with did:key:z6Mk, got %s", did)
		}
		got, err := ParseDID(did)
		if err != nil || !got.Equal(pub) {
			t.Fatalf("ParseDID(%s) = %x, %v; want %x", did, got, err, pub)
		}
	}
	for _, bad := range []string{"", "did:key:", "did:web:x", "did:key:z0OIl", "did:key:z6Mk"} {
		if _, err := ParseDID(bad); !errors.Is(err, ErrBadDID) {
			t.Errorf("ParseDID(%q) err = %v, want ErrBadDID", bad, err)
		}
	}
}

func TestTokenParse(t *testing.T) {
	good := Token{URL: "https://127.0.0.1:8443", Pin: PinPrefix + "abc", ID: "id1", Secret: NewSecret()}
	if got, err := ParseToken(" " + good.String() + "\n"); err != nil || got != good {
		t.Fatalf("round trip: %+v, %v", got, err)
	}
	s := good.String()
	cases := map[string]string{
		"empty":       "",
		"prefix":      "xyz" + s,
		"cut":         s[:len(s)-7],
		"not base64":  TokenPrefix + "!!!!",
		"not json":    TokenPrefix + "aGVsbG8",
		"http url":    Token{URL: "http://x:1", Pin: good.Pin, ID: "i", Secret: good.Secret}.String(),
		"no pin":      Token{URL: good.URL, ID: "i", Secret: good.Secret}.String(),
		"short":       Token{URL: good.URL, Pin: good.Pin, ID: "i", Secret: "x"}.String(),
		"oversized":   TokenPrefix + strings.Repeat("A", MaxTokenLen),
		"extra field": TokenPrefix + "eyJ1cmwiOiJodHRwczovL3g6MSIsInpaIjoxfQ",
	}
	for name, in := range cases {
		if _, err := ParseToken(in); !errors.Is(err, ErrBadToken) {
			t.Errorf("%s: err = %v, want ErrBadToken", name, err)
		}
	}
}

func TestSignedMap(t *testing.T) {
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	m := &Map{Serial: 7, Domain: DefaultDomain, Self: Node{Name: "a", IPv4: netip.MustParseAddr("100.96.0.1")}}
	s, err := Sign(priv, m)
	if err != nil {
		t.Fatal(err)
	}
	got, err := s.Verify(pub)
	if err != nil || got.Serial != 7 || got.Self.Name != "a" {
		t.Fatalf("verify: %+v %v", got, err)
	}
	tampered := *s
	tampered.Payload = []byte(strings.Replace(string(s.Payload), "100.96.0.1", "100.96.0.9", 1))
	if _, err := tampered.Verify(pub); !errors.Is(err, ErrBadSignature) {
		t.Fatalf("tampered map: err = %v, want ErrBadSignature", err)
	}
	other, _, _ := ed25519.GenerateKey(rand.Reader)
	if _, err := s.Verify(other); !errors.Is(err, ErrBadSignature) {
		t.Fatalf("wrong key: err = %v, want ErrBadSignature", err)
	}
}

func TestRequestSignature(t *testing.T) {
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	now := time.Unix(1_800_000_000, 0)
	body := []byte(`{"x":1}`)
	r, _ := http.NewRequest("POST", "https://c/v1/update", nil)
	SignRequest(r, priv, body, now)
	auth, err := VerifyRequest(r, body, now.Add(time.Minute))
	if err != nil || auth.DID != DID(priv.Public().(ed25519.PublicKey)) {
		t.Fatalf("verify: %+v %v", auth, err)
	}
	if _, err := VerifyRequest(r, []byte(`{"x":2}`), now); !errors.Is(err, ErrBadSignature) {
		t.Fatalf("changed body accepted: %v", err)
	}
	if _, err := VerifyRequest(r, body, now.Add(MaxClockSkew+time.Minute)); !errors.Is(err, ErrBadSignature) {
		t.Fatalf("stale request accepted: %v", err)
	}
	// Two signings of one request differ in their nonce.
	r2, _ := http.NewRequest("POST", "https://c/v1/update", nil)
	SignRequest(r2, priv, body, now)
	if a2, err := VerifyRequest(r2, body, now); err != nil || a2.Nonce == auth.Nonce {
		t.Fatalf("second signing: nonce %x (first %x), %v", a2.Nonce, auth.Nonce, err)
	}
	for what, mod := range map[string]func(*http.Request){
		"on another path":    func(r *http.Request) { r.URL.Path = "/v1/enroll" },
		"with a query":       func(r *http.Request) { r.URL.RawQuery = "x=1" },
		"with another nonce": func(r *http.Request) { r.Header.Set(HeaderNonce, "AAAAAAAAAAAAAAAAAAAAAA") },
		"without its nonce":  func(r *http.Request) { r.Header.Del(HeaderNonce) },
	} {
		r3 := r.Clone(r.Context())
		mod(r3)
		if _, err := VerifyRequest(r3, body, now); !errors.Is(err, ErrBadSignature) {
			t.Errorf("request replayed %s accepted: %v", what, err)
		}
	}
}

func TestCheckVersion(t *testing.T) {
	if err := CheckVersion("node", ProtocolVersion); err != nil {
		t.Fatal(err)
	}
	err := CheckVersion("node", 99)
	if !errors.Is(err, ErrVersion) || !strings.Contains(err.Error(), "99") || !strings.Contains(err.Error(), "speaks "+strconv.Itoa(ProtocolVersion)) {
		t.Fatalf("CheckVersion(99) = %v", err)
	}
	// A version-1 node signs without a nonce: it is told to upgrade.
	if err := CheckVersion("node", 1); !errors.Is(err, ErrVersion) || !strings.Contains(err.Error(), "upgrade the node") {
		t.Fatalf("CheckVersion(1) = %v", err)
	}
}

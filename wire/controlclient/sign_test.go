package controlclient

import (
	"bufio"
	"context"
	"crypto/ed25519"
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/agentnet/agentnet/internal/clocktest"
	"github.com/agentnet/agentnet/wire"
)

// TestSignedRequests: every request carries the protocol version and a
// signature by the client's identity at the injected time; WithIdentity
// signs as another node over the same connections.
func TestSignedRequests(t *testing.T) {
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	clock := clocktest.New(t0)
	type seen struct{ did, version, ctype string }
	got := make(chan seen, 2)
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		auth, err := wire.VerifyRequest(r, body, t0)
		did := auth.DID
		if err != nil {
			http.Error(w, err.Error(), http.StatusUnauthorized)
			return
		}
		var er wire.EnrollRequest
		if json.Unmarshal(body, &er) != nil || er.ProtocolVersion != wire.ProtocolVersion {
			http.Error(w, "no protocol version in body", http.StatusBadRequest)
			return
		}
		got <- seen{did, r.Header.Get(wire.HeaderProtocol), r.Header.Get("Content-Type")}
		w.Write([]byte(`{"map":{"payload":"e30=","sig":""}}`))
	}))
	srv.TLS = &tls.Config{MinVersion: tls.VersionTLS13}
	srv.StartTLS()
	defer srv.Close()
	_, k1, _ := ed25519.GenerateKey(nil)
	_, k2, _ := ed25519.GenerateKey(nil)
	c1 := New(Config{URL: srv.URL, Pin: wire.CertPin(srv.Certificate()), Identity: k1, Now: clock.Now})
	defer c1.Close()
	c2 := c1.WithIdentity(k2)
	for _, c := range []struct {
		cl  *Client
		key ed25519.PrivateKey
	}{{c1, k1}, {c2, k2}} {
		if _, err := c.cl.Enroll(context.Background(), wire.EnrollRequest{Name: "a"}); err != nil {
			t.Fatal(err)
		}
		s := <-got
		want := seen{wire.DID(c.key.Public().(ed25519.PublicKey)), strconv.Itoa(wire.ProtocolVersion), "application/json"}
		if s != want {
			t.Errorf("server saw %+v, want %+v", s, want)
		}
	}
}

// TestPinMismatch: a coordinator whose certificate is not the pinned one is
// refused before anything is sent, and the refusal is permanent.
func TestPinMismatch(t *testing.T) {
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		t.Error("request reached a server with the wrong certificate")
	}))
	defer srv.Close()
	otherPin := wire.PinPrefix + base64.StdEncoding.EncodeToString(make([]byte, 32))
	_, key, _ := ed25519.GenerateKey(nil)
	c := New(Config{URL: srv.URL, Pin: otherPin, Identity: key})
	defer c.Close()
	_, err := c.Enroll(context.Background(), wire.EnrollRequest{})
	if !errors.Is(err, wire.ErrPinMismatch) || !IsPermanent(err) {
		t.Errorf("wrong certificate: %v, want ErrPinMismatch, permanent", err)
	}
}

// TestCheckResponse: the wire error codes, the version header and which
// refusals are permanent.
func TestCheckResponse(t *testing.T) {
	for _, c := range []struct {
		name      string
		status    int
		version   string
		body      string
		code      string
		wantErr   string
		permanent bool
	}{
		{"ok", 200, "", `{}`, "", "", false},
		{"ok with version", 204, strconv.Itoa(wire.ProtocolVersion), ``, "", "", false},
		{"bad token", 403, "", `{"code":"bad_token","error":"token expired"}`, "bad_token", "token expired", true},
		{"rate limited", 429, "", `{"code":"rate_limited","error":"slow down"}`, "rate_limited", "slow down", false},
		{"server error", 503, "", `not json`, "", "HTTP 503: not json", false},
		{"version code", 400, "", `{"code":"` + wire.CodeVersion + `","error":"too old"}`, wire.CodeVersion, "too old", true},
		{"bad version header", 200, "x", `{}`, "", "bad " + wire.HeaderProtocol + " header", true},
		{"future version", 200, "99999", `{}`, "", "protocol", true},
	} {
		resp := &http.Response{StatusCode: c.status, Header: http.Header{}, Body: io.NopCloser(strings.NewReader(c.body))}
		if c.version != "" {
			resp.Header.Set(wire.HeaderProtocol, c.version)
		}
		err := CheckResponse(resp)
		if c.wantErr == "" {
			if err != nil {
				t.Errorf("%s: %v", c.name, err)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), c.wantErr) {
			t.Errorf("%s: %v, want %q", c.name, err, c.wantErr)
			continue
		}
		var ce *Error
		if errors.As(err, &ce) && (ce.Status != c.status || ce.Resp.Code != c.code) {
			t.Errorf("%s: %+v, want status %d code %q", c.name, ce, c.status, c.code)
		}
		if c.name == "bad version header" {
			continue // a garbled header is a plain error, retried
		}
		if IsPermanent(err) != c.permanent {
			t.Errorf("%s: IsPermanent = %v, want %v", c.name, !c.permanent, c.permanent)
		}
	}
}

// TestReadLineReuse: ReadLine appends to the buffer it is given, so a
// reader can reuse one buffer for every line; lines over the limit are
// garbled whether or not they end.
func TestReadLineReuse(t *testing.T) {
	r := bufio.NewReaderSize(strings.NewReader("one\ntwo-two\n"+strings.Repeat("x", 40)), 16)
	var buf []byte
	for _, want := range []string{"one\n", "two-two\n"} {
		line, err := ReadLine(r, buf[:0], 32)
		if err != nil || string(line) != want {
			t.Fatalf("ReadLine = %q, %v; want %q", line, err, want)
		}
		buf = line
	}
	if _, err := ReadLine(r, buf[:0], 32); !errors.Is(err, ErrGarbled) || !strings.Contains(err.Error(), fmt.Sprint(32)) {
		t.Errorf("long line: %v, want ErrGarbled naming the limit", err)
	}
}

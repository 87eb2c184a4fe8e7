package controlclient

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/tls"
	"errors"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/agentnet/agentnet/wire"
)

// hostileServer is a pinned TLS server that answers every control request
// with handler.
func hostileServer(t *testing.T, handler http.HandlerFunc) *Client {
	t.Helper()
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set(wire.HeaderProtocol, strconv.Itoa(wire.ProtocolVersion))
		handler(w, r)
	}))
	srv.TLS = &tls.Config{MinVersion: tls.VersionTLS13}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	_, key, _ := ed25519.GenerateKey(nil)
	c := New(Config{URL: srv.URL, Pin: wire.CertPin(srv.Certificate()), Identity: key})
	t.Cleanup(c.Close)
	return c
}

// TestControlResponseLimits: the client refuses oversized and garbled
// answers from the coordinator with an error that says so, and reads no
// more than the limit.
func TestControlResponseLimits(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for _, c := range []struct {
		name string
		body func(w http.ResponseWriter)
		want string
	}{
		{"oversized", func(w http.ResponseWriter) {
			w.Write([]byte(`{"payload":"`))
			w.Write(bytes.Repeat([]byte("A"), wire.MaxStreamLine))
			w.Write([]byte(`"}`))
		}, "response larger than 8388608 bytes"},
		{"garbled", func(w http.ResponseWriter) { w.Write([]byte(`{"payload":`)) }, "garbled response"},
		{"wrong type", func(w http.ResponseWriter) { w.Write([]byte(`{"payload":5}`)) }, "garbled response"},
	} {
		cl := hostileServer(t, func(w http.ResponseWriter, r *http.Request) { c.body(w) })
		_, err := cl.Update(ctx, wire.UpdateRequest{})
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s update response: %v, want %q", c.name, err, c.want)
		}
	}
}

// TestControlStreamLimits: an oversized or garbled stream line ends the
// stream with a clear error; nothing before it is lost, nothing after it
// is delivered.
func TestControlStreamLimits(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	good := []byte("{\"type\":\"map\",\"map\":{\"payload\":\"e30=\",\"sig\":\"\"}}\n")
	for _, c := range []struct {
		name string
		line []byte
		want string
	}{
		{"oversized", append(bytes.Repeat([]byte(" "), wire.MaxStreamLine+1), '\n'), "line longer than 8388608 bytes"},
		{"oversized unterminated", bytes.Repeat([]byte("x"), wire.MaxStreamLine+1), "line longer than 8388608 bytes"},
		{"garbled", []byte("{\"type\":\"map\",\"map\":{\n"), "garbled netmap stream message"},
		{"map without map", []byte("{\"type\":\"map\"}\n"), "map message without a map"},
	} {
		cl := hostileServer(t, func(w http.ResponseWriter, r *http.Request) {
			w.Write(good)
			w.Write(c.line)
			w.Write(good)
		})
		maps := 0
		err := cl.StreamMaps(ctx, func(*wire.StreamMessage) error { maps++; return nil }, nil)
		if !errors.Is(err, ErrGarbled) || !strings.Contains(err.Error(), c.want) || maps != 1 {
			t.Errorf("%s stream line: %v after %d maps, want %q after 1", c.name, err, maps, c.want)
		}
	}
}

// TestControlRetryAfter: a 429 carries the coordinator's Retry-After (and
// is not permanent); absurd values are capped.
func TestControlRetryAfter(t *testing.T) {
	for hdr, want := range map[string]time.Duration{"3": 3 * time.Second, "": 0, "soon": 0, "-1": 0, "999999": MaxRetryAfter} {
		cl := hostileServer(t, func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Retry-After", hdr)
			w.WriteHeader(http.StatusTooManyRequests)
			w.Write([]byte(`{"code":"rate_limited","error":"slow down"}`))
		})
		_, err := cl.Enroll(context.Background(), wire.EnrollRequest{})
		var ce *Error
		if !errors.As(err, &ce) || ce.Resp.Code != wire.CodeRateLimited || ce.RetryAfter != want || ce.Permanent() {
			t.Errorf("Retry-After %q: %v (RetryAfter %v), want rate_limited, %v, not permanent", hdr, err, ce.RetryAfter, want)
		}
	}
}

// Package controlclient is the node side of the control protocol: requests
// signed with the node's identity key over HTTPS pinned to the
// coordinator's certificate, bounded answers decoded into wire types or a
// *Error carrying the coordinator's wire error code, and the NDJSON netmap
// stream read one bounded line at a time.
//
// The node (overlay) and the control-plane benchmark (bench) both speak
// through it. It imports only wire and the standard library: no server, no
// node internals.
package controlclient

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/agentnet/agentnet/wire"
)

// Defaults of Config.
const (
	// DefaultTimeout bounds one request other than the netmap stream.
	DefaultTimeout = 20 * time.Second
	// DefaultMaxIdleConns is how many idle connections the client keeps.
	DefaultMaxIdleConns = 4
)

// Config configures a Client.
type Config struct {
	// URL is the coordinator's base URL, e.g. https://10.0.0.1:8443. Required.
	URL string
	// Pin is the coordinator's certificate pin (wire.CertPin). Required.
	Pin string
	// Identity signs every request (wire.SignRequest). Optional here: a
	// Client without one is a shared transport for WithIdentity.
	Identity ed25519.PrivateKey
	// Now stamps request signatures. Optional; default time.Now.
	Now func() time.Time
	// Timeout bounds one request other than the netmap stream, which has
	// no overall bound. Optional; default DefaultTimeout.
	Timeout time.Duration
	// MaxIdleConns is how many idle connections are kept, in all and per
	// host. Optional; default DefaultMaxIdleConns in all (net/http's
	// default of 2 per host).
	MaxIdleConns int
	// HTTP1 speaks HTTP/1.1, one TCP connection per request in flight and
	// per stream. Optional; default false: HTTP/2, many streams on one
	// connection.
	HTTP1 bool
}

// Client speaks the control protocol to one coordinator. It is safe for
// concurrent use. Close ends every connection it made.
type Client struct {
	base     string
	identity ed25519.PrivateKey
	http     *http.Client // bounded requests
	stream   *http.Client // the long-lived netmap stream (no overall timeout)
	conns    *connSet     // every connection of both, for Close
	now      func() time.Time
}

// New returns a client for cfg. It dials nothing until the first request.
func New(cfg Config) *Client {
	conns := newConnSet()
	tr := &http.Transport{
		DialContext:         conns.dial,
		TLSClientConfig:     wire.PinnedTLSConfig(cfg.Pin),
		TLSHandshakeTimeout: 10 * time.Second,
		ForceAttemptHTTP2:   !cfg.HTTP1, // needed for h2 with a custom TLS config
		MaxIdleConns:        DefaultMaxIdleConns,
		IdleConnTimeout:     90 * time.Second,
	}
	if cfg.MaxIdleConns > 0 {
		tr.MaxIdleConns, tr.MaxIdleConnsPerHost = cfg.MaxIdleConns, cfg.MaxIdleConns
	}
	timeout := cfg.Timeout
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	now := cfg.Now
	if now == nil {
		now = time.Now
	}
	return &Client{
		base:     cfg.URL,
		identity: cfg.Identity,
		http:     &http.Client{Transport: tr, Timeout: timeout},
		stream:   &http.Client{Transport: tr.Clone()},
		conns:    conns,
		now:      now,
	}
}

// WithIdentity returns a client that signs with identity and shares c's
// connections (one transport for many simulated nodes).
func (c *Client) WithIdentity(identity ed25519.PrivateKey) *Client {
	c2 := *c
	c2.identity = identity
	return &c2
}

// Close closes every connection of c and of every client sharing them
// (WithIdentity), idle or not: requests in flight fail, and later ones
// fail with net.ErrClosed.
func (c *Client) Close() {
	c.http.CloseIdleConnections()
	c.stream.CloseIdleConnections()
	c.conns.closeAll()
}

// HTTP is the client for bounded requests built with NewRequest.
func (c *Client) HTTP() *http.Client { return c.http }

// NewRequest builds a request to path with body (JSON-encoded unless nil),
// the protocol version header, and the identity's signature.
func (c *Client) NewRequest(ctx context.Context, method, path string, body any) (*http.Request, error) {
	var b []byte
	if body != nil {
		var err error
		if b, err = json.Marshal(body); err != nil {
			return nil, err
		}
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, bytes.NewReader(b))
	if err != nil {
		return nil, fmt.Errorf("control: build request: %w", err)
	}
	req.Header.Set(wire.HeaderProtocol, strconv.Itoa(wire.ProtocolVersion))
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	wire.SignRequest(req, c.identity, b, c.now())
	return req, nil
}

// CheckResponse turns a non-2xx answer into an *Error and checks the
// coordinator's protocol version.
func CheckResponse(resp *http.Response) error {
	if v := resp.Header.Get(wire.HeaderProtocol); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil {
			return fmt.Errorf("control: coordinator sent a bad %s header %q", wire.HeaderProtocol, v)
		}
		if err := wire.CheckVersion("coordinator", n); err != nil {
			return err
		}
	}
	if resp.StatusCode/100 == 2 {
		return nil
	}
	ce := &Error{Status: resp.StatusCode, RetryAfter: parseRetryAfter(resp.Header.Get("Retry-After"))}
	b, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
	if json.Unmarshal(b, &ce.Resp) != nil || ce.Resp.Error == "" {
		ce.Resp.Error = fmt.Sprintf("HTTP %d: %.200s", resp.StatusCode, bytes.TrimSpace(b))
	}
	return ce
}

// maxErrorBody bounds the error answer CheckResponse reads.
const maxErrorBody = 16 << 10

// parseRetryAfter reads a Retry-After header in seconds (RFC 9110 §10.2.3;
// the HTTP-date form is not used by the coordinator and is ignored).
func parseRetryAfter(v string) time.Duration {
	secs, err := strconv.ParseUint(strings.TrimSpace(v), 10, 32)
	if err != nil {
		return 0
	}
	return min(time.Duration(secs)*time.Second, MaxRetryAfter)
}

// Do POSTs body to path and decodes the answer (at most
// wire.MaxStreamLine bytes) into out.
func (c *Client) Do(ctx context.Context, path string, body, out any) error {
	req, err := c.NewRequest(ctx, http.MethodPost, path, body)
	if err != nil {
		return err
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("control: %s: %w", path, err)
	}
	defer resp.Body.Close()
	if err := CheckResponse(resp); err != nil {
		return err
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, wire.MaxStreamLine+1))
	if err != nil {
		return fmt.Errorf("control: %s: read response: %w", path, err)
	}
	if len(b) > wire.MaxStreamLine {
		return fmt.Errorf("control: %s: response larger than %d bytes; refusing it", path, wire.MaxStreamLine)
	}
	if err := json.Unmarshal(b, out); err != nil {
		return fmt.Errorf("control: %s: garbled response (%d bytes): %w", path, len(b), err)
	}
	return nil
}

// doDiscard POSTs body to path and reads at most limit bytes of the
// answer, which it ignores.
func (c *Client) doDiscard(ctx context.Context, path string, body any, limit int64) error {
	r, err := c.NewRequest(ctx, http.MethodPost, path, body)
	if err != nil {
		return err
	}
	resp, err := c.http.Do(r)
	if err != nil {
		return fmt.Errorf("control: %s: %w", path, err)
	}
	defer resp.Body.Close()
	if err := CheckResponse(resp); err != nil {
		return err
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, limit))
	return nil
}

// Enroll enrolls (or re-enrolls) the identity; it sets req.ProtocolVersion.
func (c *Client) Enroll(ctx context.Context, req wire.EnrollRequest) (*wire.EnrollResponse, error) {
	req.ProtocolVersion = wire.ProtocolVersion
	var resp wire.EnrollResponse
	if err := c.Do(ctx, wire.PathEnroll, req, &resp); err != nil {
		return nil, err
	}
	return &resp, nil
}

// Update publishes keys and endpoints and returns the signed map.
func (c *Client) Update(ctx context.Context, req wire.UpdateRequest) (*wire.Signed, error) {
	var resp wire.Signed
	if err := c.Do(ctx, wire.PathUpdate, req, &resp); err != nil {
		return nil, err
	}
	return &resp, nil
}

// Probe asks the coordinator to have peer probe paths to us now (both sides
// then get a MsgProbe). A coordinator without the endpoint answers 404.
func (c *Client) Probe(ctx context.Context, req wire.ProbeRequest) error {
	return c.doDiscard(ctx, wire.PathProbe, req, 4<<10)
}

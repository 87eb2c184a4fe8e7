package overlay

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/agentnet/agentnet/wire"
)

// controlClient speaks the control protocol to one coordinator over HTTPS
// pinned to its certificate. Every request is signed by the identity key.
type controlClient struct {
	base     string
	identity ed25519.PrivateKey
	http     *http.Client // bounded requests
	stream   *http.Client // the long-lived netmap stream (no overall timeout)
	now      func() time.Time
}

func newControlClient(url, pin string, identity ed25519.PrivateKey) *controlClient {
	tr := &http.Transport{
		TLSClientConfig:     wire.PinnedTLSConfig(pin),
		TLSHandshakeTimeout: 10 * time.Second,
		ForceAttemptHTTP2:   true,
		MaxIdleConns:        4,
		IdleConnTimeout:     90 * time.Second,
	}
	str := tr.Clone()
	return &controlClient{
		base:     url,
		identity: identity,
		http:     &http.Client{Transport: tr, Timeout: 20 * time.Second},
		stream:   &http.Client{Transport: str},
		now:      time.Now,
	}
}

func (c *controlClient) close() {
	c.http.CloseIdleConnections()
	c.stream.CloseIdleConnections()
}

// ControlError is a refusal by the coordinator. Permanent errors (bad token,
// name taken, version mismatch) must not be retried.
type ControlError struct {
	Status int
	Resp   wire.ErrorResponse
	// RetryAfter is the coordinator's Retry-After (429 rate_limited, 503),
	// at most maxRetryAfter; 0 when absent.
	RetryAfter time.Duration
}

// maxRetryAfter caps a Retry-After the node honours, so a confused or
// hostile server cannot park it for hours.
const maxRetryAfter = 5 * time.Minute

func (e *ControlError) Error() string {
	return fmt.Sprintf("coordinator refused (%d %s): %s", e.Status, e.Resp.Code, e.Resp.Error)
}

// Unwrap lets callers test errors.Is(err, wire.ErrVersion).
func (e *ControlError) Unwrap() error {
	if e.Resp.Code == wire.CodeVersion {
		return wire.ErrVersion
	}
	return nil
}

// Permanent reports whether retrying cannot help.
func (e *ControlError) Permanent() bool {
	return e.Status >= 400 && e.Status < 500 && e.Status != http.StatusTooManyRequests
}

func isPermanent(err error) bool {
	var ce *ControlError
	return errors.As(err, &ce) && ce.Permanent() || errors.Is(err, wire.ErrPinMismatch) || errors.Is(err, wire.ErrVersion)
}

func (c *controlClient) newRequest(ctx context.Context, method, path string, body any) (*http.Request, error) {
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

// checkResponse turns a non-2xx answer into a *ControlError and checks the
// coordinator's protocol version.
func checkResponse(resp *http.Response) error {
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
	ce := &ControlError{Status: resp.StatusCode, RetryAfter: parseRetryAfter(resp.Header.Get("Retry-After"))}
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 16<<10))
	if json.Unmarshal(b, &ce.Resp) != nil || ce.Resp.Error == "" {
		ce.Resp.Error = fmt.Sprintf("HTTP %d: %.200s", resp.StatusCode, bytes.TrimSpace(b))
	}
	return ce
}

// parseRetryAfter reads a Retry-After header in seconds (RFC 9110 §10.2.3;
// the HTTP-date form is not used by the coordinator and is ignored).
func parseRetryAfter(v string) time.Duration {
	secs, err := strconv.ParseUint(strings.TrimSpace(v), 10, 32)
	if err != nil {
		return 0
	}
	return min(time.Duration(secs)*time.Second, maxRetryAfter)
}

func (c *controlClient) do(ctx context.Context, path string, body, out any) error {
	req, err := c.newRequest(ctx, http.MethodPost, path, body)
	if err != nil {
		return err
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("control: %s: %w", path, err)
	}
	defer resp.Body.Close()
	if err := checkResponse(resp); err != nil {
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

func (c *controlClient) enroll(ctx context.Context, req wire.EnrollRequest) (*wire.EnrollResponse, error) {
	req.ProtocolVersion = wire.ProtocolVersion
	var resp wire.EnrollResponse
	if err := c.do(ctx, wire.PathEnroll, req, &resp); err != nil {
		return nil, err
	}
	return &resp, nil
}

func (c *controlClient) update(ctx context.Context, req wire.UpdateRequest) (*wire.Signed, error) {
	var resp wire.Signed
	if err := c.do(ctx, wire.PathUpdate, req, &resp); err != nil {
		return nil, err
	}
	return &resp, nil
}

// probe asks the coordinator to have peer probe paths to us now (both sides
// then get a MsgProbe). A coordinator without the endpoint answers 404.
func (c *controlClient) probe(ctx context.Context, req wire.ProbeRequest) error {
	r, err := c.newRequest(ctx, http.MethodPost, wire.PathProbe, req)
	if err != nil {
		return err
	}
	resp, err := c.http.Do(r)
	if err != nil {
		return fmt.Errorf("control: %s: %w", wire.PathProbe, err)
	}
	defer resp.Body.Close()
	if err := checkResponse(resp); err != nil {
		return err
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4<<10))
	return nil
}

// streamMaps opens the netmap stream, asking for deltas, and calls onMap for
// every map and delta message until the stream ends, onMap fails, ctx is
// done, or the coordinator is silent for 3 keepalives.
func (c *controlClient) streamMaps(ctx context.Context, onMap func(*wire.StreamMessage) error, onProbe func(*wire.Probe)) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	req, err := c.newRequest(ctx, http.MethodGet, wire.PathStream, nil)
	if err != nil {
		return err
	}
	req.Header.Set(wire.HeaderStreamDeltas, "1")
	resp, err := c.stream.Do(req)
	if err != nil {
		return fmt.Errorf("control: open netmap stream: %w", err)
	}
	defer resp.Body.Close()
	if err := checkResponse(resp); err != nil {
		return err
	}
	idle := time.AfterFunc(3*wire.StreamKeepalive, cancel)
	defer idle.Stop()
	r := bufio.NewReaderSize(resp.Body, 64<<10)
	for {
		msg, err := readStreamMessage(r, wire.MaxStreamLine)
		if err != nil {
			if errors.Is(err, errGarbled) {
				return fmt.Errorf("control: netmap stream: %w", err)
			}
			if ctx.Err() != nil && errors.Is(context.Cause(ctx), context.Canceled) {
				return fmt.Errorf("control: netmap stream idle or closed: %w", ctx.Err())
			}
			return fmt.Errorf("control: netmap stream: %w", err)
		}
		idle.Reset(3 * wire.StreamKeepalive)
		switch {
		case msg.Type == wire.MsgMap || msg.Type == wire.MsgDelta:
			if err := onMap(msg); err != nil {
				return fmt.Errorf("control: netmap stream: %w", err)
			}
		case msg.Type == wire.MsgProbe && msg.Probe != nil && onProbe != nil:
			onProbe(msg.Probe)
		}
	}
}

// errGarbled marks a stream line that is too long or not a StreamMessage.
var errGarbled = errors.New("garbled netmap stream message")

// readStreamMessage reads and decodes one line of the netmap stream (at
// most max bytes). A map message always carries a map, a delta message a
// delta; other types (keepalives, and types newer than this node) are
// returned for the caller to ignore.
func readStreamMessage(r *bufio.Reader, max int) (*wire.StreamMessage, error) {
	line, err := readLine(r, max)
	if err != nil {
		return nil, err
	}
	var msg wire.StreamMessage
	if err := json.Unmarshal(line, &msg); err != nil {
		return nil, fmt.Errorf("%w (%d bytes): %v", errGarbled, len(line), err)
	}
	if msg.Type == wire.MsgMap && msg.Map == nil {
		return nil, fmt.Errorf("%w: map message without a map", errGarbled)
	}
	if msg.Type == wire.MsgDelta && msg.Delta == nil {
		return nil, fmt.Errorf("%w: delta message without a delta", errGarbled)
	}
	return &msg, nil
}

// readLine reads one newline-terminated line of at most max bytes.
func readLine(r *bufio.Reader, max int) ([]byte, error) {
	var line []byte
	for {
		frag, err := r.ReadSlice('\n')
		line = append(line, frag...)
		if len(line) > max {
			return nil, fmt.Errorf("%w: line longer than %d bytes", errGarbled, max)
		}
		if err == nil {
			return line, nil
		}
		if !errors.Is(err, bufio.ErrBufferFull) {
			return nil, err
		}
	}
}

package coordinator

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/agentnet/agentnet/coordinator/audit"
	"github.com/agentnet/agentnet/coordinator/store"
	"github.com/agentnet/agentnet/wire"
)

// apiError is a refusal: an HTTP status, a netmap Code the client decides
// on, a message for people (sent), and an optional cause (logged only).
type apiError struct {
	status int
	code   string
	msg    string
	cause  error
	wait   time.Duration // > 0: sent as Retry-After
}

func (e *apiError) Error() string {
	if e.cause != nil {
		return e.msg + ": " + e.cause.Error()
	}
	return e.msg
}

func (e *apiError) Unwrap() error { return e.cause }

func refuse(status int, code, format string, args ...any) *apiError {
	return &apiError{status: status, code: code, msg: fmt.Sprintf(format, args...)}
}

func (e *apiError) with(cause error) *apiError { e.cause = cause; return e }

// retry sets the Retry-After the refusal is sent with.
func (e *apiError) retry(wait time.Duration) *apiError { e.wait = wait; return e }

// handlerFunc is a handler that reports refusals as an error; serve turns
// them into ErrorResponse JSON, a log line and a counter.
type handlerFunc func(w http.ResponseWriter, r *http.Request) error

// bodyReadTimeout bounds how long a client may take to send its body.
const bodyReadTimeout = 30 * time.Second

// routes builds the API mux. Every route goes through serve.
func (c *Coordinator) routes() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("POST "+wire.PathEnroll, c.serve(c.limited(c.limits.enroll, "enrollment", c.handleEnroll)))
	mux.Handle("POST "+wire.PathUpdate, c.serve(c.handleUpdate))
	mux.Handle("GET "+wire.PathStream, c.serve(c.handleStream))
	mux.Handle("POST "+wire.PathReport, c.serve(c.handleReport))
	mux.Handle("GET "+wire.PathAdminAudit, c.serve(c.admin(c.handleAuditTail)))
	mux.Handle("POST "+wire.PathProbe, c.serve(c.handleProbe))
	mux.Handle("POST "+wire.PathAdminTokens, c.serve(c.admin(c.handleCreateToken)))
	mux.Handle("GET "+wire.PathAdminTokens, c.serve(c.admin(c.handleListTokens)))
	mux.Handle("DELETE "+wire.PathAdminTokens+"/{id}", c.serve(c.admin(c.handleRevokeToken)))
	mux.Handle("GET "+wire.PathAdminNodes, c.serve(c.admin(c.handleNodes)))
	mux.Handle("DELETE "+wire.PathAdminNodes+"/{name}", c.serve(c.admin(c.handleDeleteNode)))
	c.policyRoutes(mux)
	mux.Handle("POST "+wire.PathAdminNodes+"/{name}"+wire.PathAdminRevoke, c.serve(c.admin(c.handleRevokeNode)))
	mux.Handle("GET "+wire.PathAdminRevocations, c.serve(c.admin(c.handleRevocations)))
	mux.Handle("/", c.serve(func(w http.ResponseWriter, r *http.Request) error {
		return refuse(http.StatusNotFound, wire.CodeNotFound, "no API endpoint %s %s", r.Method, r.URL.Path)
	}))
	return mux
}

// serve is the middleware every request passes: it tracks the request for
// Close, stamps HeaderProtocol on the response, refuses a missing or
// unsupported HeaderProtocol, bounds the body to wire.MaxBodyBytes (a
// declared larger body is refused before any handler runs, so endpoints
// that read no body are bounded too), and turns a handler's error into
// ErrorResponse JSON.
func (c *Coordinator) serve(h handlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set(wire.HeaderProtocol, strconv.Itoa(wire.ProtocolVersion))
		if !c.enter() {
			c.fail(w, r, refuse(http.StatusServiceUnavailable, wire.CodeInternal, "coordinator is shutting down"))
			return
		}
		defer c.leave()
		c.stats.requests.Add(1)
		if err := checkVersionHeader(r); err != nil {
			c.fail(w, r, err)
			return
		}
		if r.ContentLength > wire.MaxBodyBytes {
			c.fail(w, r, refuse(http.StatusRequestEntityTooLarge, wire.CodeTooLarge,
				"request body of %d bytes is larger than %d", r.ContentLength, wire.MaxBodyBytes))
			return
		}
		r.Body = http.MaxBytesReader(w, r.Body, wire.MaxBodyBytes)
		if err := h(w, r); err != nil {
			c.fail(w, r, err)
		}
	})
}

func checkVersionHeader(r *http.Request) error {
	h := r.Header.Get(wire.HeaderProtocol)
	if h == "" {
		return refuse(http.StatusBadRequest, wire.CodeVersion,
			"request has no %s header; this coordinator speaks control protocol %d (accepts %d..%d); upgrade the client",
			wire.HeaderProtocol, wire.ProtocolVersion, wire.MinProtocolVersion, wire.ProtocolVersion)
	}
	v, err := strconv.Atoi(h)
	if err != nil {
		return refuse(http.StatusBadRequest, wire.CodeVersion,
			"%s header %.16q is not a number; this coordinator speaks control protocol %d",
			wire.HeaderProtocol, h, wire.ProtocolVersion)
	}
	if err := wire.CheckVersion("client", v); err != nil {
		return refuse(http.StatusBadRequest, wire.CodeVersion, "%v", err)
	}
	return nil
}

// fail writes err as ErrorResponse JSON, counts it, and logs it (refusals
// rate-limited per client, claimed node and code; internal errors always).
func (c *Coordinator) fail(w http.ResponseWriter, r *http.Request, err error) {
	var ae *apiError
	if !errors.As(err, &ae) {
		ae = &apiError{status: http.StatusInternalServerError, code: wire.CodeInternal, msg: "internal error", cause: err}
	}
	if errors.Is(err, store.ErrClosed) {
		ae = &apiError{status: http.StatusServiceUnavailable, code: wire.CodeInternal, msg: "coordinator is shutting down", cause: err}
	}
	c.stats.refuse(ae.code)
	node := r.Header.Get(wire.HeaderNode) // as claimed; may be unverified
	if len(node) > 64 {
		node = node[:64] + "…"
	}
	level := slog.LevelWarn
	if ae.status >= 500 {
		level = slog.LevelError
	}
	host, _, _ := net.SplitHostPort(r.RemoteAddr)
	if ae.status < 500 {
		c.audit.RecordLimited(audit.KindRequestRefused, host, ae.code, "status", ae.status, "path", r.URL.Path, "claimed_node", node, "reason", ae.msg)
	}
	if level == slog.LevelError || c.limiter.Allow(host+"|"+node+"|"+ae.code, c.now()) {
		c.log.Log(r.Context(), level, "coordinator: request refused",
			"node", node, "reason", ae.code, "err", ae.Error(), "path", r.URL.Path, "endpoint", r.RemoteAddr, "status", ae.status)
	} else {
		c.stats.logsSuppressed.Add(1)
	}
	if ae.wait > 0 {
		w.Header().Set("Retry-After", retryAfter(ae.wait))
	}
	writeJSON(w, ae.status, wire.ErrorResponse{Code: ae.code, Error: ae.msg, ProtocolVersion: wire.ProtocolVersion})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		status, b = http.StatusInternalServerError, []byte(`{"code":"internal","error":"encode response"}`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(append(b, '\n'))
}

// readBody reads the whole (already size-limited) request body.
func readBody(w http.ResponseWriter, r *http.Request) ([]byte, error) {
	_ = http.NewResponseController(w).SetReadDeadline(time.Now().Add(bodyReadTimeout))
	b, err := io.ReadAll(r.Body)
	var tooBig *http.MaxBytesError
	switch {
	case errors.As(err, &tooBig):
		return nil, refuse(http.StatusRequestEntityTooLarge, wire.CodeTooLarge, "request body larger than %d bytes", wire.MaxBodyBytes)
	case err != nil:
		return nil, refuse(http.StatusBadRequest, wire.CodeBadRequest, "read request body").with(err)
	}
	return b, nil
}

// decodeStrict decodes exactly one JSON value into v, refusing unknown
// fields and trailing data.
func decodeStrict(b []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return refuse(http.StatusBadRequest, wire.CodeBadRequest, "bad JSON body: %v", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return refuse(http.StatusBadRequest, wire.CodeBadRequest, "bad JSON body: trailing data after the object")
	}
	return nil
}

// enter registers a request in flight; it fails once Close has begun.
func (c *Coordinator) enter() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closing {
		return false
	}
	c.inflight++
	return true
}

func (c *Coordinator) leave() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.inflight--
	if c.closing && c.inflight == 0 && c.drained != nil {
		close(c.drained)
		c.drained = nil
	}
}

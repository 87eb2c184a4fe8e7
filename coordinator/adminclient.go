package coordinator

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/agentnet/agentnet/wire"
)

// APIError is a refusal returned by the coordinator API: the HTTP status
// and the wire.ErrorResponse it carried. Callers decide on Code.
type APIError struct {
	Status  int
	Code    string // a wire.Code* value
	Message string
}

func (e *APIError) Error() string {
	return fmt.Sprintf("coordinator refused (%d %s): %s", e.Status, e.Code, e.Message)
}

// AdminClient calls the coordinator's admin API. It trusts exactly the
// certificate pinned in the credential and authenticates with its secret.
// It keeps no idle connections, so it needs no Close.
type AdminClient struct {
	cred AdminCred
	hc   *http.Client
}

// adminTimeout bounds one admin call when the context has no deadline.
const adminTimeout = 30 * time.Second

// NewAdminClient returns a client for the coordinator named by cred.
func NewAdminClient(cred AdminCred) *AdminClient {
	return &AdminClient{
		cred: cred,
		hc: &http.Client{
			Timeout: adminTimeout,
			Transport: &http.Transport{
				TLSClientConfig:   wire.PinnedTLSConfig(cred.Pin),
				DisableKeepAlives: true,
				ForceAttemptHTTP2: true,
			},
		},
	}
}

// CreateToken asks for a join token.
func (a *AdminClient) CreateToken(ctx context.Context, req wire.CreateTokenRequest) (wire.CreateTokenResponse, error) {
	var resp wire.CreateTokenResponse
	err := a.do(ctx, http.MethodPost, wire.PathAdminTokens, req, &resp)
	return resp, err
}

// Tokens lists every join token (no secrets), newest first.
func (a *AdminClient) Tokens(ctx context.Context) ([]TokenInfo, error) {
	var out []TokenInfo
	err := a.do(ctx, http.MethodGet, wire.PathAdminTokens, nil, &out)
	return out, err
}

// RevokeToken revokes join token id: later enrollments with it are
// refused; nodes it enrolled keep working (revoke those with RevokeNode).
func (a *AdminClient) RevokeToken(ctx context.Context, id string) error {
	return a.do(ctx, http.MethodDelete, wire.PathAdminTokens+"/"+url.PathEscape(id), nil, nil)
}

// Nodes lists every enrolled node, sorted by name.
func (a *AdminClient) Nodes(ctx context.Context) ([]wire.Node, error) {
	var nodes []wire.Node
	err := a.do(ctx, http.MethodGet, wire.PathAdminNodes, nil, &nodes)
	return nodes, err
}

// DeleteNode removes the named node: it leaves the network, every peer gets
// a map without it, and its stream is ended.
func (a *AdminClient) DeleteNode(ctx context.Context, name string) error {
	return a.do(ctx, http.MethodDelete, wire.PathAdminNodes+"/"+url.PathEscape(name), nil, nil)
}

// RevokeNode revokes the named node for good: its stream ends, every peer
// gets a map without it, and its identity and WireGuard keys are refused
// from then on. It returns the revocation record.
func (a *AdminClient) RevokeNode(ctx context.Context, name, reason string) (wire.Revocation, error) {
	var rec wire.Revocation
	err := a.do(ctx, http.MethodPost, wire.PathAdminNodes+"/"+url.PathEscape(name)+wire.PathAdminRevoke, wire.RevokeRequest{Reason: reason}, &rec)
	return rec, err
}

// Revocations lists revoked and expired identities, newest first.
func (a *AdminClient) Revocations(ctx context.Context) ([]wire.Revocation, error) {
	var recs []wire.Revocation
	err := a.do(ctx, http.MethodGet, wire.PathAdminRevocations, nil, &recs)
	return recs, err
}

func (a *AdminClient) do(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return fmt.Errorf("coordinator: encode %s request: %w", path, err)
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, strings.TrimSuffix(a.cred.URL, "/")+path, body)
	if err != nil {
		return fmt.Errorf("coordinator: %s %s: %w", method, path, err)
	}
	req.Header.Set(wire.HeaderProtocol, strconv.Itoa(wire.ProtocolVersion))
	req.Header.Set(wire.HeaderAdmin, "Bearer "+a.cred.Secret)
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := a.hc.Do(req)
	if err != nil {
		return fmt.Errorf("coordinator: %s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, wire.MaxStreamLine))
	if err != nil {
		return fmt.Errorf("coordinator: %s %s: read response: %w", method, path, err)
	}
	if resp.StatusCode/100 != 2 {
		var er wire.ErrorResponse
		if json.Unmarshal(b, &er) != nil || er.Code == "" {
			return &APIError{Status: resp.StatusCode, Code: wire.CodeInternal, Message: strings.TrimSpace(string(b))}
		}
		return &APIError{Status: resp.StatusCode, Code: er.Code, Message: er.Error}
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(b, out); err != nil {
		return fmt.Errorf("coordinator: %s %s: decode response: %w", method, path, err)
	}
	return nil
}

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

	"github.com/agentnet/agentnet/overlay/netmap"
)

// APIError is a refusal returned by the coordinator API: the HTTP status
// and the netmap.ErrorResponse it carried. Callers decide on Code.
type APIError struct {
	Status  int
	Code    string // a netmap.Code* value
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
				TLSClientConfig:   netmap.PinnedTLSConfig(cred.Pin),
				DisableKeepAlives: true,
				ForceAttemptHTTP2: true,
			},
		},
	}
}

// CreateToken asks for a join token.
func (a *AdminClient) CreateToken(ctx context.Context, req netmap.CreateTokenRequest) (netmap.CreateTokenResponse, error) {
	var resp netmap.CreateTokenResponse
	err := a.do(ctx, http.MethodPost, netmap.PathAdminTokens, req, &resp)
	return resp, err
}

// Tokens lists every join token (no secrets), newest first.
func (a *AdminClient) Tokens(ctx context.Context) ([]TokenInfo, error) {
	var out []TokenInfo
	err := a.do(ctx, http.MethodGet, netmap.PathAdminTokens, nil, &out)
	return out, err
}

// RevokeToken revokes join token id: later enrollments with it are
// refused; nodes it enrolled keep working (revoke those with RevokeNode).
func (a *AdminClient) RevokeToken(ctx context.Context, id string) error {
	return a.do(ctx, http.MethodDelete, netmap.PathAdminTokens+"/"+url.PathEscape(id), nil, nil)
}

// Nodes lists every enrolled node, sorted by name.
func (a *AdminClient) Nodes(ctx context.Context) ([]netmap.Node, error) {
	var nodes []netmap.Node
	err := a.do(ctx, http.MethodGet, netmap.PathAdminNodes, nil, &nodes)
	return nodes, err
}

// DeleteNode removes the named node: it leaves the network, every peer gets
// a map without it, and its stream is ended.
func (a *AdminClient) DeleteNode(ctx context.Context, name string) error {
	return a.do(ctx, http.MethodDelete, netmap.PathAdminNodes+"/"+url.PathEscape(name), nil, nil)
}

// RevokeNode revokes the named node for good: its stream ends, every peer
// gets a map without it, and its identity and WireGuard keys are refused
// from then on. It returns the revocation record.
func (a *AdminClient) RevokeNode(ctx context.Context, name, reason string) (netmap.Revocation, error) {
	var rec netmap.Revocation
	err := a.do(ctx, http.MethodPost, netmap.PathAdminNodes+"/"+url.PathEscape(name)+netmap.PathAdminRevoke, netmap.RevokeRequest{Reason: reason}, &rec)
	return rec, err
}

// Revocations lists revoked and expired identities, newest first.
func (a *AdminClient) Revocations(ctx context.Context) ([]netmap.Revocation, error) {
	var recs []netmap.Revocation
	err := a.do(ctx, http.MethodGet, netmap.PathAdminRevocations, nil, &recs)
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
	req.Header.Set(netmap.HeaderProtocol, strconv.Itoa(netmap.ProtocolVersion))
	req.Header.Set(netmap.HeaderAdmin, "Bearer "+a.cred.Secret)
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := a.hc.Do(req)
	if err != nil {
		return fmt.Errorf("coordinator: %s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, netmap.MaxStreamLine))
	if err != nil {
		return fmt.Errorf("coordinator: %s %s: read response: %w", method, path, err)
	}
	if resp.StatusCode/100 != 2 {
		var er netmap.ErrorResponse
		if json.Unmarshal(b, &er) != nil || er.Code == "" {
			return &APIError{Status: resp.StatusCode, Code: netmap.CodeInternal, Message: strings.TrimSpace(string(b))}
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

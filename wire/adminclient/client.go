// Package adminclient calls the coordinator's admin API (tokens, nodes,
// revocation, policy, audit) with the credential of admin.cred
// (wire.AdminCred). It imports only wire and the standard library, so an
// admin tool links no part of the coordinator server.
package adminclient

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/agentnet/agentnet/wire"
)

// Client calls the coordinator's admin API. It trusts exactly the
// certificate pinned in the credential and authenticates with its secret.
// It keeps no idle connections, so it needs no Close. A refusal is a
// *wire.APIError.
type Client struct {
	cred wire.AdminCred
	hc   *http.Client
}

// timeout bounds one admin call when the context has no deadline.
const timeout = 30 * time.Second

// New returns a client for the coordinator named by cred.
func New(cred wire.AdminCred) *Client {
	return &Client{
		cred: cred,
		hc: &http.Client{
			Timeout: timeout,
			Transport: &http.Transport{
				TLSClientConfig:   wire.PinnedTLSConfig(cred.Pin),
				DisableKeepAlives: true,
				ForceAttemptHTTP2: true,
			},
		},
	}
}

// NewDial is New with its connections made by dial instead of TCP, for a
// coordinator reached another way (such as an in-memory listener in tests).
// TLS and the pin still apply on top of dial's connections.
func NewDial(cred wire.AdminCred, dial func(ctx context.Context, network, addr string) (net.Conn, error)) *Client {
	a := New(cred)
	a.hc.Transport.(*http.Transport).DialContext = dial
	return a
}

// CreateToken asks for a join token.
func (a *Client) CreateToken(ctx context.Context, req wire.CreateTokenRequest) (wire.CreateTokenResponse, error) {
	var resp wire.CreateTokenResponse
	err := a.do(ctx, http.MethodPost, wire.PathAdminTokens, req, &resp)
	return resp, err
}

// Tokens lists every join token (no secrets), newest first.
func (a *Client) Tokens(ctx context.Context) ([]wire.TokenInfo, error) {
	var out []wire.TokenInfo
	err := a.do(ctx, http.MethodGet, wire.PathAdminTokens, nil, &out)
	return out, err
}

// RevokeToken revokes join token id: later enrollments with it are
// refused; nodes it enrolled keep working (revoke those with RevokeNode).
func (a *Client) RevokeToken(ctx context.Context, id string) error {
	return a.do(ctx, http.MethodDelete, wire.PathAdminTokens+"/"+url.PathEscape(id), nil, nil)
}

// Nodes lists every enrolled node, sorted by name.
func (a *Client) Nodes(ctx context.Context) ([]wire.Node, error) {
	var nodes []wire.Node
	err := a.do(ctx, http.MethodGet, wire.PathAdminNodes, nil, &nodes)
	return nodes, err
}

// DeleteNode removes the named node: it leaves the network, every peer gets
// a map without it, and its stream is ended.
func (a *Client) DeleteNode(ctx context.Context, name string) error {
	return a.do(ctx, http.MethodDelete, wire.PathAdminNodes+"/"+url.PathEscape(name), nil, nil)
}

// RevokeNode revokes the named node for good: its stream ends, every peer
// gets a map without it, and its identity and WireGuard keys are refused
// from then on. It returns the revocation record.
func (a *Client) RevokeNode(ctx context.Context, name, reason string) (wire.Revocation, error) {
	var rec wire.Revocation
	err := a.do(ctx, http.MethodPost, wire.PathAdminNodes+"/"+url.PathEscape(name)+wire.PathAdminRevoke, wire.RevokeRequest{Reason: reason}, &rec)
	return rec, err
}

// Revocations lists revoked and expired identities, newest first.
func (a *Client) Revocations(ctx context.Context) ([]wire.Revocation, error) {
	var recs []wire.Revocation
	err := a.do(ctx, http.MethodGet, wire.PathAdminRevocations, nil, &recs)
	return recs, err
}

func (a *Client) do(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return fmt.Errorf("adminclient: encode %s request: %w", path, err)
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, strings.TrimSuffix(a.cred.URL, "/")+path, body)
	if err != nil {
		return fmt.Errorf("adminclient: %s %s: %w", method, path, err)
	}
	req.Header.Set(wire.HeaderProtocol, strconv.Itoa(wire.ProtocolVersion))
	req.Header.Set(wire.HeaderAdmin, "Bearer "+a.cred.Secret)
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := a.hc.Do(req)
	if err != nil {
		return fmt.Errorf("adminclient: %s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, wire.MaxStreamLine))
	if err != nil {
		return fmt.Errorf("adminclient: %s %s: read response: %w", method, path, err)
	}
	if resp.StatusCode/100 != 2 {
		var er wire.ErrorResponse
		if json.Unmarshal(b, &er) != nil || er.Code == "" {
			return &wire.APIError{Status: resp.StatusCode, Code: wire.CodeInternal, Message: strings.TrimSpace(string(b))}
		}
		return &wire.APIError{Status: resp.StatusCode, Code: er.Code, Message: er.Error}
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(b, out); err != nil {
		return fmt.Errorf("adminclient: %s %s: decode response: %w", method, path, err)
	}
	return nil
}

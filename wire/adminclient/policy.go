package adminclient

import (
	"context"
	"net/http"
	"net/url"
	"strconv"

	"github.com/agentnet/agentnet/wire"
)

// SetPolicy submits a policy document. A refusal is a *wire.APIError with
// Code wire.CodePolicyInvalid or wire.CodePolicyTestsFailed whose Message
// lists every reason, one per line.
func (a *Client) SetPolicy(ctx context.Context, req wire.PolicySetRequest) (wire.PolicySetResponse, error) {
	var resp wire.PolicySetResponse
	err := a.do(ctx, http.MethodPut, wire.PathAdminPolicy, req, &resp)
	return resp, err
}

// GetPolicy returns policy version v, or the one in force if v is 0 (the
// built-in default has Version 0).
func (a *Client) GetPolicy(ctx context.Context, v uint64) (wire.PolicyRecord, error) {
	path := wire.PathAdminPolicy
	if v != 0 {
		path += "?version=" + strconv.FormatUint(v, 10)
	}
	var rec wire.PolicyRecord
	err := a.do(ctx, http.MethodGet, path, nil, &rec)
	return rec, err
}

// Why asks whether the policy in force allows one connection.
func (a *Client) Why(ctx context.Context, req wire.WhyRequest) (wire.WhyResponse, error) {
	var resp wire.WhyResponse
	err := a.do(ctx, http.MethodPost, wire.PathAdminPolicyWhy, req, &resp)
	return resp, err
}

// SetNodeTags replaces the tags of the named node and returns the node.
// Every node gets a new map compiled with them.
func (a *Client) SetNodeTags(ctx context.Context, name string, tags []string) (wire.Node, error) {
	if tags == nil {
		tags = []string{}
	}
	var n wire.Node
	err := a.do(ctx, http.MethodPut, wire.PathAdminNodes+"/"+url.PathEscape(name)+wire.PathNodeTagsSuffix, wire.SetTagsRequest{Tags: tags}, &n)
	return n, err
}

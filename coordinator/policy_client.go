package coordinator

import (
	"context"
	"net/http"
	"net/url"
	"strconv"

	"github.com/agentnet/agentnet/wire"
)

// SetPolicy submits a policy document. A refusal is an *APIError with Code
// CodePolicyInvalid or CodePolicyTestsFailed whose Message lists every
// reason, one per line.
func (a *AdminClient) SetPolicy(ctx context.Context, req PolicySetRequest) (PolicySetResponse, error) {
	var resp PolicySetResponse
	err := a.do(ctx, http.MethodPut, PathAdminPolicy, req, &resp)
	return resp, err
}

// GetPolicy returns policy version v, or the one in force if v is 0 (the
// built-in default has Version 0).
func (a *AdminClient) GetPolicy(ctx context.Context, v uint64) (PolicyRecord, error) {
	path := PathAdminPolicy
	if v != 0 {
		path += "?version=" + strconv.FormatUint(v, 10)
	}
	var rec PolicyRecord
	err := a.do(ctx, http.MethodGet, path, nil, &rec)
	return rec, err
}

// Why asks whether the policy in force allows one connection.
func (a *AdminClient) Why(ctx context.Context, req WhyRequest) (WhyResponse, error) {
	var resp WhyResponse
	err := a.do(ctx, http.MethodPost, PathAdminPolicyWhy, req, &resp)
	return resp, err
}

// SetNodeTags replaces the tags of the named node and returns the node.
// Every node gets a new map compiled with them.
func (a *AdminClient) SetNodeTags(ctx context.Context, name string, tags []string) (wire.Node, error) {
	if tags == nil {
		tags = []string{}
	}
	var n wire.Node
	err := a.do(ctx, http.MethodPut, wire.PathAdminNodes+"/"+url.PathEscape(name)+pathNodeTagsSuffix, SetTagsRequest{Tags: tags}, &n)
	return n, err
}

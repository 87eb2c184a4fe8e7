package overlay

import (
	"context"
	"crypto/ed25519"
	"net/http"

	"github.com/agentnet/agentnet/wire"
	"github.com/agentnet/agentnet/wire/controlclient"
)

// controlClient is the node's control client: wire/controlclient signing
// with the node's identity key, pinned to its coordinator. The methods
// below name what the node asks of the coordinator.
type controlClient struct {
	*controlclient.Client
	http *http.Client // bounded requests (the client's HTTP())
}

func newControlClient(url, pin string, identity ed25519.PrivateKey) *controlClient {
	c := controlclient.New(controlclient.Config{URL: url, Pin: pin, Identity: identity})
	return &controlClient{Client: c, http: c.HTTP()}
}

func (c *controlClient) close() { c.Close() }

// ControlError is a refusal by the coordinator (controlclient.Error).
// Permanent errors (bad token, name taken, version mismatch) must not be
// retried.
type ControlError = controlclient.Error

// isPermanent reports whether retrying cannot help (controlclient.IsPermanent).
func isPermanent(err error) bool { return controlclient.IsPermanent(err) }

func (c *controlClient) newRequest(ctx context.Context, method, path string, body any) (*http.Request, error) {
	return c.NewRequest(ctx, method, path, body)
}

// checkResponse turns a non-2xx answer into a *ControlError and checks the
// coordinator's protocol version.
func checkResponse(resp *http.Response) error { return controlclient.CheckResponse(resp) }

func (c *controlClient) enroll(ctx context.Context, req wire.EnrollRequest) (*wire.EnrollResponse, error) {
	return c.Enroll(ctx, req)
}

func (c *controlClient) update(ctx context.Context, req wire.UpdateRequest) (*wire.Signed, error) {
	return c.Update(ctx, req)
}

// probe asks the coordinator to have peer probe paths to us now (both sides
// then get a MsgProbe). A coordinator without the endpoint answers 404.
func (c *controlClient) probe(ctx context.Context, req wire.ProbeRequest) error {
	return c.Probe(ctx, req)
}

// streamMaps opens the netmap stream, asking for deltas, and calls onMap for
// every map and delta message until the stream ends, onMap fails, ctx is
// done, or the coordinator is silent for 3 keepalives.
func (c *controlClient) streamMaps(ctx context.Context, onMap func(*wire.StreamMessage) error, onProbe func(*wire.Probe)) error {
	return c.StreamMaps(ctx, onMap, onProbe)
}

package adminclient

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"strconv"
	"testing"

	"github.com/agentnet/agentnet/wire"
)

// fakeCoordinator serves the admin API paths the tests call: it checks the
// secret and protocol header and answers like the coordinator does.
func fakeCoordinator(t *testing.T) (*httptest.Server, wire.AdminCred) {
	t.Helper()
	mux := http.NewServeMux()
	refuse := func(w http.ResponseWriter, status int, code, msg string) {
		w.WriteHeader(status)
		json.NewEncoder(w).Encode(wire.ErrorResponse{Code: code, Error: msg, ProtocolVersion: wire.ProtocolVersion})
	}
	auth := func(h http.HandlerFunc) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			if r.Header.Get(wire.HeaderAdmin) != "Bearer s3cret" {
				refuse(w, http.StatusUnauthorized, wire.CodeUnauthorized, "admin secret missing or wrong")
				return
			}
			if r.Header.Get(wire.HeaderProtocol) != strconv.Itoa(wire.ProtocolVersion) {
				refuse(w, http.StatusBadRequest, wire.CodeVersion, "no protocol header")
				return
			}
			h(w, r)
		}
	}
	mux.HandleFunc("PUT "+wire.PathAdminNodes+"/{name}"+wire.PathNodeTagsSuffix, auth(func(w http.ResponseWriter, r *http.Request) {
		var req wire.SetTagsRequest
		b, _ := io.ReadAll(r.Body)
		if err := json.Unmarshal(b, &req); err != nil || req.Tags == nil {
			refuse(w, http.StatusBadRequest, wire.CodeBadRequest, "tags must be a list: "+string(b))
			return
		}
		json.NewEncoder(w).Encode(wire.Node{Name: r.PathValue("name"), Tags: req.Tags})
	}))
	mux.HandleFunc("PUT "+wire.PathAdminPolicy, auth(func(w http.ResponseWriter, r *http.Request) {
		refuse(w, http.StatusUnprocessableEntity, wire.CodePolicyInvalid, "policy refused, it is not valid:\nline 1: oops")
	}))
	mux.HandleFunc("GET "+wire.PathAdminNodes, auth(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusBadGateway)
		io.WriteString(w, "upstream went away\n")
	}))
	srv := httptest.NewUnstartedServer(mux)
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // the wrong-pin client hangs up mid-handshake
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv, wire.AdminCred{URL: srv.URL, Pin: wire.CertPin(srv.Certificate()), Secret: "s3cret"}
}

func TestClientDecodes(t *testing.T) {
	_, cred := fakeCoordinator(t)
	ctx := context.Background()
	c := New(cred)

	n, err := c.SetNodeTags(ctx, "a b", nil) // nil tags go out as [] (remove all); the name is escaped
	if err != nil || n.Name != "a b" || len(n.Tags) != 0 {
		t.Fatalf("SetNodeTags = %+v, %v", n, err)
	}

	_, err = c.SetPolicy(ctx, wire.PolicySetRequest{Text: "oops"})
	var ae *wire.APIError
	if !errors.As(err, &ae) || ae.Status != http.StatusUnprocessableEntity || ae.Code != wire.CodePolicyInvalid || ae.Message != "policy refused, it is not valid:\nline 1: oops" {
		t.Fatalf("SetPolicy refusal = %#v", err)
	}

	_, err = c.Nodes(ctx) // a non-JSON error body: CodeInternal with the text
	if !errors.As(err, &ae) || ae.Status != http.StatusBadGateway || ae.Code != wire.CodeInternal || ae.Message != "upstream went away" {
		t.Fatalf("Nodes = %#v", err)
	}

	bad := cred
	bad.Secret = "guess"
	if _, err := New(bad).SetNodeTags(ctx, "x", nil); !errors.As(err, &ae) || ae.Code != wire.CodeUnauthorized {
		t.Fatalf("wrong secret: %v", err)
	}
}

func TestClientWrongPin(t *testing.T) {
	_, cred := fakeCoordinator(t)
	// Every httptest TLS server has the same certificate: pin another key.
	cred.Pin = wire.PinPrefix + base64.StdEncoding.EncodeToString(make([]byte, 32))
	if _, err := New(cred).Nodes(context.Background()); !errors.Is(err, wire.ErrPinMismatch) {
		t.Fatalf("wrong pin: %v, want wire.ErrPinMismatch", err)
	}
}

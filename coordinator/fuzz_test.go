package coordinator

import (
	"errors"
	"regexp"
	"strings"
	"testing"

	"github.com/agentnet/agentnet/wire"
)

// dnsLabel is validName's rule written independently, as an oracle.
var dnsLabel = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)

// FuzzEnrollRequest drives the coordinator's decode and validation of an
// enrollment body (parseEnrollRequest, then the name and token checks the
// transaction makes): it never panics, refuses with a 4xx apiError, and
// what it accepts is normalised and within bounds.
func FuzzEnrollRequest(f *testing.F) {
	wg := wire.WGKeyString([32]byte{1, 2, 3})
	tok := wire.Token{URL: "https://127.0.0.1:8443", Pin: wire.PinPrefix + "AAAA", ID: "id", Secret: strings.Repeat("s", 20)}.String()
	for _, seed := range []string{
		`{"protocol_version":1,"token":"` + tok + `","name":"alpha","wg_key":"` + wg + `"}`,
		`{"protocol_version":1,"name":"alpha","wg_key":"` + wg + `","endpoints":["127.0.0.1:5000","[::ffff:127.0.0.1]:1","[::1]:2"]}`,
		`{"protocol_version":99,"name":"a","wg_key":"` + wg + `"}`,
		`{"name":"a","wg_key":"` + wg + `","endpoints":["0.0.0.0:1"]}`,
		`{"name":"a","wg_key":"` + wg + `","endpoints":["127.0.0.1:0"]}`,
		`{"name":"a","wg_key":"` + wg + `","extra":1}`,
		`{"name":"a","wg_key":"` + wg + `"} {}`,
		`{"name":"-bad-","wg_key":"AAAA"}`,
		`{"name":"a","wg_key":"` + wg + `","endpoints":[` + strings.Repeat(`"127.0.0.1:1",`, 16) + `"127.0.0.1:1"]}`,
		`null`, `[]`, `"x"`, ``, `{"name":"\u00e9"}`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		req, err := parseEnrollRequest(body)
		if err != nil {
			var ae *apiError
			if !errors.As(err, &ae) || ae.status < 400 || ae.status >= 500 {
				t.Fatalf("refusal %v is not a 4xx apiError", err)
			}
			if ae.code != wire.CodeBadRequest && ae.code != wire.CodeVersion {
				t.Fatalf("refusal code %q, want %s or %s", ae.code, wire.CodeBadRequest, wire.CodeVersion)
			}
			return
		}
		if _, err := wire.ParseWGKey(req.WGKey); err != nil {
			t.Fatalf("accepted a bad WireGuard key %q", req.WGKey)
		}
		if req.ProtocolVersion != 0 && wire.CheckVersion("node", req.ProtocolVersion) != nil {
			t.Fatalf("accepted protocol version %d", req.ProtocolVersion)
		}
		if len(req.Endpoints) > maxEndpoints {
			t.Fatalf("accepted %d endpoints", len(req.Endpoints))
		}
		for _, ep := range req.Endpoints {
			if !ep.IsValid() || ep.Port() == 0 || ep.Addr().IsUnspecified() || ep.Addr().Is4In6() || ep.Addr().Zone() != "" {
				t.Fatalf("accepted endpoint %v", ep)
			}
		}
		if validName(req.Name) != dnsLabel.MatchString(req.Name) {
			t.Fatalf("validName(%q) = %v, the DNS label rule says %v", req.Name, validName(req.Name), !validName(req.Name))
		}
		if _, err := wire.ParseToken(req.Token); err != nil && !errors.Is(err, wire.ErrBadToken) {
			t.Fatalf("token refusal %v is not ErrBadToken", err)
		}
	})
}

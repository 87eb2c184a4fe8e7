package coordinator

import (
	"errors"
	"strings"
	"testing"

	"github.com/agentnet/agentnet/wire"
)

// Fuzz targets for the signed node requests' bodies (issue 17 catalogue):
// each drives the decode and the validation its handler runs before it
// touches the store (handleUpdate, handleReport, handleProbe). They never
// panic, refuse with a 4xx apiError, and what they accept is within the
// bounds the handlers rely on.

func refusal4xx(t *testing.T, err error) {
	t.Helper()
	var ae *apiError
	if !errors.As(err, &ae) || ae.status < 400 || ae.status >= 500 {
		t.Fatalf("refusal %v is not a 4xx apiError", err)
	}
}

func FuzzUpdateRequest(f *testing.F) {
	wg := wire.WGKeyString([32]byte{1, 2, 3})
	for _, seed := range []string{
		`{"wg_key":"` + wg + `","endpoints":["127.0.0.1:5000","[::1]:2"]}`,
		`{"wg_key":"` + wg + `","disco_key":"` + wg + `","relayed":["192.0.2.1:3478"]}`,
		`{"wg_key":"` + wg + `","relayed":["[::ffff:192.0.2.1]:1","224.0.0.1:5"]}`,
		`{"wg_key":"` + wg + `","endpoints":["[::ffff:0.0.0.0]:1"]}`,
		`{"wg_key":"` + wg + `","endpoints":["[fe80::1%eth0]:1"]}`,
		`{"wg_key":"AAAA"}`, `{"wg_key":"` + wg + `"} {}`, `{"wg_key":"` + wg + `","x":1}`,
		`{"wg_key":"` + wg + `","endpoints":[` + strings.Repeat(`"127.0.0.1:1",`, 40) + `"127.0.0.1:1"]}`,
		`null`, ``, `[]`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		var req wire.UpdateRequest
		err := decodeStrict(body, &req)
		if err == nil {
			err = checkWGAndEndpoints(req.WGKey, req.Endpoints)
		}
		if err == nil {
			err = checkDisco(req.DiscoKey, req.Relayed)
		}
		if err != nil {
			refusal4xx(t, err)
			return
		}
		if _, err := wire.ParseWGKey(req.WGKey); err != nil {
			t.Fatalf("accepted WireGuard key %q", req.WGKey)
		}
		if req.DiscoKey != "" {
			if _, err := wire.ParseWGKey(req.DiscoKey); err != nil {
				t.Fatalf("accepted disco key %q", req.DiscoKey)
			}
		}
		if len(req.Endpoints) > maxEndpoints || len(req.Relayed) > maxRelayed {
			t.Fatalf("accepted %d endpoints, %d relayed", len(req.Endpoints), len(req.Relayed))
		}
		for _, ep := range append(req.Endpoints, req.Relayed...) {
			if !ep.IsValid() || ep.Port() == 0 || ep.Addr().IsUnspecified() || ep.Addr().Is4In6() {
				t.Fatalf("accepted address %v", ep)
			}
		}
		for _, ep := range req.Endpoints {
			if ep.Addr().Zone() != "" {
				t.Fatalf("accepted endpoint with a zone %v", ep)
			}
		}
	})
}

func FuzzReportRequest(f *testing.F) {
	for _, seed := range []string{
		`{"events":[{"kind":"denial","peer":"bravo","count":3}],"dropped":1}`,
		`{"events":[{"kind":"channel_up","peer":"b"},{"kind":"channel_down"}]}`,
		`{"events":[{"kind":"bogus"}]}`,
		`{"events":[{"kind":"denial","rule":"` + strings.Repeat("r", 300) + `"}]}`,
		`{"events":null}`, `{}`, `{"dropped":-1}`, `{"x":1}`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		var req wire.ReportRequest
		err := decodeStrict(body, &req)
		if err == nil {
			err = checkReport(&req)
		}
		if err != nil {
			refusal4xx(t, err)
			return
		}
		if len(req.Events) > wire.MaxReportEvents {
			t.Fatalf("accepted %d events", len(req.Events))
		}
		for _, e := range req.Events {
			switch e.Kind {
			case wire.ReportDenial, wire.ReportChannelUp, wire.ReportChannelDown:
			default:
				t.Fatalf("accepted kind %q", e.Kind)
			}
			for _, s := range []string{e.Peer, e.Dir, e.Proto, e.Rule, e.Reason, e.Path} {
				if len(s) > maxReportFieldLen {
					t.Fatalf("accepted a %d-byte field", len(s))
				}
			}
		}
	})
}

func FuzzProbeRequest(f *testing.F) {
	for _, seed := range []string{`{"peer":"bravo"}`, `{"peer":""}`, `{"peer":1}`, `{"peer":"a","x":2}`, `{"peer":"a"}[]`, `null`} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		var req wire.ProbeRequest
		if err := decodeStrict(body, &req); err != nil {
			refusal4xx(t, err)
			return
		}
		// The handler only compares the name with the snapshot's names
		// and quotes at most 70 bytes of it in a refusal.
		_ = refuse(404, wire.CodeNotFound, "no peer named %.70q", req.Peer)
	})
}

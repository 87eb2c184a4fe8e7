package coordinator

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/agentnet/agentnet/coordinator/audit"
	"github.com/agentnet/agentnet/wire"
	"github.com/agentnet/agentnet/wire/adminclient"
)

func readLines(t *testing.T, path string) [][]byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return bytes.SplitAfter(b, []byte("\n"))[:bytes.Count(b, []byte("\n"))]
}

func writeLines(t *testing.T, path string, lines [][]byte) {
	t.Helper()
	if err := os.WriteFile(path, bytes.Join(lines, nil), 0o600); err != nil {
		t.Fatal(err)
	}
}

func mustVerify(t *testing.T, path string, pub ed25519.PublicKey) audit.Result {
	t.Helper()
	res, err := audit.Verify(path, pub)
	if err != nil {
		t.Fatalf("audit.Verify: %v", err)
	}
	return res
}

func TestAuditBrokenLogRefusesStart(t *testing.T) {
	h := newHarness(t, nil)
	dir := h.cfg.DataDir
	h.token(wire.CreateTokenRequest{})
	if err := h.c.Close(); err != nil {
		t.Fatal(err)
	}
	path := audit.Path(dir)
	lines := readLines(t, path)
	lines[0] = bytes.Replace(lines[0], []byte(`"admin"`), []byte(`"eve"`), 1)
	writeLines(t, path, lines)

	cfg := Config{DataDir: dir, Listen: "127.0.0.1:0"}
	_, err := New(cfg)
	if !errors.Is(err, audit.ErrBroken) || !strings.Contains(err.Error(), "line 1 (seq 1): edited") || !strings.Contains(err.Error(), "--audit-reset") {
		t.Fatalf("New on a broken log: %v", err)
	}
	if got := readLines(t, path); !bytes.Equal(bytes.Join(got, nil), bytes.Join(lines, nil)) {
		t.Fatal("refused start changed the broken log")
	}

	cfg.AuditReset = true
	c, err := New(cfg)
	if err != nil {
		t.Fatalf("New with AuditReset: %v", err)
	}
	c.Close()
	aside, _ := filepath.Glob(path + ".broken-*")
	if len(aside) != 1 {
		t.Fatalf("broken log not set aside: %v", aside)
	}
	res := mustVerify(t, path, c.PublicKey())
	if !res.Intact {
		t.Fatalf("new log: %v", res.Bad)
	}
	var rec audit.Record
	json.Unmarshal(readLines(t, path)[0], &rec)
	if rec.Kind != audit.KindReset || rec.Details["previous"] != aside[0] || rec.Details["problem"] != audit.ProblemEdited {
		t.Errorf("first record of the new log: %+v", rec)
	}
}

// auditKinds returns the records of the coordinator's log (via the admin
// API) by kind.
func auditKinds(t *testing.T, h *harness) map[string][]audit.Record {
	t.Helper()
	page, err := h.admin.Audit(context.Background(), wire.MaxAuditPage, 0, true, 0)
	if err != nil {
		t.Fatalf("Audit: %v", err)
	}
	out := map[string][]audit.Record{}
	for _, raw := range page.Records {
		var r audit.Record
		if err := json.Unmarshal(raw, &r); err != nil {
			t.Fatal(err)
		}
		out[r.Kind] = append(out[r.Kind], r)
	}
	return out
}

func TestAuditCoordinatorEvents(t *testing.T) {
	h := newHarness(t, nil)
	tok := h.token(wire.CreateTokenRequest{Tags: []string{"tag:a"}})
	n := newTestNode(t, h.c)
	n.enroll(tok, "alpha")
	pt, err := wire.ParseToken(tok)
	if err != nil {
		t.Fatal(err)
	}
	if err := h.c.revokeToken(pt.ID); err != nil {
		t.Fatal(err)
	}
	bad := adminclient.New(wire.AdminCred{URL: h.c.URL(), Pin: h.c.Pin(), Secret: "wrong"})
	for range 5 {
		if _, err := bad.Nodes(context.Background()); err == nil {
			t.Fatal("wrong admin secret accepted")
		}
	}
	if err := h.admin.DeleteNode(context.Background(), "alpha"); err != nil {
		t.Fatal(err)
	}
	kinds := auditKinds(t, h)
	for kind, want := range map[string]int{audit.KindTokenCreate: 1, audit.KindTokenUse: 1, audit.KindEnroll: 1, audit.KindTokenRevoke: 1, audit.KindAdminLogin: 1, audit.KindRequestRefused: 1, audit.KindNodeRevoke: 1} {
		if got := len(kinds[kind]); got != want {
			t.Errorf("%d %s records, want %d", got, kind, want)
		}
	}
	if e := kinds[audit.KindEnroll]; len(e) == 1 && (e[0].Actor != n.did || e[0].Subject != "alpha" || e[0].Remote == "") {
		t.Errorf("enroll record %+v", e[0])
	}
	if l := kinds[audit.KindAdminLogin]; len(l) == 1 && (l[0].Details["result"] != "failure" || l[0].Remote != "127.0.0.1") {
		t.Errorf("admin_login record %+v", l[0])
	}
	if d := kinds[audit.KindNodeRevoke]; len(d) == 1 && (d[0].Subject != "alpha" || d[0].Details["did"] != n.did) {
		t.Errorf("node_revoke record %+v", d[0])
	}
	h.c.Close()
	res := mustVerify(t, audit.Path(h.cfg.DataDir), h.c.PublicKey())
	if !res.Intact || res.Unsigned != 0 {
		t.Errorf("log after Close: %+v", res)
	}
}

func TestAuditReportEndpoint(t *testing.T) {
	h := newHarness(t, nil)
	n := newTestNode(t, h.c)
	n.enroll(h.token(wire.CreateTokenRequest{}), "beta")
	report := wire.ReportRequest{Dropped: 3, Events: []wire.ReportEvent{
		{Kind: wire.ReportDenial, Peer: "alpha", Dir: "in", Proto: "tcp", Rule: "default-deny", Count: 7},
		{Kind: wire.ReportChannelUp, Peer: "alpha", Path: "direct"},
	}}
	if status, b, _ := n.do(http.MethodPost, wire.PathReport, mustJSON(t, report), nil); status != http.StatusNoContent {
		t.Fatalf("report: %d %s", status, b)
	}
	// Unknown kinds, oversized batches and unsigned requests are refused.
	for name, body := range map[string]wire.ReportRequest{
		"kind":  {Events: []wire.ReportEvent{{Kind: "rm -rf"}}},
		"many":  {Events: make([]wire.ReportEvent, wire.MaxReportEvents+1)},
		"field": {Events: []wire.ReportEvent{{Kind: wire.ReportDenial, Rule: strings.Repeat("x", 200)}}},
	} {
		if status, _, er := n.do(http.MethodPost, wire.PathReport, mustJSON(t, body), nil); status != http.StatusBadRequest {
			t.Errorf("%s: status %d %+v, want 400", name, status, er)
		}
	}
	// The burst is limited per node.
	limited := 0
	for range reportBurst + 5 {
		if status, _, er := n.do(http.MethodPost, wire.PathReport, mustJSON(t, wire.ReportRequest{}), nil); status == http.StatusTooManyRequests {
			if er.Code != wire.CodeRateLimited {
				t.Errorf("429 with code %q", er.Code)
			}
			limited++
		}
	}
	if limited < 5 {
		t.Errorf("%d of %d rapid reports limited, want at least 5", limited, reportBurst+5)
	}
	recs := auditKinds(t, h)[audit.KindNodeReport]
	if len(recs) == 0 || len(recs) > reportBurst {
		t.Fatalf("%d node_report records", len(recs))
	}
	r := recs[0]
	if r.Actor != n.did || r.ActorName != "beta" || r.Details["denied_packets"] != float64(7) || r.Details["channels_up"] != float64(1) || r.Details["dropped"] != float64(3) {
		t.Errorf("node_report record %+v", r)
	}
}

// TestAuditTailFollow runs in a synctest bubble over in-memory
// connections: synctest.Wait tells when the long poll is waiting, and the
// poll must answer the new record at once on the fake clock.
func TestAuditTailFollow(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newPipeHarness(t, nil)
		h.token(wire.CreateTokenRequest{})
		page, err := h.admin.Audit(context.Background(), 20, 0, false, 0)
		if err != nil || len(page.Records) != 1 || page.HeadSeq != 1 {
			t.Fatalf("tail: %v %+v", err, page)
		}
		got := make(chan wire.AuditPage, 1)
		go func() {
			p, err := h.admin.Audit(context.Background(), 20, page.HeadSeq, true, 10*time.Second)
			if err != nil {
				t.Error(err)
			}
			got <- p
		}()
		synctest.Wait() // the long poll is waiting
		start := time.Now()
		h.token(wire.CreateTokenRequest{})
		p := <-got
		if len(p.Records) != 1 || p.HeadSeq != 2 {
			t.Errorf("follow page %+v", p)
		}
		if d := time.Since(start); d != 0 {
			t.Errorf("long poll answered %v after the new record, want at once", d)
		}
		if _, err := h.admin.Audit(context.Background(), 5000, 0, false, 0); err == nil {
			t.Error("n=5000 accepted")
		}
	})
}

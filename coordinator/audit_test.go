package coordinator

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/agentnet/agentnet/wire"
)

func newKey(t *testing.T) ed25519.PrivateKey {
	t.Helper()
	_, k, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func pubOf(k ed25519.PrivateKey) ed25519.PublicKey { return k.Public().(ed25519.PublicKey) }

// openTestAudit opens an audit log in a temp dir with a checkpoint every
// cpEvery records.
func openTestAudit(t *testing.T, path string, key ed25519.PrivateKey, cpEvery int) *Audit {
	t.Helper()
	a, err := openAudit(auditConfig{Path: path, Key: key, Now: time.Now, Log: slog.New(slog.DiscardHandler), CheckpointEvery: cpEvery})
	if err != nil {
		t.Fatalf("openAudit: %v", err)
	}
	return a
}

// writeLog makes a closed log of n event records (plus checkpoints every
// cpEvery) and returns its path.
func writeLog(t *testing.T, key ed25519.PrivateKey, n, cpEvery int) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), fileAudit)
	a := openTestAudit(t, path, key, cpEvery)
	for i := range n {
		a.Record(AuditTokenCreate, "actor", "admin", "subject", fmt.Sprintf("tok%d", i), "n", i)
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	return path
}

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

func mustVerify(t *testing.T, path string, pub ed25519.PublicKey) AuditResult {
	t.Helper()
	res, err := VerifyAudit(path, pub)
	if err != nil {
		t.Fatalf("VerifyAudit: %v", err)
	}
	return res
}

func TestAuditAppendVerify(t *testing.T) {
	key := newKey(t)
	path := writeLog(t, key, 10, 4)
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("mode %v, want 0600", fi.Mode().Perm())
	}
	res := mustVerify(t, path, pubOf(key))
	if !res.Intact || res.Bad != nil {
		t.Fatalf("fresh log not intact: %v", res.Bad)
	}
	// 10 records, checkpoints after 4, 8 (counting events only) and at Close.
	if res.Records != 13 || res.Checkpoints != 3 || res.LastSeq != 13 || res.Unsigned != 0 || res.LastCheckpointSeq != 13 {
		t.Errorf("result %+v, want 13 records, 3 checkpoints, nothing unsigned", res)
	}
	lines := readLines(t, path)
	var rec AuditRecord
	if err := json.Unmarshal(lines[0], &rec); err != nil {
		t.Fatal(err)
	}
	if rec.Seq != 1 || rec.Prev != auditGenesis || rec.Kind != AuditTokenCreate || rec.Actor != "admin" || rec.Subject != "tok0" || len(rec.Hash) != 64 {
		t.Errorf("first record %+v", rec)
	}
	// Another coordinator's key does not verify the checkpoints.
	res = mustVerify(t, path, pubOf(newKey(t)))
	if res.Intact || res.Bad.Problem != AuditBadCheckpoint || res.Bad.Seq != 5 {
		t.Errorf("verify with another key: %v", res.Bad)
	}
}

// rechain recomputes every hash and prev from line from on, as a forger
// without the signing key would after editing a record.
func rechain(t *testing.T, lines [][]byte, from int) {
	t.Helper()
	prev := auditGenesis
	for i := range lines {
		rec, body, hash, err := parseAuditLine(bytes.TrimSuffix(lines[i], []byte("\n")))
		if err != nil {
			t.Fatal(err)
		}
		if i >= from {
			rec.Prev, rec.Hash = prev, ""
			line, h, err := encodeRecord(rec)
			if err != nil {
				t.Fatal(err)
			}
			lines[i], hash = line, h
		}
		_ = body
		prev = hash
	}
}

func TestAuditTamper(t *testing.T) {
	key := newKey(t)
	// 12 events with a checkpoint after every 5: seqs 1-5 events, 6 cp,
	// 7-11 events, 12 cp, 13-14 events, 15 cp (Close).
	for _, tc := range []struct {
		name    string
		tamper  func(lines [][]byte) [][]byte
		line    int
		seq     uint64
		problem string
	}{
		{"edit", func(l [][]byte) [][]byte {
			l[3] = bytes.Replace(l[3], []byte(`"tok3"`), []byte(`"tok9"`), 1)
			return l
		}, 4, 4, AuditEdited},
		{"edit seq", func(l [][]byte) [][]byte {
			l[3] = bytes.Replace(l[3], []byte(`"seq":4`), []byte(`"seq":5`), 1)
			return l
		}, 4, 5, AuditEdited},
		{"delete", func(l [][]byte) [][]byte { return append(l[:3:3], l[4:]...) }, 4, 5, AuditRemoved},
		{"delete first", func(l [][]byte) [][]byte { return l[1:] }, 1, 2, AuditRemoved},
		{"reorder", func(l [][]byte) [][]byte { l[3], l[4] = l[4], l[3]; return l }, 4, 5, AuditReordered},
		{"duplicate", func(l [][]byte) [][]byte { return append(l[:4:4], l[3:]...) }, 5, 4, AuditReordered},
		{"replace and rehash one", func(l [][]byte) [][]byte {
			l[3] = bytes.Replace(l[3], []byte(`"tok3"`), []byte(`"tok9"`), 1)
			rec, _, _, _ := parseAuditLine(bytes.TrimSuffix(l[3], []byte("\n")))
			rec.Hash = ""
			l[3], _, _ = encodeRecord(rec)
			return l
		}, 5, 5, AuditChainBroken},
		{"edit and rechain", func(l [][]byte) [][]byte {
			l[3] = bytes.Replace(l[3], []byte(`"tok3"`), []byte(`"tok9"`), 1)
			rechain(t, l, 3)
			return l
		}, 6, 6, AuditBadCheckpoint},
		{"forged checkpoint signature", func(l [][]byte) [][]byte {
			rec, _, _, _ := parseAuditLine(bytes.TrimSuffix(l[5], []byte("\n")))
			sig := rec.Details["sig"].(string)
			rec.Details["sig"] = strings.Repeat("A", len(sig))
			rec.Hash = ""
			l[5], _, _ = encodeRecord(rec)
			rechain(t, l, 5)
			return l
		}, 6, 6, AuditBadCheckpoint},
		{"garbage line", func(l [][]byte) [][]byte { l[7] = []byte("{\"seq\":8}\n"); return l }, 8, 8, AuditMalformed},
		{"empty line", func(l [][]byte) [][]byte { return append(l[:2:2], append([][]byte{[]byte("\n")}, l[2:]...)...) }, 3, 0, AuditMalformed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := writeLog(t, key, 12, 5)
			lines := readLines(t, path)
			if len(lines) != 15 {
				t.Fatalf("%d lines, want 15", len(lines))
			}
			writeLines(t, path, tc.tamper(lines))
			res := mustVerify(t, path, pubOf(key))
			if res.Intact || res.Bad == nil {
				t.Fatalf("tampered log verifies as intact")
			}
			if res.Bad.Line != tc.line || res.Bad.Seq != tc.seq || res.Bad.Problem != tc.problem {
				t.Errorf("first bad record %v; want line %d seq %d %s", res.Bad, tc.line, tc.seq, tc.problem)
			}
			if res.LastSeq >= uint64(tc.line) {
				t.Errorf("good records reach seq %d, past the bad line %d", res.LastSeq, tc.line)
			}
		})
	}
}

func TestAuditRestartContinuesChain(t *testing.T) {
	key := newKey(t)
	path := filepath.Join(t.TempDir(), fileAudit)
	for round := range 3 {
		a := openTestAudit(t, path, key, 100)
		seq, _ := a.Head()
		if want := uint64(round * 6); seq != want { // 5 events + the checkpoint of Close per round
			t.Errorf("round %d starts at seq %d, want %d", round, seq, want)
		}
		for i := range 5 {
			a.Record(AuditEnroll, "subject", fmt.Sprint(round, i))
		}
		if err := a.Close(); err != nil {
			t.Fatal(err)
		}
	}
	res := mustVerify(t, path, pubOf(key))
	if !res.Intact || res.Records != 18 || res.Checkpoints != 3 {
		t.Errorf("after 3 runs: %+v", res)
	}
}

func TestAuditTornLastLine(t *testing.T) {
	key := newKey(t)
	path := writeLog(t, key, 3, 100)
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString(`{"seq":5,"time":"2026-01-01T00:00:00Z","kind":"enr`)
	f.Close()
	res := mustVerify(t, path, pubOf(key))
	if !res.Intact || res.TornBytes == 0 || res.LastSeq != 4 {
		t.Fatalf("torn tail: %+v", res)
	}
	a := openTestAudit(t, path, key, 100)
	a.Record(AuditEnroll, "subject", "after")
	a.Close()
	res = mustVerify(t, path, pubOf(key))
	if !res.Intact || res.TornBytes != 0 || res.LastSeq != 7 {
		t.Fatalf("after recovery: %+v", res)
	}
	lines := readLines(t, path)
	var rec AuditRecord
	json.Unmarshal(lines[4], &rec)
	if rec.Kind != AuditRecovered || !strings.Contains(fmt.Sprint(rec.Details["torn"]), `"kind":"enr`) {
		t.Errorf("record 5 = %s, want audit_recovered keeping the torn bytes", lines[4])
	}
}

func TestAuditConcurrentWriters(t *testing.T) {
	key := newKey(t)
	path := filepath.Join(t.TempDir(), fileAudit)
	a := openTestAudit(t, path, key, 50)
	var wg sync.WaitGroup
	const writers, each = 8, 200
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				a.Record(AuditNodeReport, "actor", fmt.Sprintf("w%d", w), "i", i)
				if i%50 == 0 {
					a.Tail(0, false, 10)
				}
			}
		}()
	}
	wg.Wait()
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	res := mustVerify(t, path, pubOf(key))
	if !res.Intact || res.Records-res.Checkpoints != writers*each || res.Checkpoints != writers*each/50 {
		t.Errorf("after concurrent writes: %+v (bad %v)", res, res.Bad)
	}
}

func TestAuditRefusalAggregation(t *testing.T) {
	key := newKey(t)
	clock := &fakeClock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	path := filepath.Join(t.TempDir(), fileAudit)
	a, err := openAudit(auditConfig{Path: path, Key: key, Now: clock.Now, Log: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	for range 100 {
		a.RecordLimited(AuditRequestRefused, "127.0.0.1", "unauthorized", "path", "/v1/update")
	}
	a.RecordLimited(AuditRequestRefused, "127.0.0.2", "unauthorized")
	a.RecordLimited(AuditRequestRefused, "127.0.0.1", "not_found")
	if seq, _ := a.Head(); seq != 3 {
		t.Fatalf("%d records after a flood from one client, want 3 (one per remote and code)", seq)
	}
	clock.Add(auditRefusalWindow + time.Second)
	deadline := time.Now().Add(5 * time.Second)
	for {
		if seq, _ := a.Head(); seq == 4 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no aggregate record after the window ended")
		}
		time.Sleep(20 * time.Millisecond)
	}
	page, _ := a.Tail(3, true, 10)
	var rec AuditRecord
	json.Unmarshal(page.Records[0], &rec)
	if rec.Remote != "127.0.0.1" || rec.Details["code"] != "unauthorized" || rec.Details["suppressed"] != float64(99) {
		t.Errorf("aggregate record %s", page.Records[0])
	}
}

func TestAuditBrokenLogRefusesStart(t *testing.T) {
	h := newHarness(t, nil)
	dir := h.cfg.DataDir
	h.token(wire.CreateTokenRequest{})
	if err := h.c.Close(); err != nil {
		t.Fatal(err)
	}
	path := AuditPath(dir)
	lines := readLines(t, path)
	lines[0] = bytes.Replace(lines[0], []byte(`"admin"`), []byte(`"eve"`), 1)
	writeLines(t, path, lines)

	cfg := Config{DataDir: dir, Listen: "127.0.0.1:0"}
	_, err := New(cfg)
	if !errors.Is(err, ErrAuditBroken) || !strings.Contains(err.Error(), "line 1 (seq 1): edited") || !strings.Contains(err.Error(), "--audit-reset") {
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
	var rec AuditRecord
	json.Unmarshal(readLines(t, path)[0], &rec)
	if rec.Kind != AuditReset || rec.Details["previous"] != aside[0] || rec.Details["problem"] != AuditEdited {
		t.Errorf("first record of the new log: %+v", rec)
	}
}

// auditKinds returns the records of the coordinator's log (via the admin
// API) by kind.
func auditKinds(t *testing.T, h *harness) map[string][]AuditRecord {
	t.Helper()
	page, err := h.admin.Audit(context.Background(), wire.MaxAuditPage, 0, true, 0)
	if err != nil {
		t.Fatalf("Audit: %v", err)
	}
	out := map[string][]AuditRecord{}
	for _, raw := range page.Records {
		var r AuditRecord
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
	bad := NewAdminClient(AdminCred{URL: h.c.URL(), Pin: h.c.Pin(), Secret: "wrong"})
	for range 5 {
		if _, err := bad.Nodes(context.Background()); err == nil {
			t.Fatal("wrong admin secret accepted")
		}
	}
	if err := h.admin.DeleteNode(context.Background(), "alpha"); err != nil {
		t.Fatal(err)
	}
	kinds := auditKinds(t, h)
	for kind, want := range map[string]int{AuditTokenCreate: 1, AuditTokenUse: 1, AuditEnroll: 1, AuditTokenRevoke: 1, AuditAdminLogin: 1, AuditRequestRefused: 1, AuditNodeRevoke: 1} {
		if got := len(kinds[kind]); got != want {
			t.Errorf("%d %s records, want %d", got, kind, want)
		}
	}
	if e := kinds[AuditEnroll]; len(e) == 1 && (e[0].Actor != n.did || e[0].Subject != "alpha" || e[0].Remote == "") {
		t.Errorf("enroll record %+v", e[0])
	}
	if l := kinds[AuditAdminLogin]; len(l) == 1 && (l[0].Details["result"] != "failure" || l[0].Remote != "127.0.0.1") {
		t.Errorf("admin_login record %+v", l[0])
	}
	if d := kinds[AuditNodeRevoke]; len(d) == 1 && (d[0].Subject != "alpha" || d[0].Details["did"] != n.did) {
		t.Errorf("node_revoke record %+v", d[0])
	}
	h.c.Close()
	res := mustVerify(t, AuditPath(h.cfg.DataDir), h.c.PublicKey())
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
	recs := auditKinds(t, h)[AuditNodeReport]
	if len(recs) == 0 || len(recs) > reportBurst {
		t.Fatalf("%d node_report records", len(recs))
	}
	r := recs[0]
	if r.Actor != n.did || r.ActorName != "beta" || r.Details["denied_packets"] != float64(7) || r.Details["channels_up"] != float64(1) || r.Details["dropped"] != float64(3) {
		t.Errorf("node_report record %+v", r)
	}
}

func TestAuditTailFollow(t *testing.T) {
	h := newHarness(t, nil)
	h.token(wire.CreateTokenRequest{})
	page, err := h.admin.Audit(context.Background(), 20, 0, false, 0)
	if err != nil || len(page.Records) != 1 || page.HeadSeq != 1 {
		t.Fatalf("tail: %v %+v", err, page)
	}
	got := make(chan AuditPage, 1)
	go func() {
		p, err := h.admin.Audit(context.Background(), 20, page.HeadSeq, true, 10*time.Second)
		if err != nil {
			t.Error(err)
		}
		got <- p
	}()
	time.Sleep(200 * time.Millisecond) // the long poll is waiting
	start := time.Now()
	h.token(wire.CreateTokenRequest{})
	select {
	case p := <-got:
		if len(p.Records) != 1 || p.HeadSeq != 2 {
			t.Errorf("follow page %+v", p)
		}
		if d := time.Since(start); d > 2*time.Second {
			t.Errorf("long poll answered after %v", d)
		}
	case <-time.After(8 * time.Second):
		t.Fatal("long poll did not return on a new record")
	}
	// Older records than the in-memory ring come from the file.
	recs, err := readAuditRange(AuditPath(h.cfg.DataDir), 1, 2)
	if err != nil || len(recs) != 2 {
		t.Errorf("readAuditRange: %v, %d records", err, len(recs))
	}
	if _, err := h.admin.Audit(context.Background(), 5000, 0, false, 0); err == nil {
		t.Error("n=5000 accepted")
	}
}

func TestAuditTimedCheckpoint(t *testing.T) {
	key := newKey(t)
	path := filepath.Join(t.TempDir(), fileAudit)
	a, err := openAudit(auditConfig{Path: path, Key: key, Now: time.Now, Log: slog.New(slog.DiscardHandler), CheckpointInterval: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	a.Record(AuditEnroll, "subject", "x")
	deadline := time.Now().Add(5 * time.Second)
	for {
		if seq, _ := a.Head(); seq == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no checkpoint after the interval")
		}
		time.Sleep(20 * time.Millisecond)
	}
	// Nothing new: no further checkpoint.
	time.Sleep(500 * time.Millisecond)
	if seq, _ := a.Head(); seq != 2 {
		t.Errorf("seq %d after an idle interval, want 2 (no empty checkpoints)", seq)
	}
	res := mustVerify(t, path, pubOf(key))
	if !res.Intact || res.Checkpoints != 1 || res.Unsigned != 0 {
		t.Errorf("%+v", res)
	}
}

// BenchmarkAuditRecord measures one Record (encode, hash, write(2); fsync
// is batched in the background).
func BenchmarkAuditRecord(b *testing.B) {
	a, err := openAudit(auditConfig{Path: filepath.Join(b.TempDir(), fileAudit), Key: newKeyB(b), Now: time.Now, Log: slog.New(slog.DiscardHandler)})
	if err != nil {
		b.Fatal(err)
	}
	defer a.Close()
	for i := 0; b.Loop(); i++ {
		a.Record(AuditNodeReport, "actor", "did:key:z6MkexampleexampleexampleexampleexampleexampleX", "remote", "127.0.0.1:4242", "subject", "alpha", "i", i)
	}
}

// BenchmarkVerifyAudit measures VerifyAudit per record over a 20k-record log.
func BenchmarkVerifyAudit(b *testing.B) {
	key := newKeyB(b)
	path := filepath.Join(b.TempDir(), fileAudit)
	a, err := openAudit(auditConfig{Path: path, Key: key, Now: time.Now, Log: slog.New(slog.DiscardHandler)})
	if err != nil {
		b.Fatal(err)
	}
	const n = 20000
	for i := range n {
		a.Record(AuditNodeReport, "actor", "did:key:z6MkexampleexampleexampleexampleexampleexampleX", "remote", "127.0.0.1:4242", "subject", "alpha", "i", i)
	}
	a.Close()
	b.ResetTimer()
	for b.Loop() {
		res, err := VerifyAudit(path, pubOf(key))
		if err != nil || !res.Intact {
			b.Fatal(err, res.Bad)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/record")
}

func newKeyB(b *testing.B) ed25519.PrivateKey {
	_, k, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		b.Fatal(err)
	}
	return k
}

func TestAuditTailRingAndFile(t *testing.T) {
	key := newKey(t)
	a := openTestAudit(t, filepath.Join(t.TempDir(), fileAudit), key, 1_000_000)
	defer a.Close()
	const n = auditRing + 500
	for i := range n {
		a.Record(AuditEnroll, "i", i)
	}
	seqs := func(p AuditPage) []uint64 {
		var out []uint64
		for _, raw := range p.Records {
			var r AuditRecord
			json.Unmarshal(raw, &r)
			out = append(out, r.Seq)
		}
		return out
	}
	for _, tc := range []struct {
		after    uint64
		hasAfter bool
		n        int
		first    uint64
		count    int
	}{
		{0, false, 3, n - 2, 3},     // newest, from memory
		{n - 2, true, 10, n - 1, 2}, // after, from memory
		{100, true, 5, 101, 5},      // older than the ring: from the file
		{0, true, 2, 1, 2},          // from the start
		{n, true, 5, 0, 0},          // nothing newer
		{0, false, 2000, 1, int(n)}, // more than exist
	} {
		p, err := a.Tail(tc.after, tc.hasAfter, tc.n)
		if err != nil {
			t.Fatal(err)
		}
		got := seqs(p)
		if len(got) != tc.count || (tc.count > 0 && (got[0] != tc.first || got[len(got)-1] != tc.first+uint64(tc.count)-1)) || p.HeadSeq != n {
			t.Errorf("Tail(%d, %v, %d): %d records %v…, head %d; want %d from %d", tc.after, tc.hasAfter, tc.n, len(got), got[:min(3, len(got))], p.HeadSeq, tc.count, tc.first)
		}
	}
}

// crashAudit stops a as a kill -9 would: no final checkpoint, no fsync.
func crashAudit(a *Audit) {
	close(a.stop)
	<-a.done
	a.mu.Lock()
	defer a.mu.Unlock()
	a.closed = true
	a.f.Close()
}

// Issue 17, item 14: a coordinator that crashes every run before
// CheckpointEvery records signed nothing, however long its log grew: the
// count of unsigned records restarted at zero on every start.
func TestAuditCheckpointsSurviveCrashes(t *testing.T) {
	key := newKey(t)
	path := filepath.Join(t.TempDir(), fileAudit)
	const cycles, perCycle, every = 100, 3, 10
	for i := range cycles {
		a := openTestAudit(t, path, key, every)
		for j := range perCycle {
			a.Record(AuditEnroll, "subject", fmt.Sprint(i, j))
		}
		crashAudit(a)
	}
	res := mustVerify(t, path, pubOf(key))
	if !res.Intact || res.Checkpoints < cycles*perCycle/every-1 || res.Unsigned >= every {
		t.Errorf("after %d crash/restart cycles of %d records with a checkpoint every %d: %d checkpoints, %d unsigned records (%+v)",
			cycles, perCycle, every, res.Checkpoints, res.Unsigned, res)
	}
	t.Logf("%d cycles: %d checkpoints, %d unsigned records", cycles, res.Checkpoints, res.Unsigned)
}

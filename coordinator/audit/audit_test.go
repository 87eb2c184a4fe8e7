package audit

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/agentnet/agentnet/internal/clocktest"
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
func openTestAudit(t *testing.T, path string, key ed25519.PrivateKey, cpEvery int) *Log {
	t.Helper()
	a, err := Open(Config{Path: path, Key: key, Now: time.Now, Logger: slog.New(slog.DiscardHandler), CheckpointEvery: cpEvery})
	if err != nil {
		t.Fatalf("Open: %v", err)
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
		a.Record(KindTokenCreate, "actor", "admin", "subject", fmt.Sprintf("tok%d", i), "n", i)
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

func mustVerify(t *testing.T, path string, pub ed25519.PublicKey) Result {
	t.Helper()
	res, err := Verify(path, pub)
	if err != nil {
		t.Fatalf("Verify: %v", err)
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
	var rec Record
	if err := json.Unmarshal(lines[0], &rec); err != nil {
		t.Fatal(err)
	}
	if rec.Seq != 1 || rec.Prev != auditGenesis || rec.Kind != KindTokenCreate || rec.Actor != "admin" || rec.Subject != "tok0" || len(rec.Hash) != 64 {
		t.Errorf("first record %+v", rec)
	}
	// Another coordinator's key does not verify the checkpoints.
	res = mustVerify(t, path, pubOf(newKey(t)))
	if res.Intact || res.Bad.Problem != ProblemBadCheckpoint || res.Bad.Seq != 5 {
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
		}, 4, 4, ProblemEdited},
		{"edit seq", func(l [][]byte) [][]byte {
			l[3] = bytes.Replace(l[3], []byte(`"seq":4`), []byte(`"seq":5`), 1)
			return l
		}, 4, 5, ProblemEdited},
		{"delete", func(l [][]byte) [][]byte { return append(l[:3:3], l[4:]...) }, 4, 5, ProblemRemoved},
		{"delete first", func(l [][]byte) [][]byte { return l[1:] }, 1, 2, ProblemRemoved},
		{"reorder", func(l [][]byte) [][]byte { l[3], l[4] = l[4], l[3]; return l }, 4, 5, ProblemReordered},
		{"duplicate", func(l [][]byte) [][]byte { return append(l[:4:4], l[3:]...) }, 5, 4, ProblemReordered},
		{"replace and rehash one", func(l [][]byte) [][]byte {
			l[3] = bytes.Replace(l[3], []byte(`"tok3"`), []byte(`"tok9"`), 1)
			rec, _, _, _ := parseAuditLine(bytes.TrimSuffix(l[3], []byte("\n")))
			rec.Hash = ""
			l[3], _, _ = encodeRecord(rec)
			return l
		}, 5, 5, ProblemChainBroken},
		{"edit and rechain", func(l [][]byte) [][]byte {
			l[3] = bytes.Replace(l[3], []byte(`"tok3"`), []byte(`"tok9"`), 1)
			rechain(t, l, 3)
			return l
		}, 6, 6, ProblemBadCheckpoint},
		{"forged checkpoint signature", func(l [][]byte) [][]byte {
			rec, _, _, _ := parseAuditLine(bytes.TrimSuffix(l[5], []byte("\n")))
			sig := rec.Details["sig"].(string)
			rec.Details["sig"] = strings.Repeat("A", len(sig))
			rec.Hash = ""
			l[5], _, _ = encodeRecord(rec)
			rechain(t, l, 5)
			return l
		}, 6, 6, ProblemBadCheckpoint},
		{"garbage line", func(l [][]byte) [][]byte { l[7] = []byte("{\"seq\":8}\n"); return l }, 8, 8, ProblemMalformed},
		{"empty line", func(l [][]byte) [][]byte { return append(l[:2:2], append([][]byte{[]byte("\n")}, l[2:]...)...) }, 3, 0, ProblemMalformed},
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
			a.Record(KindEnroll, "subject", fmt.Sprint(round, i))
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
	a.Record(KindEnroll, "subject", "after")
	a.Close()
	res = mustVerify(t, path, pubOf(key))
	if !res.Intact || res.TornBytes != 0 || res.LastSeq != 7 {
		t.Fatalf("after recovery: %+v", res)
	}
	lines := readLines(t, path)
	var rec Record
	json.Unmarshal(lines[4], &rec)
	if rec.Kind != KindRecovered || !strings.Contains(fmt.Sprint(rec.Details["torn"]), `"kind":"enr`) {
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
				a.Record(KindNodeReport, "actor", fmt.Sprintf("w%d", w), "i", i)
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

// TestAuditRefusalAggregation runs in a synctest bubble: the log's
// background loop ticks on fake time, and the window is ended on the
// injected clock, so the aggregate record is due at the next tick.
func TestAuditRefusalAggregation(t *testing.T) {
	key := newKey(t)
	synctest.Test(t, func(t *testing.T) {
		clock := clocktest.New(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
		path := filepath.Join(t.TempDir(), fileAudit)
		a, err := Open(Config{Path: path, Key: key, Now: clock.Now, Logger: slog.New(slog.DiscardHandler)})
		if err != nil {
			t.Fatal(err)
		}
		defer a.Close()
		for range 100 {
			a.RecordLimited(KindRequestRefused, "127.0.0.1", "unauthorized", "path", "/v1/update")
		}
		a.RecordLimited(KindRequestRefused, "127.0.0.2", "unauthorized")
		a.RecordLimited(KindRequestRefused, "127.0.0.1", "not_found")
		if seq, _ := a.Head(); seq != 3 {
			t.Fatalf("%d records after a flood from one client, want 3 (one per remote and code)", seq)
		}
		clock.Add(auditRefusalWindow - time.Nanosecond)
		time.Sleep(auditSyncInterval) // fake time: a tick inside the window
		synctest.Wait()
		if seq, _ := a.Head(); seq != 3 {
			t.Fatalf("%d records before the window ended, want 3", seq)
		}
		clock.Add(time.Nanosecond)
		time.Sleep(auditSyncInterval) // fake time: the first tick after it
		synctest.Wait()
		if seq, _ := a.Head(); seq != 4 {
			t.Fatalf("%d records one tick after the window ended, want 4 (the aggregate)", seq)
		}
		page, _ := a.Tail(3, true, 10)
		var rec Record
		json.Unmarshal(page.Records[0], &rec)
		if rec.Remote != "127.0.0.1" || rec.Details["code"] != "unauthorized" || rec.Details["suppressed"] != float64(99) {
			t.Errorf("aggregate record %s", page.Records[0])
		}
	})
}

// TestAuditTimedCheckpoint runs in a synctest bubble, so the default
// checkpoint interval passes on fake time.
func TestAuditTimedCheckpoint(t *testing.T) {
	key := newKey(t)
	synctest.Test(t, func(t *testing.T) {
		path := filepath.Join(t.TempDir(), fileAudit)
		a, err := Open(Config{Path: path, Key: key, Now: time.Now, Logger: slog.New(slog.DiscardHandler)})
		if err != nil {
			t.Fatal(err)
		}
		defer a.Close()
		a.Record(KindEnroll, "subject", "x")
		time.Sleep(auditCheckpointInterval - time.Nanosecond) // fake time
		synctest.Wait()
		if seq, _ := a.Head(); seq != 1 {
			t.Fatalf("seq %d before the checkpoint interval, want 1", seq)
		}
		time.Sleep(auditSyncInterval) // fake time: the tick at the interval
		synctest.Wait()
		if seq, _ := a.Head(); seq != 2 {
			t.Fatalf("seq %d one tick after the checkpoint interval, want 2 (a checkpoint)", seq)
		}
		// Nothing new: no further checkpoint.
		time.Sleep(3 * auditCheckpointInterval) // fake time
		synctest.Wait()
		if seq, _ := a.Head(); seq != 2 {
			t.Errorf("seq %d after idle intervals, want 2 (no empty checkpoints)", seq)
		}
		res := mustVerify(t, path, pubOf(key))
		if !res.Intact || res.Checkpoints != 1 || res.Unsigned != 0 {
			t.Errorf("%+v", res)
		}
	})
}

// BenchmarkAuditRecord measures one Record (encode, hash, write(2); fsync
// is batched in the background).
func BenchmarkAuditRecord(b *testing.B) {
	a, err := Open(Config{Path: filepath.Join(b.TempDir(), fileAudit), Key: newKeyB(b), Now: time.Now, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		b.Fatal(err)
	}
	defer a.Close()
	for i := 0; b.Loop(); i++ {
		a.Record(KindNodeReport, "actor", "did:key:z6MkexampleexampleexampleexampleexampleexampleX", "remote", "127.0.0.1:4242", "subject", "alpha", "i", i)
	}
}

// BenchmarkVerifyAudit measures Verify per record over a 20k-record log.
func BenchmarkVerifyAudit(b *testing.B) {
	key := newKeyB(b)
	path := filepath.Join(b.TempDir(), fileAudit)
	a, err := Open(Config{Path: path, Key: key, Now: time.Now, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		b.Fatal(err)
	}
	const n = 20000
	for i := range n {
		a.Record(KindNodeReport, "actor", "did:key:z6MkexampleexampleexampleexampleexampleexampleX", "remote", "127.0.0.1:4242", "subject", "alpha", "i", i)
	}
	a.Close()
	b.ResetTimer()
	for b.Loop() {
		res, err := Verify(path, pubOf(key))
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
		a.Record(KindEnroll, "i", i)
	}
	seqs := func(p wire.AuditPage) []uint64 {
		var out []uint64
		for _, raw := range p.Records {
			var r Record
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
func crashAudit(a *Log) {
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
			a.Record(KindEnroll, "subject", fmt.Sprint(i, j))
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

// Package audit is the coordinator's tamper-evident audit log: an
// append-only, hash-chained JSONL file with checkpoints signed by the
// coordinator's map-signing key (Log), its verifier (Verify) and the reads
// behind the admin audit API (Tail). It imports wire and the standard
// library only, so 'agentnet audit verify' links no part of the server.
package audit

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"crypto/x509"
	"encoding"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/agentnet/agentnet/wire"
)

// The audit log is an append-only JSONL file, DataDir/audit.jsonl (0600),
// one Record per line. Each record carries the hash of the line before
// it (prev) and its own hash, so editing, removing or reordering a line
// breaks the chain at that line; every CheckpointEvery records or
// CheckpointInterval a checkpoint record signs the head hash with the
// coordinator's map-signing key, so rewriting the whole chain after an edit
// is caught too unless the rewriter holds wire.key.
//
// Line format (the hash covers exactly the bytes that were written):
//
//	{"seq":…,"time":…,"kind":…,…,"prev":"<hex>","hash":"<hex>"}\n
//	hash = hex(SHA-256(prev + "\n" + body)), body = the line without
//	its `,"hash":"…"` member (that is: the record encoded with no hash).
//
// Durability: every record is written with one write(2) as it happens, so
// it survives a crash of the process at once; fsync(2) is batched in a
// background goroutine (at most every auditSyncInterval, and right after
// every checkpoint), so a power loss may lose the last ~100 ms of records,
// never reorder them. A last
// line torn by a crash (no newline) is cut off at the next start and its
// bytes are kept inside an audit_recovered record.

// Record kinds.
const (
	KindEnroll         = "enroll"          // a node enrolled (new) or re-enrolled (known identity)
	KindTokenCreate    = "token_create"    // an admin created a join token
	KindTokenUse       = "token_use"       // a join token was redeemed
	KindTokenRevoke    = "token_revoke"    // an admin revoked a join token
	KindPolicyChange   = "policy_change"   // the policy document changed
	KindNodeRevoke     = "node_revoke"     // a node was removed or revoked
	KindKeyRotation    = "key_rotation"    // a key was rotated
	KindAdminLogin     = "admin_login"     // console login (success or failure), admin API auth failure
	KindRequestRefused = "request_refused" // an API request was refused (aggregated per remote and code)
	KindNodeReport     = "node_report"     // security events reported by a node
	KindCheckpoint     = "checkpoint"      // signed head hash
	KindReset          = "audit_reset"     // a broken log was set aside (--audit-reset)
	KindRecovered      = "audit_recovered" // a torn last line was cut off at start
)

// Defaults.
const (
	fileAudit                = "audit.jsonl"
	auditSyncInterval        = 100 * time.Millisecond
	auditCheckpointEvery     = 1000
	auditCheckpointInterval  = time.Minute
	auditRefusalWindow       = 10 * time.Second // one record per (kind, remote, code) per window
	auditMaxRefusalKeys      = 4096
	auditRing                = 1024    // recent lines kept in memory for tail
	auditMaxLine             = 1 << 20 // a longer line is malformed
	auditSigContext          = "agentnet-audit-checkpoint-v1\x00"
	auditTornEvidenceMaxSize = 4096
)

// auditGenesis is the prev of the first record of a log.
var auditGenesis = hex.EncodeToString(make([]byte, sha256.Size))

// Record is one line of the audit log. Actor is "admin", a node's
// did:key, or empty for an unauthenticated client; Remote is the client's
// address as the coordinator saw it.
type Record struct {
	Seq       uint64         `json:"seq"`
	Time      time.Time      `json:"time"`
	Kind      string         `json:"kind"`
	Actor     string         `json:"actor,omitempty"`
	ActorName string         `json:"actor_name,omitempty"`
	Remote    string         `json:"remote,omitempty"`
	Subject   string         `json:"subject,omitempty"`
	Details   map[string]any `json:"details,omitempty"`
	Prev      string         `json:"prev"`
	Hash      string         `json:"hash,omitempty"`
}

// checkpointDetails are the Details of a checkpoint record.
type checkpointDetails struct {
	HeadSeq uint64 `json:"head_seq"` // the record just before the checkpoint
	Head    string `json:"head"`     // its hash (equal to the checkpoint's prev)
	Key     string `json:"key"`      // fingerprint of the signing key
	Sig     string `json:"sig"`      // base64url Ed25519 over auditSigContext + head_seq + "\n" + head
}

func checkpointMessage(seq uint64, head string) []byte {
	return []byte(auditSigContext + strconv.FormatUint(seq, 10) + "\n" + head)
}

// Config configures a Log.
type Config struct {
	Path               string             // required
	Key                ed25519.PrivateKey // required: signs checkpoints
	Now                func() time.Time   // optional: every time read, records and the checkpoint timer; default time.Now
	Logger             *slog.Logger       // required
	Reset              bool               // optional: set a broken log aside and start a new one
	CheckpointEvery    int                // optional, default auditCheckpointEvery
	CheckpointInterval time.Duration      // optional, default auditCheckpointInterval
}

// Log is an open audit log. Record is safe for concurrent use and never
// blocks on fsync. A nil *Log records nothing.
type Log struct {
	cfg       Config
	stop      chan struct{}
	done      chan struct{}
	syncNow   chan struct{} // asks loop for an fsync now (a checkpoint was written)
	closeOnce sync.Once

	mu        sync.Mutex // guards the fields below
	f         *os.File
	size      int64 // bytes of whole records in the file
	seq       uint64
	head      string
	dirty     bool // written since the last fsync
	sinceCP   int  // records since the last checkpoint
	lastCP    time.Time
	ring      []auditLine // the newest ringLen lines; seq s at ring[s%auditRing]
	ringLen   int
	notify    chan struct{}
	refusals  map[refusalKey]*refusalAgg
	overflow  uint64 // refusals not recorded because refusals was full
	failed    error  // a write left the file unusable; nothing more is written
	writeErrs uint64
	closed    bool
}

type auditLine struct {
	seq  uint64
	line []byte // without the newline
}

type refusalKey struct{ kind, remote, code string }

type refusalAgg struct {
	recorded   time.Time // when the last record for this key was written
	suppressed uint64
	fields     []any // of the first suppressed refusal, for the aggregate record
}

// ErrBroken is returned by New when the audit log fails verification.
var ErrBroken = errors.New("audit log broken")

// Open verifies the log at cfg.Path and opens it for appending, or
// creates it. A log that fails verification is refused (ErrBroken)
// unless cfg.Reset, which renames it to PATH.broken-TIME and starts a new
// log whose first record says so.
func Open(cfg Config) (*Log, error) {
	if cfg.CheckpointEvery <= 0 {
		cfg.CheckpointEvery = auditCheckpointEvery
	}
	if cfg.CheckpointInterval <= 0 {
		cfg.CheckpointInterval = auditCheckpointInterval
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	pub := cfg.Key.Public().(ed25519.PublicKey)
	a := &Log{
		cfg:      cfg,
		stop:     make(chan struct{}),
		done:     make(chan struct{}),
		head:     auditGenesis,
		notify:   make(chan struct{}),
		syncNow:  make(chan struct{}, 1),
		ring:     make([]auditLine, auditRing),
		refusals: make(map[refusalKey]*refusalAgg),
		lastCP:   cfg.Now(),
	}
	var first []Record // written once the file is open
	res, err := Verify(cfg.Path, pub)
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return nil, fmt.Errorf("audit: audit log: %w", err)
	case !res.Intact && !cfg.Reset:
		return nil, fmt.Errorf("audit: %w: %s: %v; refusing to start so the evidence stays as it is. "+
			"Inspect it with 'agentnet audit verify --data DIR'; to keep it aside and start a new log, restart with --audit-reset",
			ErrBroken, cfg.Path, res.Bad)
	case !res.Intact:
		aside := cfg.Path + ".broken-" + cfg.Now().UTC().Format("20060102T150405Z")
		if err := os.Rename(cfg.Path, aside); err != nil {
			return nil, fmt.Errorf("audit: set broken audit log aside: %w", err)
		}
		cfg.Logger.Warn("coordinator: audit log broken; set aside, starting a new one (--audit-reset)",
			"path", aside, "reason", res.Bad.Problem, "line", res.Bad.Line, "seq", res.Bad.Seq)
		first = append(first, Record{Kind: KindReset, Actor: "admin", Details: map[string]any{
			"previous": aside, "problem": res.Bad.Problem, "line": res.Bad.Line, "bad_seq": res.Bad.Seq, "detail": res.Bad.Detail,
			"previous_last_good_seq": res.LastSeq, "previous_head": res.Head,
		}})
	default:
		// sinceCP counts from the log, not from this start: a coordinator
		// that crashes before CheckpointEvery records would otherwise never
		// sign anything (issue 17, item 14).
		a.seq, a.head, a.size, a.sinceCP = res.LastSeq, res.Head, res.ValidBytes, res.Unsigned
		if res.TornBytes > 0 {
			if err := os.Truncate(cfg.Path, res.ValidBytes); err != nil {
				return nil, fmt.Errorf("audit: cut torn last line of audit log: %w", err)
			}
			cfg.Logger.Warn("coordinator: audit log ended in a torn line (crash while writing); cut it off and kept its bytes in an audit_recovered record",
				"path", cfg.Path, "bytes", res.TornBytes)
			first = append(first, Record{Kind: KindRecovered, Details: map[string]any{
				"torn_bytes": res.TornBytes, "torn": string(res.Torn),
			}})
		}
	}
	a.f, err = os.OpenFile(cfg.Path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("audit: open audit log: %w", err)
	}
	if fi, err := a.f.Stat(); err == nil && fi.Mode().Perm()&0o077 != 0 {
		cfg.Logger.Warn("coordinator: audit log is readable by others; fixing its mode to 0600", "path", cfg.Path, "mode", fi.Mode().Perm())
		_ = a.f.Chmod(0o600)
	}
	a.mu.Lock()
	for _, r := range first {
		a.appendLocked(r)
	}
	a.mu.Unlock()
	go a.loop()
	return a, nil
}

// Record appends a record of kind. fields are slog-style key/value pairs:
// the keys "actor", "actor_name", "remote" and "subject" fill those record
// fields, every other pair goes into Details (errors and fmt.Stringers as
// their text). Record never fails the caller: a write error is logged and
// counted, and the log stops rather than write a broken chain.
func (a *Log) Record(kind string, fields ...any) {
	if a == nil {
		return
	}
	rec := buildRecord(kind, fields)
	a.mu.Lock()
	defer a.mu.Unlock()
	a.appendLocked(rec)
}

// RecordLimited is Record for events an attacker can repeat at will
// (refused requests, failed logins): at most one record per (kind, remote,
// code) per auditRefusalWindow; the ones in between are counted and written
// as one aggregate record (details "suppressed": N) when the window ends.
func (a *Log) RecordLimited(kind, remote, code string, fields ...any) {
	if a == nil {
		return
	}
	key := refusalKey{kind, remote, code}
	a.mu.Lock()
	defer a.mu.Unlock()
	now := a.cfg.Now()
	if agg, ok := a.refusals[key]; ok {
		if d := now.Sub(agg.recorded); d >= 0 && d < auditRefusalWindow {
			if agg.suppressed == 0 {
				agg.fields = fields
			}
			agg.suppressed++
			return
		}
		a.flushRefusalLocked(key, agg)
	}
	if len(a.refusals) >= auditMaxRefusalKeys {
		a.overflow++
		return
	}
	a.refusals[key] = &refusalAgg{recorded: now}
	a.appendLocked(buildRecord(kind, append([]any{"remote", remote, "code", code}, fields...)))
}

// flushRefusalLocked writes the aggregate record of key's suppressed
// events, if any, and forgets key.
func (a *Log) flushRefusalLocked(key refusalKey, agg *refusalAgg) {
	delete(a.refusals, key)
	if agg.suppressed == 0 {
		return
	}
	f := append([]any{"remote", key.remote, "code", key.code, "suppressed", agg.suppressed,
		"window_seconds", int(auditRefusalWindow / time.Second)}, agg.fields...)
	a.appendLocked(buildRecord(key.kind, f))
}

func buildRecord(kind string, fields []any) Record {
	rec := Record{Kind: kind}
	for i := 0; i < len(fields); i += 2 {
		key, ok := fields[i].(string)
		if !ok || i+1 == len(fields) {
			rec.detail("!badkey", fmt.Sprint(fields[i]))
			i--
			continue
		}
		v := fields[i+1]
		switch key {
		case "actor", "actor_name", "remote", "subject":
			s := fmt.Sprint(v)
			if len(s) > 256 {
				s = s[:256] + "…"
			}
			switch key {
			case "actor":
				rec.Actor = s
			case "actor_name":
				rec.ActorName = s
			case "remote":
				rec.Remote = s
			default:
				rec.Subject = s
			}
		default:
			rec.detail(key, auditValue(v))
		}
	}
	return rec
}

func (r *Record) detail(k string, v any) {
	if r.Details == nil {
		r.Details = make(map[string]any)
	}
	r.Details[k] = v
}

// auditValue makes v JSON-friendly: errors and Stringers become text
// (unless they marshal themselves).
func auditValue(v any) any {
	switch x := v.(type) {
	case nil, string, bool, int, int64, uint64, uint32, int32, float64:
		return x
	case json.Marshaler, encoding.TextMarshaler:
		return x
	case error:
		return x.Error()
	case time.Duration:
		return x.String()
	case fmt.Stringer:
		return x.String()
	}
	return v
}

// encodeRecord returns the line (with newline) and hash of rec, whose Hash
// must be empty.
func encodeRecord(rec Record) ([]byte, string, error) {
	body, err := json.Marshal(rec)
	if err != nil {
		return nil, "", err
	}
	sum := sha256.New()
	sum.Write([]byte(rec.Prev + "\n"))
	sum.Write(body)
	hash := hex.EncodeToString(sum.Sum(nil))
	line := make([]byte, 0, len(body)+len(hash)+12)
	line = append(line, body[:len(body)-1]...)
	line = append(line, `,"hash":"`...)
	line = append(line, hash...)
	line = append(line, "\"}\n"...)
	return line, hash, nil
}

// appendLocked stamps rec with the next seq, the time and prev, writes it,
// and writes a checkpoint when one is due. a.mu must be held.
func (a *Log) appendLocked(rec Record) {
	if a.closed || a.failed != nil {
		a.writeErrs++
		return
	}
	rec.Seq, rec.Time, rec.Prev, rec.Hash = a.seq+1, a.cfg.Now().UTC(), a.head, ""
	line, hash, err := encodeRecord(rec)
	if err != nil { // a detail value JSON cannot encode: keep the record, as text
		for k, v := range rec.Details {
			rec.Details[k] = fmt.Sprint(v)
		}
		if line, hash, err = encodeRecord(rec); err != nil {
			a.writeErrs++
			a.cfg.Logger.Error("coordinator: audit record not encodable", "reason", rec.Kind, "err", err)
			return
		}
	}
	if n, err := a.f.Write(line); err != nil {
		a.writeErrs++
		// A partial line would break the chain for every later record: cut
		// it off, or stop writing if even that fails.
		if terr := a.f.Truncate(a.size); terr != nil {
			a.failed = fmt.Errorf("write failed (%v) and the partial line could not be cut off (%v)", err, terr)
		}
		a.cfg.Logger.Error("coordinator: audit log write failed; record lost", "path", a.cfg.Path, "reason", rec.Kind, "bytes", n, "err", err, "stopped", a.failed != nil)
		return
	}
	a.size += int64(len(line))
	a.seq, a.head, a.dirty = rec.Seq, hash, true
	a.ring[rec.Seq%auditRing] = auditLine{seq: rec.Seq, line: line[:len(line)-1]}
	a.ringLen = min(a.ringLen+1, auditRing)
	close(a.notify)
	a.notify = make(chan struct{})
	if rec.Kind == KindCheckpoint {
		a.sinceCP, a.lastCP = 0, a.cfg.Now()
		select { // fsync soon, without holding up writers
		case a.syncNow <- struct{}{}:
		default:
		}
		return
	}
	a.sinceCP++
	if a.sinceCP >= a.cfg.CheckpointEvery {
		a.checkpointLocked()
	}
}

// checkpointLocked signs the head and appends the checkpoint (which also
// fsyncs). a.mu must be held.
func (a *Log) checkpointLocked() {
	if a.seq == 0 {
		return
	}
	d := checkpointDetails{
		HeadSeq: a.seq,
		Head:    a.head,
		Key:     wire.Fingerprint(a.cfg.Key.Public().(ed25519.PublicKey)),
		Sig:     base64.RawURLEncoding.EncodeToString(ed25519.Sign(a.cfg.Key, checkpointMessage(a.seq, a.head))),
	}
	a.appendLocked(Record{Kind: KindCheckpoint, Details: map[string]any{
		"head_seq": d.HeadSeq, "head": d.Head, "key": d.Key, "sig": d.Sig,
	}})
}

func (a *Log) syncLocked() {
	if !a.dirty {
		return
	}
	if err := a.f.Sync(); err != nil {
		a.writeErrs++
		a.cfg.Logger.Error("coordinator: audit log fsync failed", "path", a.cfg.Path, "err", err)
	}
	a.dirty = false
}

// loop fsyncs, writes time-based checkpoints and ends refusal windows.
func (a *Log) loop() {
	defer close(a.done)
	t := time.NewTicker(auditSyncInterval)
	defer t.Stop()
	for {
		select {
		case <-a.stop:
			return
		case <-t.C:
		case <-a.syncNow:
		}
		a.mu.Lock()
		now := a.cfg.Now()
		for k, agg := range a.refusals {
			if d := now.Sub(agg.recorded); d >= auditRefusalWindow || d < 0 {
				a.flushRefusalLocked(k, agg)
			}
		}
		if a.overflow > 0 && len(a.refusals) < auditMaxRefusalKeys {
			n := a.overflow
			a.overflow = 0
			a.appendLocked(buildRecord(KindRequestRefused, []any{"remote", "*", "suppressed", n, "reason", "too many distinct clients refused at once"}))
		}
		if a.sinceCP > 0 && now.Sub(a.lastCP) >= a.cfg.CheckpointInterval {
			a.checkpointLocked()
		}
		f, dirty := a.f, a.dirty
		a.dirty = false
		a.mu.Unlock()
		// fsync outside the lock: Record keeps writing meanwhile. Close
		// stops this loop before it closes f.
		if dirty {
			if err := f.Sync(); err != nil {
				a.cfg.Logger.Error("coordinator: audit log fsync failed", "path", a.cfg.Path, "err", err)
			}
		}
	}
}

// Close flushes pending aggregates, writes a final checkpoint (so a clean
// shutdown leaves every record signed), fsyncs and closes the file.
// Records after Close are dropped and counted.
func (a *Log) Close() error {
	if a == nil {
		return nil
	}
	first := false
	a.closeOnce.Do(func() { first = true })
	if !first {
		return nil
	}
	close(a.stop)
	<-a.done
	a.mu.Lock()
	defer a.mu.Unlock()
	for k, agg := range a.refusals {
		a.flushRefusalLocked(k, agg)
	}
	if a.sinceCP > 0 {
		a.checkpointLocked()
	}
	a.syncLocked()
	a.closed = true
	close(a.notify)
	a.notify = make(chan struct{})
	if err := a.f.Close(); err != nil {
		return fmt.Errorf("audit: close audit log: %w", err)
	}
	return nil
}

// Head returns the seq and hash of the last record.
func (a *Log) Head() (uint64, string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.seq, a.head
}

// KeyFile is the coordinator's map-signing key in its data dir (Ed25519,
// PKCS#8 PEM); it signs the audit checkpoints too.
const KeyFile = "netmap.key"

// LoadKey returns the public key that verifies the audit checkpoints of the
// coordinator in dataDir (the map-signing key, KeyFile). It never creates
// a key.
func LoadKey(dataDir string) (ed25519.PublicKey, error) {
	path := dataDir + string(os.PathSeparator) + KeyFile
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("audit: %s: %w; is %s a coordinator data dir?", path, err, dataDir)
	}
	blk, _ := pem.Decode(b)
	if blk == nil || blk.Type != "PRIVATE KEY" {
		return nil, fmt.Errorf("audit: %s is not a PEM private key", path)
	}
	k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
	if err != nil {
		return nil, fmt.Errorf("audit: parse %s: %w", path, err)
	}
	priv, ok := k.(ed25519.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("audit: %s is %T, want an Ed25519 key", KeyFile, k)
	}
	return priv.Public().(ed25519.PublicKey), nil
}

// Path returns the audit log's path in a coordinator data dir.
func Path(dataDir string) string {
	return dataDir + string(os.PathSeparator) + fileAudit
}

// parseAuditLine splits a line (without newline) into its record, the body
// the hash covers, and the stored hash.
func parseAuditLine(line []byte) (Record, []byte, string, error) {
	var rec Record
	const suffixLen = len(`,"hash":"`) + 64 + len(`"}`)
	if len(line) < suffixLen+2 || !bytes.HasPrefix(line[len(line)-suffixLen:], []byte(`,"hash":"`)) || !bytes.HasSuffix(line, []byte(`"}`)) {
		return rec, nil, "", errors.New("line does not end with a \"hash\" member")
	}
	hash := string(line[len(line)-suffixLen+len(`,"hash":"`) : len(line)-2])
	if _, err := hex.DecodeString(hash); err != nil {
		return rec, nil, "", errors.New("hash is not hex")
	}
	body := append(bytes.Clone(line[:len(line)-suffixLen]), '}')
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	dec.UseNumber()
	if err := dec.Decode(&rec); err != nil {
		return rec, nil, "", fmt.Errorf("not a JSON record: %v", err)
	}
	if dec.More() {
		return rec, nil, "", errors.New("trailing data after the record")
	}
	if rec.Hash != "" {
		return rec, nil, "", errors.New("a second \"hash\" member")
	}
	rec.Hash = hash
	return rec, body, hash, nil
}

func auditHash(prev string, body []byte) string {
	sum := sha256.New()
	sum.Write([]byte(prev + "\n"))
	sum.Write(body)
	return hex.EncodeToString(sum.Sum(nil))
}

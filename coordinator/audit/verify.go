package audit

import (
	"bufio"
	"bytes"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
)

// Problems Verify reports.
const (
	ProblemMalformed     = "malformed"                // not a record line (or too long)
	ProblemEdited        = "edited"                   // the record does not match its own hash
	ProblemRemoved       = "removed"                  // records are missing before this one
	ProblemReordered     = "reordered"                // this record is out of sequence
	ProblemChainBroken   = "chain_broken"             // prev is not the hash of the record before
	ProblemBadCheckpoint = "bad_checkpoint_signature" // a checkpoint does not verify
)

// Bad is the first record that fails verification.
type Bad struct {
	Line    int    `json:"line"` // 1-based line number in the file
	Seq     uint64 `json:"seq"`  // the seq the line claims (0 when unreadable)
	Problem string `json:"problem"`
	Detail  string `json:"detail"`
}

func (b *Bad) String() string {
	if b == nil {
		return "intact"
	}
	return fmt.Sprintf("line %d (seq %d): %s: %s", b.Line, b.Seq, b.Problem, b.Detail)
}

// Result is the outcome of Verify. When Bad is set, the counts
// describe the good records before it.
type Result struct {
	Intact            bool   `json:"intact"`
	Records           int    `json:"records"` // good records, checkpoints included
	Checkpoints       int    `json:"checkpoints"`
	LastSeq           uint64 `json:"last_seq"`
	Head              string `json:"head"`                // hash of the last good record
	LastCheckpointSeq uint64 `json:"last_checkpoint_seq"` // 0: none
	Unsigned          int    `json:"unsigned"`            // good records after the last checkpoint (protected by the chain only)
	TornBytes         int    `json:"torn_bytes"`          // bytes of a last line without newline (a crash while writing); not counted as broken
	ValidBytes        int64  `json:"valid_bytes"`         // length of the file up to the end of the last good record
	Bad               *Bad   `json:"bad,omitempty"`
	Torn              []byte `json:"-"` // the torn bytes, at most auditTornEvidenceMaxSize
}

// Verify checks the audit log at path: every line's hash, the chain of
// prev hashes, consecutive seqs from 1, and every checkpoint's signature
// under pub (the coordinator's map-signing key, see LoadKey). It stops
// at the first bad record and reports it in Result.Bad. The error is only
// for a file that cannot be read (fs.ErrNotExist when there is none).
//
// What it cannot see: the newest records cut off from the end (truncation),
// unless a later checkpoint's head was kept elsewhere (audit tail). A
// rewriter holding netmap.key can also forge a consistent log; keep copies
// of the checkpoints off the coordinator host.
func Verify(path string, pub ed25519.PublicKey) (Result, error) {
	res := Result{Head: auditGenesis}
	if len(pub) != ed25519.PublicKeySize {
		return res, errors.New("audit: verify audit log: no Ed25519 public key to check checkpoints with")
	}
	f, err := os.Open(path)
	if err != nil {
		return res, err
	}
	defer f.Close()
	lr := &lineReader{r: bufio.NewReaderSize(f, 64<<10)}
	bad := func(line int, seq uint64, problem, format string, args ...any) (Result, error) {
		res.Bad = &Bad{Line: line, Seq: seq, Problem: problem, Detail: fmt.Sprintf(format, args...)}
		return res, nil
	}
	expect := uint64(1)
	for {
		line, n, torn, err := lr.next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return res, fmt.Errorf("audit: read audit log %s: %w", path, err)
		}
		if line == nil {
			return bad(n, 0, ProblemMalformed, "line longer than %d bytes", auditMaxLine)
		}
		if torn {
			res.TornBytes = len(line)
			res.Torn = line[:min(len(line), auditTornEvidenceMaxSize)]
			break
		}
		rec, body, hash, err := parseAuditLine(line)
		if err != nil {
			return bad(n, lenientSeq(line), ProblemMalformed, "%v", err)
		}
		if got := auditHash(rec.Prev, body); got != hash {
			return bad(n, rec.Seq, ProblemEdited, "content does not match its hash (stored %.16s…, computed %.16s…): the record was changed after it was written", hash, got)
		}
		if rec.Seq != expect {
			switch {
			case rec.Seq > expect && lr.peekSeq() == expect:
				return bad(n, rec.Seq, ProblemReordered, "seq %d comes before seq %d: records were moved", rec.Seq, expect)
			case rec.Seq > expect:
				return bad(n, rec.Seq, ProblemRemoved, "seq %d follows seq %d: %d record(s) removed", rec.Seq, expect-1, rec.Seq-expect)
			default:
				return bad(n, rec.Seq, ProblemReordered, "seq %d after seq %d: records were moved or replayed", rec.Seq, expect-1)
			}
		}
		if rec.Prev != res.Head {
			return bad(n, rec.Seq, ProblemChainBroken, "prev %.16s… is not the hash of seq %d (%.16s…): a record before it was replaced", rec.Prev, expect-1, res.Head)
		}
		if rec.Kind == KindCheckpoint {
			if err := verifyCheckpoint(body, rec, pub); err != nil {
				return bad(n, rec.Seq, ProblemBadCheckpoint, "%v", err)
			}
			res.Checkpoints++
			res.LastCheckpointSeq = rec.Seq
			res.Unsigned = 0
		} else {
			res.Unsigned++
		}
		res.Records++
		res.LastSeq, res.Head = rec.Seq, hash
		res.ValidBytes += int64(len(line) + 1)
		expect++
	}
	res.Intact = true
	return res, nil
}

func verifyCheckpoint(body []byte, rec Record, pub ed25519.PublicKey) error {
	var cp struct {
		Details checkpointDetails `json:"details"`
	}
	if err := json.Unmarshal(body, &cp); err != nil {
		return fmt.Errorf("checkpoint details unreadable: %v", err)
	}
	d := cp.Details
	if d.HeadSeq != rec.Seq-1 || d.Head != rec.Prev {
		return fmt.Errorf("checkpoint names seq %d head %.16s…, but follows seq %d head %.16s…", d.HeadSeq, d.Head, rec.Seq-1, rec.Prev)
	}
	sig, err := base64.RawURLEncoding.DecodeString(d.Sig)
	if err != nil || !ed25519.Verify(pub, checkpointMessage(d.HeadSeq, d.Head), sig) {
		return fmt.Errorf("signature over head of seq %d does not verify with the coordinator key: the log was rewritten, or it belongs to another coordinator", d.HeadSeq)
	}
	return nil
}

// lineReader yields the lines of the log with one line of lookahead.
type lineReader struct {
	r    *bufio.Reader
	n    int
	peek *pendingLine
}

type pendingLine struct {
	line []byte
	torn bool
	err  error
}

// next returns the next line without its newline, its 1-based number, and
// whether it is a torn last line (no newline). A line over auditMaxLine
// comes back nil.
func (lr *lineReader) next() ([]byte, int, bool, error) {
	p := lr.peek
	lr.peek = nil
	if p == nil {
		p = lr.read()
	}
	if p.err != nil {
		return nil, lr.n, false, p.err
	}
	lr.n++
	return p.line, lr.n, p.torn, nil
}

func (lr *lineReader) read() *pendingLine {
	line := []byte{}
	tooLong := false
	for {
		frag, err := lr.r.ReadSlice('\n')
		if !tooLong && len(line)+len(frag) <= auditMaxLine+1 {
			line = append(line, frag...)
		} else {
			tooLong, line = true, nil // keep reading to the line's end
		}
		switch {
		case errors.Is(err, bufio.ErrBufferFull):
			continue
		case err == nil && tooLong:
			return &pendingLine{line: nil}
		case err == nil:
			return &pendingLine{line: bytes.TrimSuffix(line, []byte("\n"))}
		case err == io.EOF && !tooLong && len(line) == 0:
			return &pendingLine{err: io.EOF}
		case err == io.EOF:
			return &pendingLine{line: line, torn: true}
		default:
			return &pendingLine{err: err}
		}
	}
}

// peekSeq returns the seq of the line after the current one, or 0.
func (lr *lineReader) peekSeq() uint64 {
	if lr.peek == nil {
		lr.peek = lr.read()
	}
	if lr.peek.err != nil || lr.peek.torn || lr.peek.line == nil {
		return 0
	}
	return lenientSeq(lr.peek.line)
}

// lenientSeq is the seq a line claims, or 0 when it cannot be read.
func lenientSeq(line []byte) uint64 {
	var s struct {
		Seq uint64 `json:"seq"`
	}
	_ = json.Unmarshal(line, &s)
	return s.Seq
}

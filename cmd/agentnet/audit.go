package main

import (
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"strings"
	"time"

	"github.com/agentnet/agentnet/coordinator/audit"
	"github.com/agentnet/agentnet/wire"
	"github.com/agentnet/agentnet/wire/adminclient"
)

const auditUsage = "usage: agentnet audit verify --data DIR | agentnet audit tail --admin FILE [-n N] [--follow] [--json]"

func runAudit(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) > 0 && (args[0] == "-h" || args[0] == "--help") {
		fmt.Fprintf(stdout, "Usage: agentnet audit verify|tail [flags]\n\n"+
			"The coordinator keeps a tamper-evident audit log (DIR/audit.jsonl): a hash chain with\n"+
			"checkpoints signed by its map-signing key.\n\n"+
			"  verify --data DIR             check the whole log; exit 0 intact, 1 with the first bad record\n"+
			"  tail --admin FILE [-n N] [--follow] [--json]\n"+
			"                                print the newest records through the admin API\n\n"+
			"Run 'agentnet audit verify --help' or 'agentnet audit tail --help' for their flags.\n")
		return nil
	}
	if len(args) == 0 {
		return fmt.Errorf("%w: %s", errUsage, auditUsage)
	}
	switch args[0] {
	case "verify":
		return runAuditVerify(args[1:], stdout, stderr)
	case "tail":
		return runAuditTail(ctx, args[1:], stdout, stderr)
	}
	return fmt.Errorf("%w: unknown audit command %q; %s", errUsage, args[0], auditUsage)
}

// errAuditBroken makes 'audit verify' exit 1 after printing the bad record.
var errAuditBroken = errors.New("audit log is broken")

func runAuditVerify(args []string, stdout, stderr io.Writer) error {
	flags := newFlags("audit verify", "audit verify --data DIR [--key BASE64] [--json]",
		"Verify the coordinator's audit log DIR/audit.jsonl: every record's hash, the chain of prev hashes,\n"+
			"consecutive seqs and every checkpoint signature. Exit 0 when intact; exit 1 naming the first bad\n"+
			"record (line, seq, and whether it was edited, removed, reordered or has a bad checkpoint signature).\n"+
			"Works while the coordinator runs (it only reads).", stderr)
	data := flags.String("data", "", "coordinator data directory (required)")
	keyFlag := flags.String("key", "", "Ed25519 public key (base64) that signs checkpoints (default: the one of DIR/wire.key);\n"+
		"pass a copy kept elsewhere to also catch a log rewritten by someone holding DIR")
	asJSON := flags.Bool("json", false, "print the result as JSON")
	if err := parse(flags, args); err != nil {
		return err
	}
	if *data == "" || flags.NArg() != 0 {
		return fmt.Errorf("%w: usage: agentnet audit verify --data DIR", errUsage)
	}
	var pub ed25519.PublicKey
	if *keyFlag != "" {
		b, err := base64.StdEncoding.DecodeString(*keyFlag)
		if err != nil {
			b, err = base64.RawURLEncoding.DecodeString(*keyFlag)
		}
		if err != nil || len(b) != ed25519.PublicKeySize {
			return fmt.Errorf("%w: --key is not a base64 Ed25519 public key (32 bytes)", errUsage)
		}
		pub = b
	} else {
		var err error
		if pub, err = audit.LoadKey(*data); err != nil {
			return err
		}
	}
	path := audit.Path(*data)
	res, err := audit.Verify(path, pub)
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("no audit log at %s; it is created by 'agentnet coordinator --data %s'", path, *data)
	}
	if err != nil {
		return err
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(res); err != nil {
			return err
		}
	} else {
		printVerify(stdout, path, pub, res)
	}
	if !res.Intact {
		return fmt.Errorf("%w at %s", errAuditBroken, res.Bad)
	}
	return nil
}

func printVerify(w io.Writer, path string, pub ed25519.PublicKey, res audit.Result) {
	if !res.Intact {
		fmt.Fprintf(w, "%s: BROKEN at line %d (seq %d): %s\n  %s\n", path, res.Bad.Line, res.Bad.Seq, res.Bad.Problem, res.Bad.Detail)
		fmt.Fprintf(w, "  the %d records before it verify (last good seq %d)\n", res.Records, res.LastSeq)
		return
	}
	fmt.Fprintf(w, "%s: intact: %d records, %d checkpoints signed by %s, last seq %d, head %s\n",
		path, res.Records, res.Checkpoints, wire.Fingerprint(pub), res.LastSeq, res.Head)
	if res.Unsigned > 0 {
		fmt.Fprintf(w, "  %d records after the last checkpoint are protected by the hash chain only (the next checkpoint signs them)\n", res.Unsigned)
	}
	if res.TornBytes > 0 {
		fmt.Fprintf(w, "  the last line is torn (%d bytes, no newline: a crash while writing); the coordinator cuts it off at its next start and keeps its bytes in an audit_recovered record\n", res.TornBytes)
	}
}

func runAuditTail(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("audit tail", "audit tail --admin FILE [-n N] [--follow] [--json]",
		"Print the newest audit records through the coordinator's admin API (oldest first).\n"+
			"--json prints each record exactly as stored (one JSON object per line, hashes included).", stderr)
	admin := fs.String("admin", "", "admin credential file written by the coordinator (required)")
	n := fs.Int("n", 20, fmt.Sprintf("number of records to print (1..%d)", wire.MaxAuditPage))
	follow := fs.Bool("follow", false, "keep printing new records as they are written, until interrupted")
	asJSON := fs.Bool("json", false, "print raw records, one JSON object per line")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *admin == "" || fs.NArg() != 0 {
		return fmt.Errorf("%w: usage: agentnet audit tail --admin FILE [-n N] [--follow]", errUsage)
	}
	if *n < 1 || *n > wire.MaxAuditPage {
		return fmt.Errorf("%w: -n %d: want 1..%d", errUsage, *n, wire.MaxAuditPage)
	}
	cred, err := wire.LoadAdminCred(*admin)
	if err != nil {
		return err
	}
	ac := adminclient.New(cred)
	page, err := ac.Audit(ctx, *n, 0, false, 0)
	if err != nil {
		return err
	}
	after := page.HeadSeq
	if err := printRecords(stdout, page.Records, *asJSON); err != nil {
		return err
	}
	for *follow {
		page, err := ac.Audit(ctx, wire.MaxAuditPage, after, true, 25*time.Second)
		if ctx.Err() != nil {
			return nil // interrupted
		}
		if err != nil {
			fmt.Fprintf(stderr, "agentnet audit tail: %v; retrying\n", err)
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(2 * time.Second):
			}
			continue
		}
		if err := printRecords(stdout, page.Records, *asJSON); err != nil {
			return err
		}
		if len(page.Records) > 0 {
			var last struct {
				Seq uint64 `json:"seq"`
			}
			if json.Unmarshal(page.Records[len(page.Records)-1], &last) == nil {
				after = last.Seq
			}
		}
	}
	return nil
}

// printRecords writes records raw (--json) or as one human line each:
// seq, time, kind, actor, remote, subject, then the details as JSON.
func printRecords(w io.Writer, recs []json.RawMessage, raw bool) error {
	for _, b := range recs {
		if raw {
			if _, err := fmt.Fprintf(w, "%s\n", b); err != nil {
				return err
			}
			continue
		}
		var r audit.Record
		if err := json.Unmarshal(b, &r); err != nil {
			return fmt.Errorf("coordinator sent an unreadable audit record: %w", err)
		}
		actor := r.Actor
		if len(actor) > 24 && strings.HasPrefix(actor, "did:") {
			actor = shortDID(actor)
		}
		if r.ActorName != "" {
			actor += "(" + r.ActorName + ")"
		}
		details := ""
		if len(r.Details) > 0 {
			d, _ := json.Marshal(r.Details)
			details = string(d)
		}
		if _, err := fmt.Fprintf(w, "%6d %s %-15s actor=%s remote=%s subject=%s %s\n", r.Seq, r.Time.Format(time.RFC3339),
			r.Kind, orDash(actor), orDash(r.Remote), orDash(r.Subject), details); err != nil {
			return err
		}
	}
	return nil
}

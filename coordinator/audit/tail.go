package audit

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/agentnet/agentnet/wire"
)

// The reads behind the admin audit API (wire.PathAdminAudit).

// Changed returns a channel closed at the next append (or Close).
func (a *Log) Changed() <-chan struct{} {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.notify
}

// Tail returns up to n records: with hasAfter, the oldest ones after seq
// after; otherwise the newest n. Recent records come from memory, older
// ones from the file.
func (a *Log) Tail(after uint64, hasAfter bool, n int) (wire.AuditPage, error) {
	a.mu.Lock()
	head := a.seq
	first, last := uint64(1), head // the wanted range
	if hasAfter {
		first, last = after+1, min(head, after+uint64(n))
	} else if head > uint64(n) {
		first = head - uint64(n) + 1
	}
	page := wire.AuditPage{HeadSeq: head, Records: []json.RawMessage{}}
	if first > last {
		a.mu.Unlock()
		return page, nil
	}
	if oldest := head - uint64(a.ringLen) + 1; a.ringLen > 0 && oldest <= first {
		for s := first; s <= last; s++ {
			page.Records = append(page.Records, json.RawMessage(a.ring[s%auditRing].line))
		}
		a.mu.Unlock()
		return page, nil
	}
	a.mu.Unlock()
	recs, err := readAuditRange(a.cfg.Path, first, last)
	page.Records = append(page.Records, recs...)
	return page, err
}

// readAuditRange reads the whole lines of seq first..last from the file.
func readAuditRange(path string, first, last uint64) ([]json.RawMessage, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("audit: read audit log: %w", err)
	}
	defer f.Close()
	br := bufio.NewReaderSize(f, 64<<10)
	var out []json.RawMessage
	for {
		line, err := br.ReadBytes('\n')
		if errors.Is(err, io.EOF) {
			return out, nil // a partial last line is being written: not yet a record
		}
		if err != nil {
			return out, fmt.Errorf("audit: read audit log: %w", err)
		}
		var s struct {
			Seq uint64 `json:"seq"`
		}
		if json.Unmarshal(line, &s) != nil || s.Seq < first {
			continue
		}
		if s.Seq > last {
			return out, nil
		}
		out = append(out, json.RawMessage(line[:len(line)-1]))
	}
}

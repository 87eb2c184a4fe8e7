//go:build unix

package coordinator

import (
	"context"
	"errors"
	"net"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/agentnet/agentnet/wire"
)

// lowerNoFile sets this process's soft file-descriptor limit to n for the
// rest of the test.
func lowerNoFile(t *testing.T, n uint64) {
	t.Helper()
	var old syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &old); err != nil {
		t.Skipf("getrlimit: %v", err)
	}
	if n >= old.Cur {
		t.Skipf("file-descriptor limit %d is already below %d", old.Cur, n)
	}
	lim := old
	lim.Cur = n
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Skipf("setrlimit: %v", err)
	}
	t.Cleanup(func() { syscall.Setrlimit(syscall.RLIMIT_NOFILE, &old) })
}

func openFDs(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/dev/fd")
	if err != nil {
		t.Skipf("count open files: %v", err)
	}
	return len(ents)
}

// Idle connections no longer exhaust the coordinator's file descriptors
// (issue 17, item 12: 20,000 idle TLS connections, then 'token list'
// timed out with nothing logged). The test process gets a file-descriptor
// limit with room for the flood's client ends and a capped coordinator,
// not for one that keeps every idle connection: an idle flood of 300
// connections from 127.0.0.1 then leaves a fresh admin request served
// within a bound, and a node stream opened before the flood still gets
// its maps. The displaced connections are counted and logged.
func TestConnFloodAdminStillServed(t *testing.T) {
	const flood, perSource = 300, 40
	h := newHarness(t, func(c *Config) { c.ConnLimits = ConnLimits{PerSource: perSource, Total: perSource + 8} })
	tok := h.token(wire.CreateTokenRequest{Reusable: true})
	a := newTestNode(t, h.c)
	a.enroll(tok, "alpha")
	sa := a.openStream(h.c.PublicKey())
	sa.waitMap(5*time.Second, "first map", func(*wire.Map) bool { return true })

	lowerNoFile(t, uint64(openFDs(t)+flood+perSource+64))
	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	var dialErr error
	for range flood {
		c, err := net.DialTimeout("tcp", h.c.ln.Addr().String(), 2*time.Second)
		if err != nil {
			dialErr = err
			break
		}
		conns = append(conns, c)
	}
	t.Logf("flood: %d idle connections open (dial error: %v)", len(conns), dialErr)

	const bound = 5 * time.Second
	ctx, cancel := context.WithTimeout(context.Background(), bound)
	defer cancel()
	start := time.Now()
	if _, err := h.admin.Nodes(ctx); err != nil {
		t.Fatalf("admin request under the flood: %v after %v", err, time.Since(start).Round(time.Millisecond))
	}
	t.Logf("admin request under the flood: %v", time.Since(start).Round(time.Millisecond))

	b := newTestNode(t, h.c)
	b.enroll(tok, "bravo")
	sa.waitMap(bound, "bravo in alpha's stream", func(m *wire.Map) bool { _, ok := m.Peer("bravo"); return ok })

	st := h.c.Stats()
	if st.ConnsShed[connCapSource] < uint64(len(conns)-perSource) || st.ConnsOpen > perSource+8 {
		t.Errorf("after %d idle connections: shed %v, refused %v, open %d; want >= %d shed (per source), at most %d open",
			len(conns), st.ConnsShed, st.ConnsRefused, st.ConnsOpen, len(conns)-perSource, perSource+8)
	}
	h.waitLog("the cap logged", "connection cap reached", "reason="+connCapSource)
}

// With small caps on a real coordinator: two node streams fill the cap
// (streams are never shed), so a third connection is refused, counted
// under its cap and logged; the per-source and total caps each have a case
// (all test traffic comes from 127.0.0.1, so the total case turns the
// per-source cap off).
func TestConnCapRefusalCounted(t *testing.T) {
	for _, c := range []struct {
		name   string
		lim    ConnLimits
		reason string
	}{
		{"per source", ConnLimits{PerSource: 2, Total: -1}, connCapSource},
		{"total", ConnLimits{PerSource: -1, Total: 2}, connCapTotal},
	} {
		t.Run(c.name, func(t *testing.T) {
			h := newHarness(t, func(cfg *Config) { cfg.ConnLimits = c.lim })
			tok := h.token(wire.CreateTokenRequest{Reusable: true})
			a, b := newTestNode(t, h.c), newTestNode(t, h.c)
			a.enroll(tok, "alpha")
			b.enroll(tok, "bravo")
			for _, n := range []*testNode{a, b} {
				n.openStream(h.c.PublicKey()).waitMap(5*time.Second, "first map", func(*wire.Map) bool { return true })
			}
			conn, err := net.DialTimeout("tcp", h.c.ln.Addr().String(), 2*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			conn.SetReadDeadline(time.Now().Add(5 * time.Second))
			if _, err := conn.Read(make([]byte, 1)); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
				t.Fatalf("third connection: read %v, want it closed at once", err)
			}
			h.waitStats("refusal counted", func(s Stats) bool { return s.ConnsRefused[c.reason] == 1 })
			h.waitLog("the refusal logged", "reason="+c.reason+" endpoint=127.0.0.1:", `result="refused: every connection busy"`)
		})
	}
}

// waitLog waits up to a second for a log line holding every one of parts
// (a refusal is counted before it is logged).
func (h *harness) waitLog(what string, parts ...string) {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	err := h.logs.Wait(ctx, func(logs string) bool {
		for _, line := range strings.Split(logs, "\n") {
			ok := true
			for _, p := range parts {
				ok = ok && strings.Contains(line, p)
			}
			if ok {
				return true
			}
		}
		return false
	})
	if err != nil {
		h.t.Fatalf("log: not %s within 1s (want a line with %q):\n%s", what, parts, h.logs.String())
	}
}

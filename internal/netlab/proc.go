package netlab

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// RunTimeout bounds Host.Run.
const RunTimeout = 30 * time.Second

// stopGrace is how long Stop waits after SIGTERM before SIGKILL.
const stopGrace = 5 * time.Second

// nsCommand makes `ip netns exec NS name args...`. `ip netns exec` execs the
// command in place, so the returned Cmd's process is the command itself. It
// gets its own process group and SIGKILL when the test process dies.
func nsCommand(ctx context.Context, ns, name string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", ns, name}, args...)...)
	cmd.SysProcAttr = nsProcAttr() // proc_linux.go
	cmd.WaitDelay = 2 * time.Second
	return cmd
}

// Exec returns a command that runs name inside the host's namespace
// (`ip netns exec NS name args...`), with /etc/netns/NS files bind-mounted
// over /etc. The caller runs and waits for it.
func (h *Host) Exec(ctx context.Context, name string, args ...string) *exec.Cmd {
	return nsCommand(ctx, h.NS, name, args...)
}

// Output runs name inside the namespace to completion and returns its stdout
// and stderr; err is non-nil when it fails or ctx expires. Use it to assert
// that something fails.
func (h *Host) Output(ctx context.Context, name string, args ...string) (stdout, stderr string, err error) {
	return output(ctx, h.NS, name, args...)
}

// Run runs name inside the namespace to completion (at most RunTimeout) and
// returns its stdout; on failure it calls t.Fatal with stdout and stderr.
func (h *Host) Run(t testing.TB, name string, args ...string) string {
	t.Helper()
	return run(t, h.NS, name, args...)
}

// Start starts a long-running process inside the namespace; see Proc.
func (h *Host) Start(t testing.TB, name string, args ...string) *Proc {
	t.Helper()
	return h.lab.start(t, h.Name, h.NS, name, args...)
}

// Exec, Run and Output for routers and NATs, e.g. to inspect routes or
// iptables counters.
func (r *Router) Exec(ctx context.Context, name string, args ...string) *exec.Cmd {
	return nsCommand(ctx, r.NS, name, args...)
}

// Run runs a command in the router namespace; see Host.Run.
func (r *Router) Run(t testing.TB, name string, args ...string) string {
	t.Helper()
	return run(t, r.NS, name, args...)
}

// Run runs a command in the NAT namespace; see Host.Run.
func (n *NAT) Run(t testing.TB, name string, args ...string) string {
	t.Helper()
	return run(t, n.NS, name, args...)
}

func output(ctx context.Context, ns, name string, args ...string) (string, string, error) {
	var so, se bytes.Buffer
	cmd := nsCommand(ctx, ns, name, args...)
	cmd.Stdout, cmd.Stderr = &so, &se
	err := cmd.Run()
	if err == nil && ctx.Err() != nil {
		err = ctx.Err()
	}
	return so.String(), se.String(), err
}

func run(t testing.TB, ns, name string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), RunTimeout)
	defer cancel()
	start := time.Now()
	so, se, err := output(ctx, ns, name, args...)
	if err != nil {
		if ctx.Err() != nil {
			err = fmt.Errorf("%w after %v", ctx.Err(), time.Since(start).Round(time.Millisecond))
		}
		t.Fatalf("netlab: in %s: %s %s: %v\nstdout:\n%s\nstderr:\n%s", ns, name, strings.Join(args, " "), err, so, se)
	}
	return so
}

// Proc is a long-running process inside a lab namespace. Its stdout lines are
// kept (Lines, WaitLine) and, like its stderr lines, logged through t.Log.
// It is stopped when the test that started it ends and when the lab closes.
type Proc struct {
	Name string // "host/command"

	cmd  *exec.Cmd
	logf func(format string, args ...any)

	mu      sync.Mutex
	lines   []string
	changed chan struct{} // closed and replaced on every new line and on exit
	quiet   bool          // no more t.Log (the test is over)

	done     chan struct{} // closed when the process has been waited for
	waitErr  error
	stopOnce sync.Once
	stopErr  error
}

func (l *Lab) start(t testing.TB, host, ns, name string, args ...string) *Proc {
	t.Helper()
	l.mu.Lock()
	closed := l.closed
	l.mu.Unlock()
	if closed {
		t.Fatalf("netlab: lab already closed")
	}
	p := &Proc{
		Name:    host + "/" + name,
		cmd:     nsCommand(context.Background(), ns, name, args...),
		logf:    t.Logf,
		changed: make(chan struct{}),
		done:    make(chan struct{}),
	}
	if i := strings.LastIndexByte(name, '/'); i >= 0 {
		p.Name = host + "/" + name[i+1:]
	}
	stdout := &lineWriter{fn: func(s string) { p.addLine(s); p.log("%s: %s", p.Name, s) }}
	stderr := &lineWriter{fn: func(s string) { p.log("%s [stderr]: %s", p.Name, s) }}
	p.cmd.Stdout, p.cmd.Stderr = stdout, stderr
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("netlab: start %s in %s: %v", name, ns, err)
	}
	l.mu.Lock()
	l.procs = append(l.procs, p)
	l.mu.Unlock()
	go func() {
		err := p.cmd.Wait()
		stdout.flush()
		stderr.flush()
		p.mu.Lock()
		p.waitErr = err
		close(p.changed)
		p.changed = make(chan struct{})
		p.mu.Unlock()
		close(p.done)
	}()
	t.Cleanup(func() {
		_ = p.Stop()
		p.mu.Lock()
		p.quiet = true
		p.mu.Unlock()
	})
	return p
}

func (p *Proc) log(format string, args ...any) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.quiet {
		p.logf(format, args...)
	}
}

func (p *Proc) addLine(s string) {
	p.mu.Lock()
	p.lines = append(p.lines, s)
	close(p.changed)
	p.changed = make(chan struct{})
	p.mu.Unlock()
}

// PID is the process id (of the command itself: `ip netns exec` execs it).
func (p *Proc) PID() int { return p.cmd.Process.Pid }

// Lines returns the stdout lines so far.
func (p *Proc) Lines() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.lines...)
}

// Done is closed when the process has exited.
func (p *Proc) Done() <-chan struct{} { return p.done }

// Err is the process's exit error once Done is closed (nil for exit 0).
func (p *Proc) Err() error {
	select {
	case <-p.done:
		return p.waitErr
	default:
		return nil
	}
}

// WaitLine waits up to timeout for a stdout line (printed before or after the
// call) matching re and returns re's submatches of the first such line. It
// fails when the process exits or the timeout passes first.
func (p *Proc) WaitLine(re *regexp.Regexp, timeout time.Duration) ([]string, error) {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	next := 0
	for {
		p.mu.Lock()
		lines, changed := p.lines[next:], p.changed
		next = len(p.lines)
		p.mu.Unlock()
		for _, s := range lines {
			if m := re.FindStringSubmatch(s); m != nil {
				return m, nil
			}
		}
		select {
		case <-p.done:
			// Lines added before exit were already seen if next caught up.
			p.mu.Lock()
			more := len(p.lines) > next
			p.mu.Unlock()
			if more {
				continue
			}
			return nil, fmt.Errorf("%s exited (%v) before printing a line matching %q", p.Name, p.waitErr, re)
		case <-changed:
		case <-deadline.C:
			return nil, fmt.Errorf("%s printed no line matching %q within %v", p.Name, re, timeout)
		}
	}
}

// Stop sends SIGTERM, then SIGKILL if the process is still running after 5 s,
// and waits for it. It returns nil when the process exited cleanly or was
// ended by our signal, and is safe to call more than once.
func (p *Proc) Stop() error {
	p.stopOnce.Do(func() {
		select {
		case <-p.done:
		default:
			_ = p.cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-p.done:
			case <-time.After(stopGrace):
				p.log("%s: still running %v after SIGTERM, sending SIGKILL", p.Name, stopGrace)
				_ = p.cmd.Process.Kill()
				<-p.done
			}
		}
		var ee *exec.ExitError
		if errors.As(p.waitErr, &ee) {
			if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() &&
				(ws.Signal() == syscall.SIGTERM || ws.Signal() == syscall.SIGKILL) {
				return
			}
		}
		if !errors.Is(p.waitErr, exec.ErrWaitDelay) {
			p.stopErr = p.waitErr
		}
	})
	return p.stopErr
}

// Kill sends SIGKILL (a crash: no cleanup in the process) and waits for the
// process to be reaped. It is a no-op once the process has exited.
func (p *Proc) Kill() {
	select {
	case <-p.done:
		return
	default:
	}
	_ = p.cmd.Process.Kill()
	<-p.done
}

// lineWriter calls fn for every complete line written to it.
type lineWriter struct {
	mu  sync.Mutex
	buf []byte
	fn  func(string)
}

func (w *lineWriter) Write(b []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf = append(w.buf, b...)
	for {
		i := bytes.IndexByte(w.buf, '\n')
		if i < 0 {
			break
		}
		w.fn(strings.TrimRight(string(w.buf[:i]), "\r"))
		w.buf = w.buf[i+1:]
	}
	return len(b), nil
}

func (w *lineWriter) flush() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.buf) > 0 {
		w.fn(string(w.buf))
		w.buf = nil
	}
}

package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"tailscale.com/ipn/store/mem"
	"tailscale.com/tsnet"
	"tailscale.com/types/logger"

	"github.com/agentnet/agentnet/bench"
)

// benchPort is the server's port on node b, as in agentnet bench.
const benchPort = 9000

// pair is two tsnet nodes of one tailnet: a dials the bench server on b.
type pair struct {
	a, b *tsnet.Server
	ln   net.Listener // on b, served by bench.Serve
	dst  string       // b's Tailscale IPv4 and benchPort
}

// startPair brings both nodes up (ephemeral, in-memory state, their files
// under dir) and starts the bench server on b.
func startPair(ctx context.Context, controlURL, dir string, logf logger.Logf) (_ *pair, err error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	p := &pair{}
	defer func() {
		if err != nil {
			p.close()
		}
	}()
	// Both come up at once: with DERP only, each waits out netcheck's 3 s
	// UDP timeout before it reports Running.
	p.a, p.b = newNode(controlURL, dir, "a", logf), newNode(controlURL, dir, "b", logf)
	var ipB netip.Addr
	var wg sync.WaitGroup
	errs := make([]error, 2)
	for i, s := range []*tsnet.Server{p.a, p.b} {
		wg.Go(func() {
			st, err := s.Up(ctx)
			if err != nil {
				errs[i] = fmt.Errorf("node %s: up: %w", s.Hostname, err)
				return
			}
			if i == 1 {
				for _, ip := range st.TailscaleIPs {
					if ip.Is4() {
						ipB = ip
					}
				}
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	if !ipB.IsValid() {
		return nil, errors.New("node b: no Tailscale IPv4 address")
	}
	p.dst = netip.AddrPortFrom(ipB, benchPort).String()
	if p.ln, err = p.b.Listen("tcp", fmt.Sprintf(":%d", benchPort)); err != nil {
		return nil, fmt.Errorf("node b: listen: %w", err)
	}
	go bench.Serve(p.ln)
	return p, nil
}

// newNode is an ephemeral node with in-memory state and its files in
// dir/name.
func newNode(controlURL, dir, name string, logf logger.Logf) *tsnet.Server {
	return &tsnet.Server{
		Dir:        filepath.Join(dir, name),
		Hostname:   "bench-" + name,
		ControlURL: controlURL,
		Store:      new(mem.Store),
		Ephemeral:  true,
		Logf:       logf,
		UserLogf:   logf,
	}
}

func (p *pair) dial(ctx context.Context) (net.Conn, error) {
	return p.a.Dial(ctx, "tcp", p.dst)
}

// close closes the listener and both nodes.
func (p *pair) close() {
	if p.ln != nil {
		p.ln.Close()
	}
	for _, s := range []*tsnet.Server{p.a, p.b} {
		if s != nil {
			s.Close()
		}
	}
}

// waitPath exchanges bytes until a's path to b is the wanted one: direct
// UDP to 127.0.0.1, or DERP only.
func (p *pair) waitPath(ctx context.Context, derpOnly bool) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	var last error
	for {
		if c, err := p.dial(ctx); err == nil {
			_ = c.SetDeadline(time.Now().Add(5 * time.Second))
			_, _ = c.Write([]byte{'E', 'x'})
			_, _ = c.Read(make([]byte, 1))
			c.Close()
		}
		if last = p.checkPath(ctx, derpOnly); last == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("path not ready within 30s: %w", last)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// checkPath reports whether both nodes see the other on the wanted path.
func (p *pair) checkPath(ctx context.Context, derpOnly bool) error {
	for _, s := range []*tsnet.Server{p.a, p.b} {
		lc, err := s.LocalClient()
		if err != nil {
			return err
		}
		st, err := lc.Status(ctx)
		if err != nil {
			return err
		}
		if len(st.Peer) != 1 {
			return fmt.Errorf("%s: %d peers, want 1", s.Hostname, len(st.Peer))
		}
		for _, ps := range st.Peer {
			switch {
			case derpOnly && ps.CurAddr != "":
				return fmt.Errorf("%s: direct to %s, want DERP only", s.Hostname, ps.CurAddr)
			case derpOnly && ps.Relay == "":
				return fmt.Errorf("%s: no DERP path yet", s.Hostname)
			case !derpOnly && !strings.HasPrefix(ps.CurAddr, "127.0.0.1:"):
				return fmt.Errorf("%s: current address %q, want 127.0.0.1:port", s.Hostname, ps.CurAddr)
			}
		}
	}
	return nil
}

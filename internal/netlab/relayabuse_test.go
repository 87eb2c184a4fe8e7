package netlab

import (
	"context"
	"net"
	"net/netip"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"github.com/vishvananda/netns"

	"github.com/agentnet/agentnet/relay/turnclient"
	"github.com/agentnet/agentnet/relay/turncred"
	"github.com/agentnet/agentnet/wire"
)

// inNS runs f on an OS thread switched into the named namespace; sockets f
// opens stay there. A thread that cannot be switched back is not reused.
func inNS(t *testing.T, ns string, f func()) {
	t.Helper()
	h, err := netns.GetFromName(ns)
	if err != nil {
		t.Fatalf("netns %s: %v", ns, err)
	}
	defer h.Close()
	done := make(chan struct{})
	go func() {
		defer close(done)
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			t.Errorf("netns: %v", err)
			return
		}
		defer orig.Close()
		if err := netns.Set(h); err != nil {
			t.Errorf("enter %s: %v", ns, err)
			return
		}
		f()
		if netns.Set(orig) == nil {
			runtime.UnlockOSThread()
		}
	}()
	<-done
}

// TestRelayAbuse: a TURN client on a lab host, with a valid credential for
// the lab's relay, asks it to relay to the relay host's own loopback and to
// a --deny prefix: nothing arrives there, while relaying to an ordinary
// lab host works. Bad and expired credentials get no allocation.
func TestRelayAbuse(t *testing.T) {
	t.Parallel()
	l := New(t)
	bin := BuildAgentnet(t)
	r := l.AddRouter("r")
	rel, client, target, denied := r.AddHost("relay"), r.AddHost("client"), r.AddHost("target"), r.AddHost("denied")
	dir := t.TempDir()
	data := filepath.Join(dir, "relay")
	rel.Start(t, bin, "relay", "--listen", rel.Addr.String()+":3478", "--public-ip", rel.Addr.String(),
		"--data", data, "--deny", netip.PrefixFrom(denied.Addr, 32).String(), "--name", "lab-relay",
		"--allow", "198.18.0.0/15") // the lab's addresses are in the benchmarking range
	credPath := filepath.Join(data, "relay.cred")
	waitFile(t, credPath, 15*time.Second)
	cred, err := turncred.LoadCred(credPath)
	if err != nil {
		t.Fatal(err)
	}
	addr := wire.RelayAddr{Transport: wire.TransportUDP, Addr: netip.AddrPortFrom(rel.Addr, 3478)}

	// Listeners that must never see relayed data (loopback of the relay
	// host, the denied host) and one that must (the target).
	listen := func(ns string, ap netip.AddrPort) *net.UDPConn {
		var uc *net.UDPConn
		inNS(t, ns, func() {
			var err error
			if uc, err = net.ListenUDP("udp4", net.UDPAddrFromAddrPort(ap)); err != nil {
				t.Errorf("listen %v in %s: %v", ap, ns, err)
			}
		})
		if uc == nil {
			t.FailNow()
		}
		t.Cleanup(func() { uc.Close() })
		return uc
	}
	loop := listen(rel.NS, netip.MustParseAddrPort("127.0.0.1:9999"))
	deny := listen(denied.NS, netip.AddrPortFrom(denied.Addr, 9999))
	ok := listen(target.NS, netip.AddrPortFrom(target.Addr, 9999))

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	dial := func(user, pass string) (*turnclient.Probe, error) {
		var tc *turnclient.Probe
		var err error
		inNS(t, client.NS, func() {
			tc, err = turnclient.DialProbe(ctx, turnclient.Config{Transport: addr.Transport,
				Relay: wire.Relay{Addrs: []wire.RelayAddr{addr}, TLSPin: cred.TLSPin, Username: user, Password: pass}})
		})
		return tc, err
	}

	// Bad and expired credentials: no allocation.
	goodUser, goodPass, _ := turncred.Credentials(cred.Secret, "abuser", time.Hour, time.Now())
	oldUser, oldPass, _ := turncred.Credentials(cred.Secret, "abuser", time.Minute, time.Now().Add(-time.Hour))
	for _, c := range []struct{ name, user, pass string }{
		{"wrong password", goodUser, "AAAA" + goodPass[4:]},
		{"expired", oldUser, oldPass},
		{"static username", "admin", "admin"},
	} {
		tc, err := dial(c.user, c.pass)
		if err != nil {
			continue // refused before allocating: fine
		}
		actx, acancel := context.WithTimeout(ctx, 5*time.Second)
		_, aerr := tc.Allocate(actx)
		acancel()
		tc.Close()
		if aerr == nil {
			t.Errorf("%s: the relay granted an allocation", c.name)
		}
	}

	tc, err := dial(goodUser, goodPass)
	if err != nil {
		t.Fatal(err)
	}
	defer tc.Close()
	if _, err := tc.Allocate(ctx); err != nil {
		t.Fatalf("valid credential: %v", err)
	}
	send := func(to netip.AddrPort) {
		for range 3 {
			_, _ = tc.WriteTo([]byte("relay abuse probe"), to)
		}
	}
	send(netip.MustParseAddrPort("127.0.0.1:9999"))
	send(netip.AddrPortFrom(denied.Addr, 9999))
	send(netip.AddrPortFrom(target.Addr, 9999))

	recv := func(uc *net.UDPConn, wait time.Duration) bool {
		buf := make([]byte, 64)
		_ = uc.SetReadDeadline(time.Now().Add(wait))
		n, _, err := uc.ReadFromUDP(buf)
		return err == nil && n > 0
	}
	if !recv(ok, 5*time.Second) {
		t.Fatal("relaying to an ordinary lab host did not work (control case)")
	}
	if recv(loop, time.Second) {
		t.Error("the relay relayed to its own loopback")
	}
	if recv(deny, time.Second) {
		t.Error("the relay relayed to a --deny prefix")
	}
}

package turnclient

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/agentnet/agentnet/wire"
)

func testAlloc(t *testing.T, r wire.Relay, transport string) *Allocation {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	a, err := Allocate(ctx, Config{Relay: r, Transport: transport, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatalf("allocate via %s: %v", transport, err)
	}
	t.Cleanup(func() { a.Close() })
	return a
}

// TestAllocateTransports relays datagrams both ways between a plain UDP
// socket and an allocation reached over UDP, TCP and TLS.
func TestAllocateTransports(t *testing.T) {
	fx := startTURNFixture(t)
	for _, tr := range []string{wire.TransportUDP, wire.TransportTCP, wire.TransportTLS} {
		t.Run(tr, func(t *testing.T) {
			a := testAlloc(t, fx.relay, tr)
			if a.Transport() != tr || a.Relay().Name != "fixture" || !a.RelayedAddr().IsValid() {
				t.Fatalf("allocation: transport %s relay %s relayed %v", a.Transport(), a.Relay().Name, a.RelayedAddr())
			}
			peer := loopbackUDP(t)
			peerAP := peer.LocalAddr().(*net.UDPAddr).AddrPort()
			// The peer may send first once permitted.
			if err := a.Permit(peerAP.Addr()); err != nil {
				t.Fatal(err)
			}
			if _, err := peer.WriteToUDPAddrPort([]byte("hello from peer"), a.RelayedAddr()); err != nil {
				t.Fatal(err)
			}
			buf := make([]byte, 1500)
			n, from, err := a.ReadFrom(buf)
			if err != nil || string(buf[:n]) != "hello from peer" || from != peerAP {
				t.Fatalf("ReadFrom = %q from %v, %v; want hello from %v", buf[:n], from, err, peerAP)
			}
			big := bytes.Repeat([]byte{0xa5}, 1400)
			if err := a.WriteTo(big, peerAP); err != nil {
				t.Fatal(err)
			}
			peer.SetReadDeadline(time.Now().Add(5 * time.Second))
			n, src, err := peer.ReadFromUDPAddrPort(buf)
			if err != nil || !bytes.Equal(buf[:n], big) || src != a.RelayedAddr() {
				t.Fatalf("peer got %d bytes from %v (%v); want 1400 from %v", n, src, err, a.RelayedAddr())
			}
		})
	}
}

func TestAllocateCloseUnblocksRead(t *testing.T) {
	fx := startTURNFixture(t)
	a := testAlloc(t, fx.relay, wire.TransportTCP)
	errc := make(chan error, 1)
	go func() {
		_, _, err := a.ReadFrom(make([]byte, 1500))
		errc <- err
	}()
	time.Sleep(50 * time.Millisecond)
	a.Close()
	select {
	case err := <-errc:
		if !errors.Is(err, net.ErrClosed) {
			t.Fatalf("ReadFrom after Close = %v, want net.ErrClosed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("ReadFrom still blocked after Close")
	}
	if err := a.WriteTo([]byte("x"), netip.MustParseAddrPort("127.0.0.1:9")); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("WriteTo after Close = %v, want net.ErrClosed", err)
	}
}

func TestAllocateRefusals(t *testing.T) {
	fx := startTURNFixture(t)
	ctx := context.Background()
	log := slog.New(slog.DiscardHandler)

	bad := fx.relay
	bad.Password = "wrong"
	if _, err := Allocate(ctx, Config{Relay: bad, Transport: wire.TransportUDP, Timeout: 3 * time.Second, Logger: log}); err == nil {
		t.Error("allocation with a wrong password succeeded")
	}
	pinned := fx.relay
	pinned.TLSPin = "sha256/AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="
	if _, err := Allocate(ctx, Config{Relay: pinned, Transport: wire.TransportTLS, Logger: log}); !errors.Is(err, ErrPinMismatch) {
		t.Errorf("TLS with a wrong pin: %v, want ErrPinMismatch", err)
	}
	// A UDP relay address nobody answers on: the timeout names UDP.
	silent, _ := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	defer silent.Close()
	blocked := fx.relay
	blocked.Addrs = []wire.RelayAddr{{Transport: wire.TransportUDP, Addr: silent.LocalAddr().(*net.UDPAddr).AddrPort()}}
	start := time.Now()
	_, err := Allocate(ctx, Config{Relay: blocked, Transport: wire.TransportUDP, Timeout: 500 * time.Millisecond, Logger: log})
	if err == nil || !strings.Contains(err.Error(), "udp blocked") || time.Since(start) > 3*time.Second {
		t.Errorf("silent relay: %v after %v; want a prompt 'udp blocked' error", err, time.Since(start))
	}
	if _, err := Allocate(ctx, Config{Relay: blocked, Transport: wire.TransportTCP, Logger: log}); err == nil || !strings.Contains(err.Error(), "no tcp address") {
		t.Errorf("missing transport: %v", err)
	}
}

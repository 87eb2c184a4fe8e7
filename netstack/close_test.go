package netstack

import (
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestCloseAfterManyConns(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())

	p := newPair(t, 0)
	ln, err := p.b.ListenTCP(netip.AddrPortFrom(addrB4, 7000))
	if err != nil {
		t.Fatal(err)
	}
	echoServer(t, ln)
	ctx := testCtx(t)
	buf := make([]byte, 5)
	for i := range 200 {
		c, err := p.a.DialContext(ctx, "tcp4", "100.96.0.2:7000")
		if err != nil {
			t.Fatalf("conn %d: %v", i, err)
		}
		if _, err := c.Write([]byte("hello")); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(c, buf); err != nil {
			t.Fatal(err)
		}
		c.Close()
	}
	// Leave one conn open and blocked in Read, to be woken by Close.
	c, err := p.a.DialContext(ctx, "tcp", "100.96.0.2:7000")
	if err != nil {
		t.Fatal(err)
	}
	readErr := make(chan error, 1)
	go func() {
		_, err := c.Read(buf)
		readErr <- err
	}()

	start := time.Now()
	p.close()
	if d := time.Since(start); d > time.Second {
		t.Fatalf("Close took %v", d)
	}
	select {
	case err := <-readErr:
		if !errors.Is(err, net.ErrClosed) {
			t.Errorf("blocked Read after Close: %v, want net.ErrClosed", err)
		}
	case <-time.After(time.Second):
		t.Fatal("Read still blocked after Close")
	}
	// TIME_WAIT and the like die with the stack; nothing of ours may
	// outlive Close. No IgnoreTopFunction was needed for gVisor.
}

func TestCloseUnblocks(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())

	s, err := New(Config{Addrs: []netip.Addr{addrA4}})
	if err != nil {
		t.Fatal(err)
	}
	dev := s.TUN()
	if ev := <-dev.Events(); ev != 1 /* tun.EventUp */ {
		t.Fatalf("first event %v, want EventUp", ev)
	}
	ln, err := s.ListenTCP(netip.AddrPort{})
	if err != nil {
		t.Fatal(err)
	}
	acceptErr := make(chan error, 1)
	go func() {
		_, err := ln.Accept()
		acceptErr <- err
	}()
	readErr := make(chan error, 1)
	go func() {
		bufs := [][]byte{make([]byte, 1500)}
		_, err := dev.Read(bufs, make([]int, 1), 0)
		readErr <- err
	}()
	time.Sleep(10 * time.Millisecond) // let both block

	// Close the device first, as wireguard-go's device.Close does.
	if err := dev.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-readErr; !errors.Is(err, os.ErrClosed) {
		t.Fatalf("Read after device Close: %v", err)
	}
	if _, ok := <-dev.Events(); ok {
		t.Fatal("Events not closed")
	}
	if _, err := dev.Write([][]byte{make([]byte, 40)}, 0); !errors.Is(err, os.ErrClosed) {
		t.Fatalf("Write after Close: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil { // idempotent
		t.Fatal(err)
	}
	select {
	case err := <-acceptErr:
		if !errors.Is(err, net.ErrClosed) {
			t.Fatalf("Accept after Close: %v, want net.ErrClosed", err)
		}
	case <-time.After(time.Second):
		t.Fatal("Accept still blocked after Close")
	}
	if _, err := s.DialContext(testCtx(t), "tcp", "100.96.0.2:1"); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Dial after Close: %v", err)
	}
}

func TestListenerClose(t *testing.T) {
	p := newPair(t, 0)
	ln, err := p.a.ListenTCP(netip.AddrPortFrom(addrA6, 80))
	if err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() {
		_, err := ln.Accept()
		errc <- err
	}()
	time.Sleep(10 * time.Millisecond)
	ln.Close()
	select {
	case err := <-errc:
		if !errors.Is(err, net.ErrClosed) {
			t.Fatalf("Accept after listener Close: %v", err)
		}
	case <-time.After(time.Second):
		t.Fatal("Accept still blocked")
	}
}

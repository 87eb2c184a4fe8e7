package bench

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"sync"
	"time"
)

// Wire protocol between the measuring client and dpServe: the first byte of
// a connection picks the mode.
const (
	modeSink = 'S' // discard until the client's half-close, then answer the byte count (8 bytes, big endian)
	modeEcho = 'E' // echo every byte back, one at a time
)

// dpServe accepts connections on ln until it is closed.
func dpServe(ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go dpHandle(c)
	}
}

func dpHandle(c net.Conn) {
	defer c.Close()
	var b [1]byte
	if _, err := io.ReadFull(c, b[:]); err != nil {
		return // a connect-time probe: closed without a byte
	}
	switch b[0] {
	case modeSink:
		n, _ := io.CopyBuffer(io.Discard, c, make([]byte, 256<<10))
		var out [8]byte
		binary.BigEndian.PutUint64(out[:], uint64(n))
		_, _ = c.Write(out[:])
	case modeEcho:
		for {
			if _, err := io.ReadFull(c, b[:]); err != nil {
				return
			}
			if _, err := c.Write(b[:]); err != nil {
				return
			}
		}
	}
}

type closeWriter interface{ CloseWrite() error }

// throughput runs streams parallel TCP streams for d and returns the goodput
// in Mbit/s (bytes acknowledged by the server over the time until the last
// server's count arrived), the bytes moved, and the process CPU seconds
// (user+system, this whole process: both ends) spent meanwhile.
func throughput(ctx context.Context, s *setup, streams int, d time.Duration) (mbps float64, bytes int64, cpu float64, err error) {
	conns := make([]net.Conn, 0, streams)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for range streams {
		c, err := dialTimeout(ctx, s, 10*time.Second)
		if err != nil {
			return 0, 0, 0, err
		}
		conns = append(conns, c)
	}
	cpuNow := cpuSeconds
	if s.cpu != nil {
		cpuNow = s.cpu
	}
	cpu0 := cpuNow()
	start := time.Now()
	deadline := start.Add(d)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var firstErr error
	var total int64
	for _, c := range conns {
		wg.Go(func() {
			n, err := sinkStream(c, deadline)
			mu.Lock()
			defer mu.Unlock()
			total += n
			if err != nil && firstErr == nil {
				firstErr = err
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	cpu = cpuNow() - cpu0
	if firstErr != nil {
		return 0, 0, 0, firstErr
	}
	if total == 0 {
		return 0, 0, 0, errors.New("no bytes moved")
	}
	return float64(total) * 8 / elapsed.Seconds() / 1e6, total, cpu, nil
}

func sinkStream(c net.Conn, deadline time.Time) (int64, error) {
	cw, ok := c.(closeWriter)
	if !ok {
		return 0, fmt.Errorf("%T cannot half-close", c)
	}
	_ = c.SetDeadline(deadline.Add(30 * time.Second))
	buf := make([]byte, 64<<10)
	buf[0] = modeSink
	for time.Now().Before(deadline) {
		if _, err := c.Write(buf); err != nil {
			return 0, err
		}
		buf[0] = 0
	}
	if err := cw.CloseWrite(); err != nil {
		return 0, err
	}
	var out [8]byte
	if _, err := io.ReadFull(c, out[:]); err != nil {
		return 0, fmt.Errorf("read byte count: %w", err)
	}
	return int64(binary.BigEndian.Uint64(out[:])), nil
}

// rtt does n 1-byte request/response round trips over one connection and
// returns the 50th and 99th percentile in microseconds.
func rtt(ctx context.Context, s *setup, n int) (p50, p99 float64, err error) {
	c, err := dialTimeout(ctx, s, 10*time.Second)
	if err != nil {
		return 0, 0, err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(60 * time.Second))
	if _, err := c.Write([]byte{modeEcho}); err != nil {
		return 0, 0, err
	}
	samples := make([]float64, 0, n)
	b := []byte{1}
	for i := range n + n/10 { // the first tenth warms up and is not counted
		t0 := time.Now()
		if _, err := c.Write(b); err != nil {
			return 0, 0, err
		}
		if _, err := io.ReadFull(c, b); err != nil {
			return 0, 0, err
		}
		if i >= n/10 {
			samples = append(samples, float64(time.Since(t0).Nanoseconds())/1e3)
		}
	}
	slices.Sort(samples)
	return dpPercentile(samples, 0.50), dpPercentile(samples, 0.99), nil
}

// dpPercentile of sorted samples (nearest rank).
func dpPercentile(sorted []float64, p float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	i := int(p*float64(len(sorted))+0.5) - 1
	return sorted[max(0, min(i, len(sorted)-1))]
}

// connectTime dials and closes n connections and returns the median
// connect time in milliseconds.
func connectTime(ctx context.Context, s *setup, n int) (float64, error) {
	samples := make([]float64, 0, n)
	for range n {
		t0 := time.Now()
		c, err := dialTimeout(ctx, s, 10*time.Second)
		if err != nil {
			return 0, err
		}
		samples = append(samples, float64(time.Since(t0).Nanoseconds())/1e6)
		c.Close()
	}
	slices.Sort(samples)
	return dpPercentile(samples, 0.5), nil
}

// echoOnce checks the path end to end (and completes handshakes).
func echoOnce(ctx context.Context, s *setup) error {
	c, err := dialTimeout(ctx, s, 15*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	return echoConn(c)
}

func echoConn(c net.Conn) error {
	_ = c.SetDeadline(time.Now().Add(15 * time.Second))
	if _, err := c.Write([]byte{modeEcho, 'x'}); err != nil {
		return err
	}
	var b [1]byte
	_, err := io.ReadFull(c, b[:])
	return err
}

func dialTimeout(ctx context.Context, s *setup, d time.Duration) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	c, err := s.dial(ctx)
	if err != nil {
		return nil, fmt.Errorf("%s: dial: %w", s.name, err)
	}
	return c, nil
}

// Command faultgen is the faults suite's load and attack generator. It runs
// inside a lab namespace and sends only to the address it is given (a lab
// address). Subcommands:
//
//	faultgen tokens -admin FILE [-workers N] [-max N]
//	    create join tokens in a loop through the admin API, printing
//	    "acked ID" after each 200, until -max or the first failure
//	    ("stopped: ERR").
//	faultgen flood -admin FILE -victim NAME -to IP:PORT [-rate PPS] [-for D] [-srcs CIDR] [-ports N]
//	    send WireGuard handshake initiations with a valid MAC1 for the
//	    victim's public key (looked up with the admin credential) at -rate
//	    packets/s, from every address of -srcs configured on this host and
//	    -ports source ports each; prints "flooding" then "sent N in D".
//	faultgen conns -to IP:PORT [-n N] [-parallel N] [-hold D]
//	    open N TCP connections and hold them; prints "opened OK refused FAILED"
//	    and exits after -hold.
//	faultgen stream -url URL -size N [-rate BYTES/S] [-timeout D]
//	    GET URL (httpserve's /bytes/N), check every byte against the
//	    pattern while reading at most -rate bytes/s, print "progress N" each
//	    second and finally "done N maxgap D" (the longest time without a byte);
//	    with -for D it stops after D and prints "read N in D (R MB/s)".
package main

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/crypto/blake2s"
	"golang.org/x/net/ipv4"

	"github.com/agentnet/agentnet/wire"
	"github.com/agentnet/agentnet/wire/adminclient"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: faultgen tokens|flood|conns|stream ...")
		os.Exit(2)
	}
	fs := flag.NewFlagSet(os.Args[1], flag.ExitOnError)
	var err error
	switch os.Args[1] {
	case "tokens":
		err = tokens(fs, os.Args[2:])
	case "flood":
		err = flood(fs, os.Args[2:])
	case "conns":
		err = conns(fs, os.Args[2:])
	case "stream":
		err = stream(fs, os.Args[2:])
	default:
		err = fmt.Errorf("unknown subcommand %q", os.Args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "faultgen:", err)
		os.Exit(1)
	}
}

func adminClient(path string) (*adminclient.Client, error) {
	cred, err := wire.LoadAdminCred(path)
	if err != nil {
		return nil, err
	}
	return adminclient.New(cred), nil
}

func tokens(fs *flag.FlagSet, args []string) error {
	admin := fs.String("admin", "", "admin credential")
	workers := fs.Int("workers", 4, "concurrent writers")
	max := fs.Int("max", 100000, "stop after this many acknowledged writes")
	_ = fs.Parse(args)
	ac, err := adminClient(*admin)
	if err != nil {
		return err
	}
	var (
		mu    sync.Mutex
		acked int
		stop  bool
		wg    sync.WaitGroup
	)
	for range *workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				mu.Lock()
				done := stop || acked >= *max
				mu.Unlock()
				if done {
					return
				}
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				resp, err := ac.CreateToken(ctx, wire.CreateTokenRequest{TTLSeconds: 3600})
				cancel()
				mu.Lock()
				if err != nil {
					if !stop {
						fmt.Printf("stopped: %v\n", err)
					}
					stop = true
				} else {
					acked++
					fmt.Printf("acked %s\n", resp.ID)
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	fmt.Printf("total acked %d\n", acked)
	return nil
}

// WireGuard handshake initiation layout (whitepaper §5.4.2).
const (
	initLen  = 148
	initMAC1 = 116
)

func flood(fs *flag.FlagSet, args []string) error {
	admin := fs.String("admin", "", "admin credential")
	victim := fs.String("victim", "", "victim node name")
	to := fs.String("to", "", "victim's WireGuard IP:PORT")
	rate := fs.Int("rate", 50000, "packets per second")
	dur := fs.Duration("for", 10*time.Second, "how long")
	srcs := fs.String("srcs", "", "send from every address of this prefix configured on this host")
	ports := fs.Int("ports", 8, "source ports per address")
	_ = fs.Parse(args)
	dst, err := netip.ParseAddrPort(*to)
	if err != nil {
		return err
	}
	pfx, err := netip.ParsePrefix(*srcs)
	if err != nil {
		return err
	}
	ac, err := adminClient(*admin)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	nodes, err := ac.Nodes(ctx)
	cancel()
	if err != nil {
		return err
	}
	var pub []byte
	for _, n := range nodes {
		if n.Name == *victim {
			pub, err = base64.StdEncoding.DecodeString(n.WGKey)
			if err != nil {
				return err
			}
		}
	}
	if len(pub) != 32 {
		return fmt.Errorf("no WireGuard key for %q", *victim)
	}
	mac1Key := blake2s.Sum256(append([]byte("mac1----"), pub...))

	// A pool of initiations, each with random sender index, ephemeral,
	// static and timestamp fields and a valid MAC1.
	pool := make([][]byte, 4096)
	for i := range pool {
		m := make([]byte, initLen)
		m[0] = 1
		_, _ = rand.Read(m[4:initMAC1])
		mac, _ := blake2s.New128(mac1Key[:])
		mac.Write(m[:initMAC1])
		copy(m[initMAC1:], mac.Sum(nil))
		pool[i] = m
	}

	addrs, err := localAddrs(pfx)
	if err != nil {
		return err
	}
	var conns []*ipv4.PacketConn
	for _, a := range addrs {
		for range *ports {
			uc, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.AddrPortFrom(a, 0)))
			if err != nil {
				return err
			}
			_ = uc.SetWriteBuffer(1 << 20)
			conns = append(conns, ipv4.NewPacketConn(uc))
		}
	}
	fmt.Printf("flooding %v at %d/s from %d sources for %v\n", dst, *rate, len(conns), *dur)
	ua := net.UDPAddrFromAddrPort(dst)
	const batch = 32
	msgs := make([]ipv4.Message, batch)
	for i := range msgs {
		msgs[i].Addr = ua
		msgs[i].Buffers = make([][]byte, 1)
	}
	start := time.Now()
	sent, failed, k, c := 0, 0, 0, 0
	for {
		el := time.Since(start)
		if el >= *dur {
			break
		}
		want := int(el.Seconds() * float64(*rate))
		if sent >= want {
			time.Sleep(500 * time.Microsecond)
			continue
		}
		n := min(batch, want-sent)
		for i := range n {
			msgs[i].Buffers[0] = pool[k%len(pool)]
			k++
		}
		got, err := conns[c%len(conns)].WriteBatch(msgs[:n], 0)
		c++
		if err != nil || got <= 0 {
			failed++ // a full socket buffer or qdisc (ENOBUFS, EAGAIN)
			time.Sleep(100 * time.Microsecond)
			continue
		}
		sent += got
	}
	el := time.Since(start)
	fmt.Printf("sent %d in %v (%.0f/s), %d failed sends\n", sent, el.Round(time.Millisecond), float64(sent)/el.Seconds(), failed)
	return nil
}

// localAddrs lists this host's IPv4 addresses inside pfx.
func localAddrs(pfx netip.Prefix) ([]netip.Addr, error) {
	ifas, err := net.InterfaceAddrs()
	if err != nil {
		return nil, err
	}
	var out []netip.Addr
	for _, ia := range ifas {
		if ipn, ok := ia.(*net.IPNet); ok {
			if a, ok := netip.AddrFromSlice(ipn.IP.To4()); ok && pfx.Contains(a) {
				out = append(out, a)
			}
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no address of %v on this host", pfx)
	}
	return out, nil
}

func conns(fs *flag.FlagSet, args []string) error {
	to := fs.String("to", "", "IP:PORT")
	n := fs.Int("n", 3000, "connections")
	par := fs.Int("parallel", 200, "connects in flight")
	hold := fs.Duration("hold", 10*time.Second, "hold the connections this long")
	_ = fs.Parse(args)
	var (
		opened, refused, failed atomic.Int64
		mu                      sync.Mutex
		held                    []net.Conn
		wg                      sync.WaitGroup
	)
	sem := make(chan struct{}, *par)
	start := time.Now()
	for range *n {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			c, err := net.DialTimeout("tcp", *to, 5*time.Second)
			if err != nil {
				if errors.Is(err, os.ErrDeadlineExceeded) {
					failed.Add(1)
				} else {
					refused.Add(1)
				}
				return
			}
			// A connection the far end resets right after accepting
			// reads an error at once; a held one times out.
			_ = c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
			var b [1]byte
			if _, err := c.Read(b[:]); err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
				refused.Add(1)
				c.Close()
				return
			}
			opened.Add(1)
			mu.Lock()
			held = append(held, c)
			mu.Unlock()
		}()
	}
	wg.Wait()
	fmt.Printf("opened %d refused %d failed %d in %v\n", opened.Load(), refused.Load(), failed.Load(), time.Since(start).Round(time.Millisecond))
	time.Sleep(*hold)
	for _, c := range held {
		c.Close()
	}
	return nil
}

func stream(fs *flag.FlagSet, args []string) error {
	url := fs.String("url", "", "httpserve /bytes/N URL")
	size := fs.Int64("size", 0, "expected body size")
	rate := fs.Int("rate", 1<<20, "read at most this many bytes/s")
	timeout := fs.Duration("timeout", 120*time.Second, "give up when no byte arrives for this long")
	limit := fs.Duration("for", 0, "stop after this long and print \"read N in D\" (0: read the whole body)")
	_ = fs.Parse(args)
	var lastByte atomic.Int64 // unix nanos of the last read
	lastByte.Store(time.Now().UnixNano())
	hc := &http.Client{Transport: &http.Transport{DisableKeepAlives: true, ResponseHeaderTimeout: 20 * time.Second}}
	resp, err := hc.Get(*url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		return fmt.Errorf("GET %s: %s", *url, resp.Status)
	}
	done := make(chan struct{})
	defer close(done)
	go func() { // the watchdog: a stalled stream fails after -timeout
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				if time.Since(time.Unix(0, lastByte.Load())) > *timeout {
					fmt.Printf("stalled for %v\n", *timeout)
					os.Exit(1)
				}
			}
		}
	}()
	var (
		x        uint32 = 1
		total    int64
		maxGap   time.Duration
		maxGapAt time.Duration
		buf      = make([]byte, 16<<10)
		start    = time.Now()
		lastProg = start
	)
	for {
		// Pace: never run ahead of -rate.
		if ahead := time.Duration(float64(total)/float64(*rate)*float64(time.Second)) - time.Since(start); ahead > 0 {
			time.Sleep(ahead)
		}
		n, err := resp.Body.Read(buf)
		now := time.Now()
		if n > 0 {
			if gap := now.Sub(time.Unix(0, lastByte.Load())); gap > maxGap {
				maxGap, maxGapAt = gap, now.Sub(start)
			}
			lastByte.Store(now.UnixNano())
			for i := range n {
				x = x*1664525 + 1013904223
				if buf[i] != byte(x>>24) {
					return fmt.Errorf("byte %d corrupt", total+int64(i))
				}
			}
			total += int64(n)
		}
		if now.Sub(lastProg) >= time.Second {
			fmt.Printf("progress %d\n", total)
			lastProg = now
		}
		if *limit > 0 && now.Sub(start) >= *limit {
			el := now.Sub(start)
			fmt.Printf("read %d in %v (%.1f MB/s) maxgap %v\n", total, el.Round(time.Millisecond), float64(total)/el.Seconds()/1e6, maxGap.Round(time.Millisecond))
			return nil
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			return fmt.Errorf("after %d bytes: %w", total, err)
		}
	}
	if total != *size {
		return fmt.Errorf("got %d bytes, want %d", total, *size)
	}
	fmt.Printf("done %d maxgap %v at %v\n", total, maxGap.Round(time.Millisecond), maxGapAt.Round(time.Millisecond))
	return nil
}

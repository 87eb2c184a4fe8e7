package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/netip"
	"sort"
	"sync"
	"syscall"
	"time"

	"github.com/agentnet/agentnet/dns"
	mdns "github.com/miekg/dns"
)

// DNS parameters.
const (
	dnsRecords = 1000 // agent names in the table
	dnsClients = 16   // concurrent clients, each with its own connection
)

// DNS measures the built-in resolver (package dns) on a host socket:
// queries per second for agent names (A records of <name>.agents.internal)
// with dnsClients concurrent miekg/dns clients, each with its own
// connection, for o.Duration (Quick 1 s, default 5 s), and the latency
// percentiles of every query. Setups: dns-udp and dns-tcp (one TCP
// connection per client, one query at a time; the server closes a TCP
// connection after 128 queries and the client redials inside the timed
// query, as a real one would). Clients and server
// share the process and its cores, so qps is a lower bound of what the
// server alone does.
func DNS(ctx context.Context, o Options) ([]Result, error) {
	o = o.withDefaults()
	dur := o.Duration
	if dur <= 0 {
		dur = 5 * time.Second
		if o.Quick {
			dur = time.Second
		}
	}
	reps := o.Reps
	if reps <= 0 {
		reps = 3
		if o.Quick {
			reps = 1
		}
	}

	srv := dns.New(dns.Config{Logger: o.Logger})
	defer srv.Close()
	recs := make([]dns.Record, dnsRecords)
	names := make([]string, dnsRecords)
	for i := range recs {
		recs[i] = dns.Record{
			Name: fmt.Sprintf("agent-%04d", i),
			IPv4: netip.AddrFrom4([4]byte{100, 96, byte(i >> 8), byte(i)}),
			IPv6: netip.AddrFrom16([16]byte{0: 0xfd, 15: byte(i), 14: byte(i >> 8)}),
		}
		names[i] = mdns.Fqdn(recs[i].Name + "." + dns.DefaultDomain)
	}
	srv.SetRecords(recs)
	addr, err := srv.ListenAndServe("127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("bench dns: %w", err)
	}

	var out []Result
	for _, network := range []string{"udp", "tcp"} {
		setup := "dns-" + network
		var qps, p50, p99 []float64
		for rep := range reps {
			if err := ctx.Err(); err != nil {
				return out, err
			}
			q, lat, err := dnsLoad(ctx, network, addr.String(), names, dur)
			if err != nil {
				return out, fmt.Errorf("bench dns %s: %w", network, err)
			}
			sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
			qps = append(qps, q)
			p50 = append(p50, float64(percentile(lat, 0.50))/1e3)
			p99 = append(p99, float64(percentile(lat, 0.99))/1e3)
			o.Progressf("dns %s rep %d/%d: %.0f q/s, p50 %.0f us, p99 %.0f us (%d clients, %v)",
				network, rep+1, reps, q, p50[rep], p99[rep], dnsClients, dur)
		}
		out = append(out,
			Summarize(setup, "dns_qps", "q/s", qps),
			Summarize(setup, "dns_p50_us", "us", p50),
			Summarize(setup, "dns_p99_us", "us", p99))
	}
	return out, nil
}

// dnsLoad runs dnsClients closed-loop clients against addr for dur and
// returns the rate of answered queries and every query's latency. Any
// query that fails or is not answered NOERROR with an answer fails the run.
func dnsLoad(ctx context.Context, network, addr string, names []string, dur time.Duration) (float64, []time.Duration, error) {
	ctx, cancel := context.WithTimeout(ctx, dur)
	defer cancel()
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		lats  []time.Duration
		first error
	)
	start := time.Now()
	for c := range dnsClients {
		wg.Go(func() {
			lat, err := dnsClient(ctx, network, addr, names, uint64(c))
			mu.Lock()
			defer mu.Unlock()
			lats = append(lats, lat...)
			if err != nil && first == nil {
				first = err
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	if first != nil {
		return 0, nil, first
	}
	if len(lats) == 0 {
		return 0, nil, fmt.Errorf("no query answered in %v", dur)
	}
	return float64(len(lats)) / elapsed.Seconds(), lats, nil
}

func dnsClient(ctx context.Context, network, addr string, names []string, seed uint64) ([]time.Duration, error) {
	cl := &mdns.Client{Net: network, Timeout: 2 * time.Second}
	conn, err := cl.Dial(addr)
	if err != nil {
		return nil, err
	}
	defer func() { conn.Close() }()
	rng := rand.New(rand.NewPCG(seed, 0x646e73))
	lats := make([]time.Duration, 0, 1<<14)
	m := new(mdns.Msg)
	for ctx.Err() == nil {
		name := names[rng.IntN(len(names))]
		m.SetQuestion(name, mdns.TypeA)
		t0 := time.Now()
		r, _, err := cl.ExchangeWithConnContext(ctx, m, conn)
		if err != nil && network == "tcp" && closedByPeer(err) && !ended(ctx) {
			// The server closes a TCP connection after MaxTCPQueries
			// (miekg's default 128); a client redials, and so do we,
			// inside the timed query.
			conn.Close()
			if conn, err = cl.Dial(addr); err != nil {
				return lats, err
			}
			r, _, err = cl.ExchangeWithConnContext(ctx, m, conn)
		}
		if err != nil {
			if ended(ctx) {
				break // the run ended mid-query
			}
			return lats, fmt.Errorf("query %s: %w", name, err)
		}
		lats = append(lats, time.Since(t0))
		if r.Rcode != mdns.RcodeSuccess || len(r.Answer) != 1 {
			return lats, fmt.Errorf("query %s: rcode %s, %d answers", name, mdns.RcodeToString[r.Rcode], len(r.Answer))
		}
	}
	return lats, nil
}

// closedByPeer reports whether err means the server closed the connection.
func closedByPeer(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}

// ended reports whether ctx is done or past its deadline (a socket deadline
// taken from ctx can fire just before ctx.Err is set).
func ended(ctx context.Context) bool {
	d, ok := ctx.Deadline()
	return ctx.Err() != nil || ok && !time.Now().Before(d)
}

// percentile returns the p-quantile (0..1) of sorted (nearest rank).
func percentile[T any](sorted []T, p float64) T {
	var zero T
	if len(sorted) == 0 {
		return zero
	}
	i := int(p*float64(len(sorted))+0.5) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}

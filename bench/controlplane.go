package bench

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdh"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/agentnet/agentnet/coordinator"
	"github.com/agentnet/agentnet/wire"
	"github.com/agentnet/agentnet/wire/adminclient"
	"github.com/agentnet/agentnet/wire/controlclient"
)

// Control-plane parameters.
const (
	cpJoinConcurrency = 64               // enrollments (and stream opens) in flight
	cpQuiet           = time.Second      // no map anywhere for this long: streams are quiet
	cpPhaseTimeout    = 15 * time.Minute // bound of any one phase
	cpStreamBudget    = 5 * time.Minute  // bound of bringing the streams up; past it the scale is reported unmeasured
	cpVerifySample    = 256              // probe-matching maps kept and verified per probe
)

// ControlPlane measures the coordinator with simulated nodes: real control
// clients without a data plane. Each has its own Ed25519 identity and X25519
// WireGuard key, enrolls over pinned HTTPS (wire.PathEnroll, signed), then
// holds the netmap stream (wire.PathStream) open, asking for deltas as
// agentnet nodes do (the first message is a whole map, each change after it
// a delta). Nodes enroll with an
// endpoint (127.0.0.1:port, never used) because the coordinator lists only
// nodes with endpoints as peers. All clients share one node control client
// (wire/controlclient, as overlay uses) signing as each in turn; it speaks
// HTTP/1.1, one TCP connection per stream, until the coordinator's HTTP/2
// stream deadline is fixed (see cpHTTP2).
//
// For N = 1,000 by default (Options.Scales, e.g. 1,000 and 5,000, for more;
// Quick: 200 and 500), setup "controlplane-N":
//   - join_s: time for N nodes to enroll, cpJoinConcurrency at a time;
//   - coord_cpu_s: coordinator CPU time during that join;
//   - streams_up_s: time until all N streams have delivered their first map;
//   - coord_rss_mib: coordinator resident memory with N streams up;
//   - fanout_p50_ms / fanout_p99_ms: with all streams up and quiet, one more
//     node enrolls; from that enrollment's HTTP response to each stream
//     receiving the first map or delta that lists it, over the N streams;
//   - revoke_p50_ms / revoke_p99_ms (smallest N only): admin DeleteNode of
//     one node; from the DELETE's response to each remaining stream
//     receiving the first map without it or delta removing it.
//
// The coordinator runs as a separate process (the agentnet binary,
// Options.Agentnet) so its RSS and CPU are its own; without a binary it
// runs in-process, and the rss/cpu rows then include the simulated clients
// (their Note says so). Clients and
// coordinator share the machine's cores either way.
//
// Every stream's first map is verified (signature with the coordinator key,
// Self is the node). Maps and deltas matching a probe are timestamped when
// their line has been read, before any decoding; up to cpVerifySample of
// them per probe are verified afterwards (verifying every 1.5 MB map of 5,000 nodes
// in the same process would measure the clients, not the coordinator).
// Serials must not go backwards on any stream.
func ControlPlane(ctx context.Context, o Options) ([]Result, error) {
	o = o.withDefaults()
	scales := []int{1000}
	if o.Quick {
		scales = []int{200, 500}
	}
	if len(o.Scales) > 0 {
		scales = o.Scales
	}
	raiseNoFile()
	bin, binNote := coordinatorBinary(o)
	var out []Result
	for i, n := range scales {
		rs, err := controlPlaneRun(ctx, o, n, i == 0, bin, binNote)
		out = append(out, rs...)
		if err != nil {
			return out, fmt.Errorf("bench controlplane N=%d: %w", n, err)
		}
	}
	return out, nil
}

// coordinatorBinary returns the agentnet binary to run the coordinator
// from (Options.Agentnet), or "" and the note of an in-process one.
func coordinatorBinary(o Options) (bin, note string) {
	if o.Agentnet != "" {
		return o.Agentnet, ""
	}
	o.Progressf("controlplane: no agentnet binary (Options.Agentnet); running the coordinator in-process")
	return "", "coordinator in-process (no agentnet binary given): includes the simulated clients"
}

// cpCoord is the coordinator under test, in-process or a child process.
type cpCoord struct {
	cred     wire.AdminCred
	inproc   *coordinator.Coordinator
	cmd      *exec.Cmd
	waitDone chan error
	pid      int
}

// benchNoLimits turns off the per-source limits: every simulated node
// enrolls from 127.0.0.1, which the enrollment limit would throttle to 5/s.
var benchNoLimits = coordinator.RateLimits{Enroll: coordinator.RateLimit{Off: true}, Admin: coordinator.RateLimit{Off: true}}

// benchNoConnLimits turns off the connection caps: over HTTP/1.1 every
// simulated node's stream is a connection from 127.0.0.1.
var benchNoConnLimits = coordinator.ConnLimits{PerSource: -1, Total: -1}

func startCoord(ctx context.Context, o Options, bin, dir string) (*cpCoord, error) {
	c := &cpCoord{}
	if bin == "" {
		co, err := coordinator.New(coordinator.Config{DataDir: dir, Listen: "127.0.0.1:0", Logger: o.Logger, RateLimits: benchNoLimits, ConnLimits: benchNoConnLimits})
		if err != nil {
			return nil, err
		}
		c.inproc, c.cred, c.pid = co, co.AdminCred(), os.Getpid()
		return c, nil
	}
	c.cmd = exec.Command(bin, "coordinator", "--listen", "127.0.0.1:0", "--data", dir, "--log-level", "warn",
		"--rate-limit-enroll", "off", "--rate-limit-admin", "off", "--conn-limit-source", "-1", "--conn-limit-total", "-1")
	stdout, err := c.cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	c.cmd.Stderr = io.Discard
	if err := c.cmd.Start(); err != nil {
		return nil, err
	}
	c.pid = c.cmd.Process.Pid
	c.waitDone = make(chan error, 1)
	ready := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(stdout)
		once := sync.Once{}
		for sc.Scan() {
			if strings.HasPrefix(sc.Text(), "coordinator at ") {
				once.Do(func() { close(ready) })
			}
		}
		c.waitDone <- c.cmd.Wait()
	}()
	select {
	case <-ready:
	case err := <-c.waitDone:
		c.waitDone <- err
		return nil, fmt.Errorf("coordinator process exited at start: %v", err)
	case <-time.After(30 * time.Second):
		c.close()
		return nil, errors.New("coordinator process not ready after 30 s")
	case <-ctx.Done():
		c.close()
		return nil, ctx.Err()
	}
	cred, err := wire.LoadAdminCred(filepath.Join(dir, "admin.cred"))
	if err != nil {
		c.close()
		return nil, err
	}
	c.cred = cred
	return c, nil
}

// rssMiB is the coordinator's resident memory (in-process: this whole
// process, simulated clients included, as the row's note says; a growth
// figure can go negative when the garbage collector returns memory).
func (c *cpCoord) rssMiB() (float64, error) {
	return vmRSS(c.pid)
}

// cpuSeconds is the coordinator's user+system CPU time so far (in-process:
// the whole process's).
func (c *cpCoord) cpuSeconds() (float64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", c.pid))
	if err != nil {
		return 0, err
	}
	// Fields after the ")" closing the command name: state is field 3,
	// utime 14 and stime 15 (1-based, proc(5)).
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(f) < 13 {
		return 0, fmt.Errorf("short /proc/%d/stat", c.pid)
	}
	ut, err1 := strconv.ParseFloat(f[11], 64)
	st, err2 := strconv.ParseFloat(f[12], 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("bad /proc/%d/stat", c.pid)
	}
	return (ut + st) / 100, nil // USER_HZ is 100 on Linux
}

func (c *cpCoord) close() error {
	if c.inproc != nil {
		return c.inproc.Close()
	}
	_ = c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.waitDone:
		return nil
	case <-time.After(10 * time.Second):
		_ = c.cmd.Process.Kill()
		<-c.waitDone
		return errors.New("coordinator process did not stop on SIGTERM; killed")
	}
}

// simNode is one simulated node: identity, WireGuard key, name.
type simNode struct {
	idx   int
	name  string
	key   ed25519.PrivateKey
	wgKey string
}

func newSimNode(idx int, name string) (*simNode, error) {
	_, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	wg, err := ecdh.X25519().GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	var pub [32]byte
	copy(pub[:], wg.PublicKey().Bytes())
	return &simNode{idx: idx, name: name, key: key, wgKey: wire.WGKeyString(pub)}, nil
}

func (n *simNode) did() string { return wire.DID(n.key.Public().(ed25519.PublicKey)) }

// cpClient is the shared control client of all simulated nodes: one
// wire/controlclient transport, signing as each node in turn.
type cpClient struct {
	*controlclient.Client
}

// cpHTTP2 makes the simulated nodes speak HTTP/2 (many streams per TCP
// connection) as overlay's control client does. It is off so that every
// simulated stream is its own TCP connection, as on a real network of
// nodes (raiseNoFile covers this process; Go raises the child's). With it
// on, coordinators before the fix in stream.go reset idle streams after
// their 10 s write deadline (TestStreamIdleOverHTTP2).
const cpHTTP2 = false

func newCPClient(cred wire.AdminCred) *cpClient {
	return &cpClient{controlclient.New(controlclient.Config{
		URL: strings.TrimSuffix(cred.URL, "/"), Pin: cred.Pin,
		Timeout:      cpPhaseTimeout, // a phase's own bound applies; no tighter one per request
		MaxIdleConns: cpJoinConcurrency,
		HTTP1:        !cpHTTP2,
	})}
}

// enroll enrolls n with token and returns the coordinator's answer.
func (c *cpClient) enroll(ctx context.Context, n *simNode, token string) (*wire.EnrollResponse, error) {
	er, err := c.WithIdentity(n.key).Enroll(ctx, wire.EnrollRequest{
		Token: token, Name: n.name, WGKey: n.wgKey,
		// The coordinator lists a node as a peer only once it has
		// endpoints. A real node publishes them with its first update;
		// here they come with the enrollment, so a join is one change.
		// Nothing ever sends to them.
		Endpoints: []netip.AddrPort{netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 0, 0, 1}), uint16(20000+n.idx%40000))},
	})
	if err != nil {
		return nil, fmt.Errorf("enroll %s: %w", n.name, err)
	}
	return er, nil
}

// cpProbe is one measured change: every participating stream records when
// it first receives a map that matches.
type cpProbe struct {
	needle  []byte // `"name":"x"` inside a map payload
	present bool   // match maps that list needle (join) or lack it (revoke)
	did     string // the node's DID: a delta removing it matches a revoke probe
	skip    int    // stream index that does not take part (-1: none)

	recv      []atomic.Int64 // per stream: unix ns of the matching map, 0 = not yet
	kept      []*wire.StreamMessage
	remaining atomic.Int64
	done      chan struct{}
}

func newProbe(n int, name, did string, present bool, skip int) *cpProbe {
	p := &cpProbe{
		needle: []byte(`"name":` + strconv.Quote(name)), present: present, did: did, skip: skip,
		recv: make([]atomic.Int64, n), kept: make([]*wire.StreamMessage, n), done: make(chan struct{}),
	}
	want := int64(n)
	if skip >= 0 {
		want--
	}
	p.remaining.Store(want)
	return p
}

// cpState is shared by every stream reader of one run.
type cpState struct {
	coordKey ed25519.PublicKey
	lastMap  atomic.Int64 // unix ns of the latest map on any stream
	probe    atomic.Pointer[cpProbe]
	badMaps  atomic.Int64 // maps failing verification, Self or serial order
	keepMod  int          // probe-matching maps of streams idx%keepMod==0 are kept

	mu      sync.Mutex // orders probe arming against streams dying
	dead    map[int]error
	lostErr error // the first unexpected stream end
}

// arm makes p the current probe; streams already dead do not take part.
func (st *cpState) arm(p *cpProbe) {
	st.mu.Lock()
	defer st.mu.Unlock()
	for i := range st.dead {
		if i != p.skip {
			p.recv[i].Store(-1)
			p.remaining.Add(-1)
		}
	}
	st.probe.Store(p)
	if p.remaining.Load() <= 0 {
		close(p.done)
	}
}

// died records that stream idx ended after it was up. The revoked node's
// stream ending is expected; any other is lost for the rest of the run and
// answers the current probe as missing.
func (st *cpState) died(idx int, err error) {
	st.mu.Lock()
	defer st.mu.Unlock()
	p := st.probe.Load()
	if p != nil && p.skip == idx {
		return
	}
	if st.dead == nil {
		st.dead = map[int]error{}
	}
	st.dead[idx] = err
	if st.lostErr == nil {
		st.lostErr = err
	}
	if p != nil && p.recv[idx].CompareAndSwap(0, -1) {
		if p.remaining.Add(-1) == 0 {
			close(p.done)
		}
	}
}

func (st *cpState) lost() (int, error) {
	st.mu.Lock()
	defer st.mu.Unlock()
	return len(st.dead), st.lostErr
}

// stream opens n's netmap stream, verifies its first map and signals up,
// then reads until the stream ends or ctx is done.
func (c *cpClient) stream(ctx context.Context, st *cpState, n *simNode, up chan<- error) {
	upSent := false
	signal := func(err error) {
		if !upSent {
			upSent = true
			up <- err
		}
	}
	body, err := c.WithIdentity(n.key).OpenStream(ctx)
	if err != nil {
		signal(fmt.Errorf("open stream %s: %w", n.name, err))
		return
	}
	defer body.Close()
	r := bufio.NewReaderSize(body, controlclient.StreamReadBuffer)
	var (
		lastSerial uint64
		done       *cpProbe // the latest probe this stream has answered
		line       []byte
	)
	for {
		line, err = controlclient.ReadLine(r, line[:0], wire.MaxStreamLine)
		if err != nil {
			err = fmt.Errorf("stream %s: %w", n.name, err)
			if upSent && ctx.Err() == nil {
				st.died(n.idx, err)
			}
			signal(err)
			return // EOF on Close, kick on revoke, or ctx cancelled
		}
		now := time.Now().UnixNano()
		isMap := bytes.HasPrefix(line, []byte(`{"type":"map"`))
		if !isMap && !bytes.HasPrefix(line, []byte(`{"type":"delta"`)) {
			continue // keepalive
		}
		st.lastMap.Store(now)
		p := st.probe.Load()
		if upSent && (p == nil || p == done || p.skip == n.idx) {
			continue // nothing to learn from this message: skip decoding it
		}
		var msg wire.StreamMessage
		if err := json.Unmarshal(line, &msg); err != nil || isMap && msg.Map == nil || !isMap && msg.Delta == nil {
			st.badMaps.Add(1)
			signal(fmt.Errorf("stream %s: bad message: %v", n.name, err))
			continue
		}
		signed := msg.Map
		if !isMap {
			signed = msg.Delta
		}
		serial, ok := payloadSerial(signed.Payload)
		if !ok || serial < lastSerial {
			st.badMaps.Add(1)
		}
		lastSerial = serial
		if !upSent {
			err := checkFirstMap(st.coordKey, msg.Map, n.name)
			if err != nil {
				st.badMaps.Add(1)
			}
			signal(err)
			line = nil // a 5,000-node map is 1.5 MB; deltas after it are small
			continue
		}
		if !p.matches(isMap, signed.Payload) {
			continue
		}
		done = p
		if n.idx%st.keepMod == 0 {
			p.kept[n.idx] = &msg
		}
		if p.recv[n.idx].CompareAndSwap(0, now) && p.remaining.Add(-1) == 0 {
			close(p.done)
		}
	}
}

// matches reports whether a map or delta payload carries the probe's
// change: for a join, the node listed (a map) or upserted (a delta); for
// a revoke, a map without it or a delta removing its DID.
func (p *cpProbe) matches(isMap bool, payload []byte) bool {
	if isMap || p.present {
		return bytes.Contains(payload, p.needle) == p.present
	}
	i := bytes.Index(payload, []byte(`"remove":[`))
	if i < 0 {
		return false
	}
	rm := payload[i:]
	if j := bytes.IndexByte(rm, ']'); j >= 0 {
		rm = rm[:j]
	}
	return bytes.Contains(rm, []byte(strconv.Quote(p.did)))
}

// checkFirstMap verifies a stream's first map and that it is for name. It
// decodes only Self: decoding every peer of every first map would measure
// the simulated clients, not the coordinator.
func checkFirstMap(key ed25519.PublicKey, s *wire.Signed, name string) error {
	if s == nil {
		return errors.New("first message is not a map")
	}
	if !wire.VerifySignature(key, s) {
		return fmt.Errorf("first map of %s: %w", name, wire.ErrBadSignature)
	}
	i := bytes.Index(s.Payload, []byte(`"self":`))
	if i < 0 {
		return fmt.Errorf("first map of %s has no self", name)
	}
	var self wire.Node
	if err := json.NewDecoder(bytes.NewReader(s.Payload[i+len(`"self":`):])).Decode(&self); err != nil {
		return fmt.Errorf("first map of %s: self: %w", name, err)
	}
	if self.Name != name {
		return fmt.Errorf("map for %q", self.Name)
	}
	return nil
}

// payloadSerial reads the top-level serial of a map payload without
// decoding the whole map (wire.Map marshals protocol_version, then serial).
func payloadSerial(payload []byte) (uint64, bool) {
	i := bytes.Index(payload, []byte(`"serial":`))
	if i < 0 {
		return 0, false
	}
	s := payload[i+len(`"serial":`):]
	j := 0
	for j < len(s) && s[j] >= '0' && s[j] <= '9' {
		j++
	}
	v, err := strconv.ParseUint(string(s[:j]), 10, 64)
	return v, err == nil
}

// controlPlaneRun measures one scale n with a fresh coordinator.
func controlPlaneRun(ctx context.Context, o Options, n int, revoke bool, bin, binNote string) (out []Result, err error) {
	setup := fmt.Sprintf("controlplane-%d", n)
	dir, err := os.MkdirTemp("", "agentnet-bench-coord-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	co, err := startCoord(ctx, o, bin, dir)
	if err != nil {
		return nil, err
	}
	cl := newCPClient(co.cred)
	streamCtx, stopStreams := context.WithCancel(ctx)
	var readers sync.WaitGroup
	defer func() {
		stopStreams()
		readers.Wait()
		cl.Close()
		if cerr := co.close(); cerr != nil && err == nil {
			err = cerr
		}
	}()

	admin := adminclient.New(co.cred)
	tok, err := admin.CreateToken(ctx, wire.CreateTokenRequest{Reusable: true, TTLSeconds: 6 * 3600})
	if err != nil {
		return nil, err
	}
	nodes := make([]*simNode, n+1) // nodes[n] is the probe's extra node
	for i := range nodes {
		if nodes[i], err = newSimNode(i, fmt.Sprintf("sim-%05d", i)); err != nil {
			return nil, err
		}
	}

	// Join.
	o.Progressf("controlplane N=%d: enrolling (%d at a time, coordinator %s)", n, cpJoinConcurrency, map[bool]string{true: "in-process", false: "child process"}[bin == ""])
	cpu0, _ := co.cpuSeconds()
	var coordKey ed25519.PublicKey
	var keyOnce sync.Once
	joinStart := time.Now()
	_, err = cpForEach(ctx, o, "enrolled", n, cpPhaseTimeout, func(ctx context.Context, i int) error {
		er, err := cl.enroll(ctx, nodes[i], tok.Token)
		if err == nil {
			keyOnce.Do(func() { coordKey = er.CoordinatorKey })
		}
		return err
	})
	joinS := time.Since(joinStart).Seconds()
	cpu1, _ := co.cpuSeconds()
	if err != nil {
		return nil, err
	}
	o.Progressf("controlplane N=%d: %d joined in %.1f s (%.0f/s), coordinator CPU %.1f s", n, n, joinS, float64(n)/joinS, cpu1-cpu0)
	cpuNote := binNote
	out = append(out,
		Summarize(setup, "join_s", "s", []float64{joinS}),
		withNote(Summarize(setup, "coord_cpu_s", "s", []float64{cpu1 - cpu0}), cpuNote))

	// Streams.
	st := &cpState{coordKey: coordKey, keepMod: max(1, (n+cpVerifySample-1)/cpVerifySample)}
	upStart := time.Now()
	upN, err := cpForEach(ctx, o, "streams up", n, cpStreamBudget, func(ctx context.Context, i int) error {
		up := make(chan error, 1)
		readers.Go(func() { cl.stream(streamCtx, st, nodes[i], up) })
		select {
		case err := <-up:
			return err
		case <-ctx.Done():
			return ctx.Err()
		}
	})
	upS := time.Since(upStart).Seconds()
	if be := (*cpBudgetError)(nil); errors.As(err, &be) && ctx.Err() == nil {
		// Not an error of the harness: the coordinator cannot bring this
		// many streams up in the budget. Report how far it got.
		note := fmt.Sprintf("only %d of %d streams up after %v (each stream's first map holds every node); fan-out not measured", upN, n, cpStreamBudget)
		o.Progressf("controlplane N=%d: %s", n, note)
		r := Summarize(setup, "streams_up_s", "s", nil)
		r.Note = note
		return append(out, r), nil
	}
	if err != nil {
		return out, err
	}
	if bad := st.badMaps.Load(); bad > 0 {
		return out, fmt.Errorf("%d first maps failed verification", bad)
	}
	o.Progressf("controlplane N=%d: %d streams up in %.1f s", n, n, upS)
	out = append(out, Summarize(setup, "streams_up_s", "s", []float64{upS}))
	if err := cpWaitQuiet(ctx, st); err != nil {
		return out, err
	}
	rss, err := co.rssMiB()
	if err != nil {
		return out, err
	}
	out = append(out, withNote(Summarize(setup, "coord_rss_mib", "MiB", []float64{rss}), binNote))
	o.Progressf("controlplane N=%d: quiet; coordinator RSS %.0f MiB", n, rss)

	// Fan-out of one join.
	extra := nodes[n]
	p := newProbe(n, extra.name, extra.did(), true, -1)
	st.arm(p)
	er, err := cl.enroll(ctx, extra, tok.Token)
	if err != nil {
		return out, err
	}
	t0 := time.Now()
	lat, err := cpProbeWait(ctx, st, p, t0, er.Map)
	if err != nil {
		return out, fmt.Errorf("fan-out: %w", err)
	}
	out = append(out, cpLatencyRows(setup, "fanout", lat, st)...)
	o.Progressf("controlplane N=%d: fan-out of one join to %d streams: p50 %.1f ms, p99 %.1f ms, max %.1f ms",
		n, len(lat), percentile(lat, 0.5), percentile(lat, 0.99), lat[len(lat)-1])

	if revoke {
		if err := cpWaitQuiet(ctx, st); err != nil {
			return out, err
		}
		victim := nodes[0]
		p := newProbe(n, victim.name, victim.did(), false, victim.idx)
		st.arm(p)
		if err := admin.DeleteNode(ctx, victim.name); err != nil {
			return out, err
		}
		t0 := time.Now()
		lat, err := cpProbeWait(ctx, st, p, t0, nil)
		if err != nil {
			return out, fmt.Errorf("revoke: %w", err)
		}
		out = append(out, cpLatencyRows(setup, "revoke", lat, st)...)
		o.Progressf("controlplane N=%d: revoke of one node to %d streams: p50 %.1f ms, p99 %.1f ms, max %.1f ms",
			n, len(lat), percentile(lat, 0.5), percentile(lat, 0.99), lat[len(lat)-1])
	}
	if bad := st.badMaps.Load(); bad > 0 {
		return out, fmt.Errorf("%d maps failed verification or went back in serial", bad)
	}
	return out, nil
}

func withNote(r Result, note string) Result {
	r.Note = note
	return r
}

// cpForEach runs f for 0..n-1, cpJoinConcurrency at a time, stopping at the
// first error, and prints the rate every 5 s.
func cpForEach(ctx context.Context, o Options, what string, n int, budget time.Duration, f func(ctx context.Context, i int) error) (int, error) {
	ctx, cancel := context.WithTimeoutCause(ctx, budget, &cpBudgetError{what: what, budget: budget})
	defer cancel()
	var (
		next, doneN atomic.Int64
		wg          sync.WaitGroup
		errOnce     sync.Once
		first       error
	)
	start := time.Now()
	tick := time.NewTicker(5 * time.Second)
	defer tick.Stop()
	finished := make(chan struct{})
	go func() {
		last, lastT := int64(0), start
		for {
			select {
			case <-finished:
				return
			case t := <-tick.C:
				d := doneN.Load()
				o.Progressf("  %s %d/%d (%.0f/s)", what, d, n, float64(d-last)/t.Sub(lastT).Seconds())
				last, lastT = d, t
			}
		}
	}()
	for range min(cpJoinConcurrency, n) {
		wg.Go(func() {
			for ctx.Err() == nil {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				if err := f(ctx, i); err != nil {
					errOnce.Do(func() { first = err; cancel() })
					return
				}
				doneN.Add(1)
			}
		})
	}
	wg.Wait()
	close(finished)
	if ctx.Err() != nil {
		if c := context.Cause(ctx); errors.As(c, new(*cpBudgetError)) || first == nil {
			first = c
		}
	}
	return int(doneN.Load()), first
}

// cpBudgetError is a phase that did not finish within its budget.
type cpBudgetError struct {
	what   string
	budget time.Duration
}

func (e *cpBudgetError) Error() string { return fmt.Sprintf("%s: not done after %v", e.what, e.budget) }

// cpWaitQuiet waits until no stream has received a map for cpQuiet.
func cpWaitQuiet(ctx context.Context, st *cpState) error {
	deadline := time.Now().Add(cpPhaseTimeout)
	for {
		idle := time.Since(time.Unix(0, st.lastMap.Load()))
		if idle >= cpQuiet {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("streams not quiet after %v", cpPhaseTimeout)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(cpQuiet - idle):
		}
	}
}

// cpProbeWait waits for every participating stream to answer p, verifies the
// kept maps, clears the probe and returns the latencies from t0 in ms,
// sorted. A stream that got the map before t0 (the coordinator notifies
// before it answers the request) counts 0.
func cpProbeWait(ctx context.Context, st *cpState, p *cpProbe, t0 time.Time, changeMap *wire.Signed) ([]float64, error) {
	defer st.probe.Store(nil)
	select {
	case <-p.done:
	case <-ctx.Done():
		k, err := st.lost()
		return nil, fmt.Errorf("%w: %d streams never got the change (%d lost, first: %v)", ctx.Err(), p.remaining.Load(), k, err)
	case <-time.After(cpPhaseTimeout):
		k, err := st.lost()
		return nil, fmt.Errorf("%d streams never got the change (%d lost, first: %v)", p.remaining.Load(), k, err)
	}
	var minSerial uint64
	if changeMap != nil {
		m, err := changeMap.Verify(st.coordKey)
		if err != nil {
			return nil, err
		}
		minSerial = m.Serial
	}
	name, _ := strconv.Unquote(string(p.needle[len(`"name":`):]))
	var lat []float64
	for i := range p.recv {
		if i == p.skip {
			continue
		}
		at := p.recv[i].Load()
		if at < 0 {
			continue // stream lost before it got the change
		}
		lat = append(lat, max(0, float64(at-t0.UnixNano())/1e6))
		if msg := p.kept[i]; msg != nil {
			if err := p.check(st.coordKey, msg, name, minSerial); err != nil {
				return nil, fmt.Errorf("stream %d: %w", i, err)
			}
		}
	}
	slices.Sort(lat)
	if len(lat) == 0 {
		return nil, errors.New("every stream was lost")
	}
	return lat, nil
}

// check verifies a kept map or delta and that it carries the change.
func (p *cpProbe) check(key ed25519.PublicKey, msg *wire.StreamMessage, name string, minSerial uint64) error {
	if msg.Map != nil {
		m, err := msg.Map.Verify(key)
		if err != nil {
			return err
		}
		if _, ok := m.Peer(name); ok != p.present || m.Serial < minSerial {
			return fmt.Errorf("map serial %d does not reflect the change to %s", m.Serial, name)
		}
		return nil
	}
	d, err := msg.Delta.VerifyDelta(key)
	if err != nil {
		return err
	}
	ok := false
	if p.present {
		ok = slices.ContainsFunc(d.Upsert, func(n wire.Node) bool { return n.Name == name })
	} else {
		ok = slices.Contains(d.Remove, p.did)
	}
	if !ok || d.Serial < minSerial {
		return fmt.Errorf("delta serial %d does not carry the change to %s", d.Serial, name)
	}
	return nil
}

func cpLatencyRows(setup, what string, lat []float64, st *cpState) []Result {
	p50, p99 := percentile(lat, 0.5), percentile(lat, 0.99)
	// One change is one sample set; Median/Min/Max of the p-rows are the
	// percentile itself, N the number of streams behind it.
	r50 := Result{Setup: setup, Metric: what + "_p50_ms", Unit: "ms", Median: p50, Min: p50, Max: p50, N: len(lat)}
	r99 := Result{Setup: setup, Metric: what + "_p99_ms", Unit: "ms", Median: p99, Min: p99, Max: p99, N: len(lat)}
	if k, err := st.lost(); k > 0 {
		r50.Note = fmt.Sprintf("%d streams lost before this change (first: %v)", k, err)
		r99.Note = r50.Note
	}
	return []Result{r50, r99}
}

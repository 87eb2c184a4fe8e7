package bench

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/agentnet/agentnet/wire"
)

// ErrNoAgentnet is returned (wrapped) by the rows that run an agentnet
// process when Options.Agentnet is empty.
var ErrNoAgentnet = errors.New("no agentnet binary to run as a process (Options.Agentnet)")

// agentnetBinary returns Options.Agentnet or ErrNoAgentnet.
func (o Options) agentnetBinary() (string, error) {
	if o.Agentnet == "" {
		return "", ErrNoAgentnet
	}
	return o.Agentnet, nil
}

// RSS measures only the resident memory of a node process, idle and with
// 100 and 1,000 peers (Quick: 100), the last rows of DataPlane; about a
// minute instead of DataPlane's five.
func RSS(ctx context.Context, o Options) ([]Result, error) {
	o = o.withDefaults()
	rs, err := measureRSS(ctx, o, dpParamsFor(o))
	if err != nil {
		err = fmt.Errorf("rss: %w", err)
	}
	return rs, err
}

// measureRSS runs `agentnet node` (netstack mode, 127.0.0.1:0) as its own
// process against an in-process coordinator and reads its VmRSS once it
// follows the map and has settled: with no peers, then with the map grown
// to each of p.rssPeers peers by enrolling simulated nodes (their own
// identity and WireGuard keys, dummy endpoints that never answer).
func measureRSS(ctx context.Context, o Options, p dpParams) ([]Result, error) {
	bin, err := o.agentnetBinary()
	if err != nil {
		return nil, err
	}
	an, err := newAgentnetNet(ctx, o.Logger)
	if err != nil {
		return nil, err
	}
	defer an.close()
	reps := min(p.reps, 3)
	var rs []Result
	enrolled := 0
	counts := append([]int{0}, p.rssPeers...)
	for _, peers := range counts {
		metric := MetricRSSIdle
		switch peers {
		case 0:
		case 100:
			metric = MetricRSS100Peers
		case 1000:
			metric = MetricRSS1000Peers
		default:
			metric = fmt.Sprintf("rss_%dpeers_mib", peers)
		}
		if peers > enrolled {
			t0 := time.Now()
			if err := enrollSimulated(ctx, an, enrolled, peers); err != nil {
				return rs, err
			}
			o.Progressf("dataplane rss: enrolled %d simulated peers in %v", peers-enrolled, time.Since(t0).Round(time.Millisecond))
			enrolled = peers
		}
		var samples []float64
		for rep := range reps {
			mib, err := nodeRSS(ctx, an, bin, fmt.Sprintf("rss%d-%d", peers, rep), peers)
			if err != nil {
				return rs, fmt.Errorf("node with %d peers: %w", peers, err)
			}
			o.Progressf("dataplane rss: node process with %d peers: %.1f MiB", peers, mib)
			samples = append(samples, mib)
		}
		rs = append(rs, Summarize(SetupAgentnetDirect, metric, "MiB", samples))
	}
	return rs, nil
}

// enrollSimulated enrolls simulated nodes peer<from>..peer<to-1> (own
// identity and WireGuard keys, endpoints nothing ever sends to) with the
// control-plane bench's client, 8 at a time.
func enrollSimulated(ctx context.Context, an *agentnetNet, from, to int) error {
	client := newCPClient(an.coord.AdminCred())
	defer client.Close()
	idx := make(chan int)
	var (
		mu       sync.Mutex
		firstErr error
		wg       sync.WaitGroup
	)
	for range 8 {
		wg.Go(func() {
			for i := range idx {
				n, err := newSimNode(i, fmt.Sprintf("peer%04d", i))
				if err == nil {
					_, err = client.enroll(ctx, n, an.token)
				}
				if err != nil {
					mu.Lock()
					if firstErr == nil {
						firstErr = fmt.Errorf("enroll peer%04d: %w", i, err)
					}
					mu.Unlock()
				}
			}
		})
	}
	for i := from; i < to; i++ {
		idx <- i
	}
	close(idx)
	wg.Wait()
	return firstErr
}

// nodeRSS starts `bin node` as name, waits until the coordinator sees it
// online (it follows the map) and it has settled, and returns its VmRSS in
// MiB. The node is stopped and deleted from the coordinator afterwards.
func nodeRSS(ctx context.Context, an *agentnetNet, bin, name string, peers int) (float64, error) {
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	state := filepath.Join(an.dir, name)
	var logs bytes.Buffer
	cmd := exec.Command(bin, "node", "--token", an.token, "--name", name, "--state", state,
		"--listen", "127.0.0.1:0", "--log-level", "warn")
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		return 0, err
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	defer func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
		_ = an.admin.DeleteNode(context.WithoutCancel(ctx), name)
		os.RemoveAll(state)
	}()
	// Online: the node enrolled, configured its peers and follows the map.
	for {
		nodes, err := an.admin.Nodes(ctx)
		if err == nil && online(nodes, name) && len(nodes) >= peers+1 {
			break
		}
		select {
		case err := <-exited:
			exited <- err
			return 0, fmt.Errorf("node exited: %v: %s", err, lastLines(logs.String(), 5))
		case <-ctx.Done():
			return 0, fmt.Errorf("node not online within 60s: %s", lastLines(logs.String(), 5))
		case <-time.After(100 * time.Millisecond):
		}
	}
	select { // settle
	case <-time.After(1500 * time.Millisecond):
	case <-ctx.Done():
		return 0, ctx.Err()
	}
	return vmRSS(cmd.Process.Pid)
}

func online(nodes []wire.Node, name string) bool {
	for _, n := range nodes {
		if n.Name == name {
			return n.Online
		}
	}
	return false
}

// vmRSS reads VmRSS of pid from /proc, in MiB.
func vmRSS(pid int) (float64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			f := strings.Fields(v) // "12345 kB"
			if len(f) == 2 && f[1] == "kB" {
				kb, err := strconv.ParseFloat(f[0], 64)
				return kb / 1024, err
			}
		}
	}
	return 0, errors.New("no VmRSS in /proc/PID/status")
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], " | ")
}

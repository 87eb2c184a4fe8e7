package bench

import (
	"fmt"
	"io"
	"math"
	"strconv"
	"text/tabwriter"
)

// PrintTable writes rs as an aligned table. For metrics also measured on
// wg-raw or loopback, the columns "x wg-raw" and "x loopback" give the
// row's median over that baseline's median (so >1 is more throughput, or
// more latency/CPU/memory). Rows that were not measured (N == 0) show their
// Note; footnotes explain the CPU metric.
func PrintTable(w io.Writer, rs []Result) {
	base := map[[2]string]float64{}
	for _, r := range rs {
		if r.N > 0 && (r.Setup == SetupWGRaw || r.Setup == SetupLoopback) {
			base[[2]string{r.Setup, r.Metric}] = r.Median
		}
	}
	ratio := func(setup string, r Result) string {
		b, ok := base[[2]string{setup, r.Metric}]
		if !ok || r.N == 0 || b == 0 {
			return ""
		}
		return strconv.FormatFloat(r.Median/b, 'f', 2, 64)
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "setup\tmetric\tunit\tmedian\tmin\tmax\tn\tx wg-raw\tx loopback\t")
	var notes []string
	cpu := false
	for _, r := range rs {
		if r.N == 0 {
			notes = append(notes, fmt.Sprintf("%s %s: %s", r.Setup, r.Metric, orDash(r.Note)))
			fmt.Fprintf(tw, "%s\t%s\t%s\t-\t-\t-\t0\t\t\t\n", r.Setup, r.Metric, r.Unit)
			continue
		}
		if r.Metric == MetricCPU {
			cpu = true
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%d\t%s\t%s\t\n", r.Setup, r.Metric, r.Unit,
			num(r.Median), num(r.Min), num(r.Max), r.N, ratio(SetupWGRaw, r), ratio(SetupLoopback, r))
		if r.Note != "" {
			notes = append(notes, fmt.Sprintf("%s %s: %s", r.Setup, r.Metric, r.Note))
		}
	}
	tw.Flush()
	if cpu {
		notes = append(notes, MetricCPU+": CPU seconds (user+system) during the 1-stream run per GiB moved: getrusage of this whole process, where both ends (and for wg-raw/agentnet-direct both WireGuard devices) run; for veth/agentnet-tun plus the node and coordinator processes (/proc/PID/stat); for tsnet/tsnet-derp the bench/tsnet process (both nodes, the DERP and control servers), kernel work in softirq context is charged to whoever was running")
	}
	for i, n := range notes {
		fmt.Fprintf(w, "[%d] %s\n", i+1, n)
	}
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// num formats with about three significant digits, without exponents.
func num(v float64) string {
	a := math.Abs(v)
	switch {
	case a >= 100 || a == 0:
		return strconv.FormatFloat(v, 'f', 0, 64)
	case a >= 10:
		return strconv.FormatFloat(v, 'f', 1, 64)
	case a >= 1:
		return strconv.FormatFloat(v, 'f', 2, 64)
	default:
		return strconv.FormatFloat(v, 'f', 3, 64)
	}
}

package netstack

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	gvlog "gvisor.dev/gvisor/pkg/log"
)

// RouteGVisorLogs sends gVisor's own log lines (glog format on stderr by
// default) to l at Debug level: they are per-packet notes such as "duplicate
// SYN", not operator news. gVisor's logger is process-wide, so only a
// program's main should call this, once.
func RouteGVisorLogs(l *slog.Logger) {
	gvlog.SetTarget(slogEmitter{l})
}

type slogEmitter struct{ l *slog.Logger }

func (e slogEmitter) Emit(_ int, level gvlog.Level, _ time.Time, format string, v ...any) {
	if !e.l.Enabled(context.Background(), slog.LevelDebug) {
		return
	}
	e.l.Debug(fmt.Sprintf(format, v...), "component", "gvisor", "gvisor_level", level.String())
}

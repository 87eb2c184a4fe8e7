package relay

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/pion/logging"
)

// pionLogs routes pion/turn's own logs into the relay's slog.Logger. pion
// logs per packet (including remote input), so everything it says goes to
// Debug; the relay logs its own decisions (refusals, allocations) itself.
type pionLogs struct{ log *slog.Logger }

func (f pionLogs) NewLogger(scope string) logging.LeveledLogger {
	return pionLogger{log: f.log, scope: scope}
}

type pionLogger struct {
	log   *slog.Logger
	scope string
}

func (l pionLogger) emit(msg string) {
	if l.log.Enabled(context.Background(), slog.LevelDebug) {
		l.log.Debug("relay: pion", "scope", l.scope, "msg", msg)
	}
}

func (l pionLogger) emitf(format string, args ...any) {
	if l.log.Enabled(context.Background(), slog.LevelDebug) {
		l.log.Debug("relay: pion", "scope", l.scope, "msg", fmt.Sprintf(format, args...))
	}
}

func (l pionLogger) Trace(string)          {}
func (l pionLogger) Tracef(string, ...any) {}
func (l pionLogger) Debug(m string)        { l.emit(m) }
func (l pionLogger) Debugf(f string, a ...any) {
	l.emitf(f, a...)
}
func (l pionLogger) Info(m string)             { l.emit(m) }
func (l pionLogger) Infof(f string, a ...any)  { l.emitf(f, a...) }
func (l pionLogger) Warn(m string)             { l.emit(m) }
func (l pionLogger) Warnf(f string, a ...any)  { l.emitf(f, a...) }
func (l pionLogger) Error(m string)            { l.emit(m) }
func (l pionLogger) Errorf(f string, a ...any) { l.emitf(f, a...) }

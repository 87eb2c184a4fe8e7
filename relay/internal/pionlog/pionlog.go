// Package pionlog routes pion/turn's logs (server and client) into slog,
// for the relay server and the TURN client alike.
package pionlog

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/pion/logging"
)

// Factory is pion's logging.LoggerFactory over a slog.Logger.
// pion logs per packet, including remote input, so on the server
// everything it says goes to Debug; the relay logs its own decisions
// (refusals, allocations) itself. A client's warnings and errors are about
// its own allocation and go to Warn; onWarn sees each of them first and
// may take it (returning true), e.g. to notice a failed refresh that pion
// only logs.
type Factory struct {
	Log    *slog.Logger          // required
	Client bool                  // a client's warnings go to Warn; a server's to Debug
	OnWarn func(msg string) bool // optional
}

// NewLogger implements logging.LoggerFactory.
func (f Factory) NewLogger(scope string) logging.LeveledLogger {
	return pionLogger{f: f, scope: scope}
}

type pionLogger struct {
	f     Factory
	scope string
}

func (l pionLogger) emit(level slog.Level, msg string) {
	l.f.Log.Log(context.Background(), level, "relay: pion", "scope", l.scope, "msg", msg)
}

func (l pionLogger) debug(msg string) {
	if l.f.Log.Enabled(context.Background(), slog.LevelDebug) {
		l.emit(slog.LevelDebug, msg)
	}
}

func (l pionLogger) debugf(format string, args ...any) {
	if l.f.Log.Enabled(context.Background(), slog.LevelDebug) {
		l.emit(slog.LevelDebug, fmt.Sprintf(format, args...))
	}
}

func (l pionLogger) warn(msg string) {
	if l.f.OnWarn != nil && l.f.OnWarn(msg) {
		return
	}
	if l.f.Client {
		l.emit(slog.LevelWarn, msg)
		return
	}
	l.debug(msg)
}

func (l pionLogger) Trace(string)              {}
func (l pionLogger) Tracef(string, ...any)     {}
func (l pionLogger) Debug(m string)            { l.debug(m) }
func (l pionLogger) Debugf(f string, a ...any) { l.debugf(f, a...) }
func (l pionLogger) Info(m string)             { l.debug(m) }
func (l pionLogger) Infof(f string, a ...any)  { l.debugf(f, a...) }
func (l pionLogger) Warn(m string)             { l.warn(m) }
func (l pionLogger) Warnf(f string, a ...any)  { l.warn(fmt.Sprintf(f, a...)) }
func (l pionLogger) Error(m string)            { l.warn(m) }
func (l pionLogger) Errorf(f string, a ...any) { l.warn(fmt.Sprintf(f, a...)) }

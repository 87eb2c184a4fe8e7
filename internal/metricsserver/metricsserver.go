// Package metricsserver serves one Prometheus registry at /metrics on its
// own plain-HTTP listener. Node and coordinator each run one, so several of
// them can share a process (tests, demo) without a global registry.
package metricsserver

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// shutdownWait bounds how long Close waits for in-flight scrapes.
const shutdownWait = 500 * time.Millisecond

// Server is a running /metrics endpoint. Its goroutine is owned by Close.
type Server struct {
	srv  *http.Server
	addr netip.AddrPort
	done chan struct{} // closed when the serve goroutine returns
}

// Serve listens on addr ("127.0.0.1:9100"; port 0 picks one) and serves reg.
func Serve(addr string, reg *prometheus.Registry, log *slog.Logger) (*Server, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{
		ErrorLog:            slog.NewLogLogger(log.Handler(), slog.LevelWarn),
		MaxRequestsInFlight: 4,
		Timeout:             10 * time.Second,
	}))
	ap, _ := netip.ParseAddrPort(ln.Addr().String())
	s := &Server{
		srv: &http.Server{
			Handler:           mux,
			ReadHeaderTimeout: 10 * time.Second,
			MaxHeaderBytes:    16 << 10,
			ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
		},
		addr: ap,
		done: make(chan struct{}),
	}
	go func() {
		defer close(s.done)
		if err := s.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("metrics server stopped", "err", err)
		}
	}()
	return s, nil
}

// Addr is the bound address; nil-safe (zero when s is nil).
func (s *Server) Addr() netip.AddrPort {
	if s == nil {
		return netip.AddrPort{}
	}
	return s.addr
}

// Close stops the listener, gives in-flight scrapes a moment, and waits for
// the serve goroutine. Nil-safe.
func (s *Server) Close() {
	if s == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), shutdownWait)
	defer cancel()
	if err := s.srv.Shutdown(ctx); err != nil {
		s.srv.Close()
	}
	<-s.done
}

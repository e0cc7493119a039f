// Package serve holds what every longhaul role's servers share: the HTTP
// health and metrics endpoints and gRPC health/reflection set-up.
package serve

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Check reports whether a dependency is ready; nil means ready.
type Check func(ctx context.Context) error

// NewRegistry returns a registry with the Go runtime and process collectors.
func NewRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}

// Mux returns an HTTP mux with /healthz (the process is up), /readyz (every
// check passes, each named in the answer) and /metrics (gatherer).
func Mux(gatherer prometheus.Gatherer, checks map[string]Check) *http.ServeMux {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
		defer cancel()
		out := map[string]string{}
		code := http.StatusOK
		for name, check := range checks {
			if err := check(ctx); err != nil {
				out[name] = err.Error()
				code = http.StatusServiceUnavailable
			} else {
				out[name] = "ok"
			}
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(code)
		_ = json.NewEncoder(w).Encode(out)
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(gatherer, promhttp.HandlerOpts{}))
	return mux
}

// HTTP serves handler on ln until Stop.
type HTTP struct {
	srv  *http.Server
	done chan error
}

// StartHTTP serves handler on ln in the background.
func StartHTTP(ln net.Listener, handler http.Handler, log *slog.Logger) *HTTP {
	h := &HTTP{
		srv: &http.Server{Handler: handler, ReadHeaderTimeout: 10 * time.Second,
			ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn)},
		done: make(chan error, 1),
	}
	go func() {
		err := h.srv.Serve(ln)
		if errors.Is(err, http.ErrServerClosed) {
			err = nil
		}
		h.done <- err
	}()
	return h
}

// Stop shuts the server down gracefully, then waits for it.
func (h *HTTP) Stop(ctx context.Context) error {
	err := h.srv.Shutdown(ctx)
	if serr := <-h.done; err == nil {
		err = serr
	}
	return err
}

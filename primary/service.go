package primary

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	_ "google.golang.org/grpc/encoding/gzip" // edges before zstd ship gzip-compressed batches
	"google.golang.org/grpc/keepalive"

	longhaulv1 "github.com/longhaul/longhaul/api/longhaul/v1"
	"github.com/longhaul/longhaul/internal/serve"
	"github.com/longhaul/longhaul/internal/wire"
	_ "github.com/longhaul/longhaul/internal/zstdgrpc" // edges ship zstd-compressed batches
	"github.com/longhaul/longhaul/primary/migrate"
)

// Config configures the primary service (`longhaul primary`).
type Config struct {
	// DatabaseURL is the PostgreSQL to write to. Required.
	DatabaseURL string
	// Listen is the gRPC address edges ship to. Default "127.0.0.1:7400".
	Listen string
	// HTTPListen serves /healthz, /readyz and /metrics. Default
	// "127.0.0.1:7401".
	HTTPListen string
	// MaxConns bounds the database connection pool. Default 16.
	MaxConns int32
	// Applier configures the write paths; its Logger and Registerer are
	// set from the service's.
	Applier ApplierConfig
	// Server configures the shipping streams.
	Server ServerConfig
	// CalibrateThreshold measures the UNNEST/COPY crossover on the database
	// at start and uses it, unless Applier.CopyThreshold is set.
	CalibrateThreshold bool
	// DrainTimeout bounds how long Stop waits for batches being applied.
	// Default 30s.
	DrainTimeout time.Duration
	Logger       *slog.Logger
	// Registry receives every metric and serves /metrics. Default: a new
	// registry with the Go and process collectors.
	Registry *prometheus.Registry
	// TLS, when set, serves both listeners over TLS. With ClientAuth
	// tls.RequireAndVerifyClientCert (--tls-client-ca) only edges holding a
	// certificate from that CA may ship; the HTTP endpoints then verify a
	// client certificate only when one is presented.
	TLS *tls.Config
}

func (c *Config) setDefaults() {
	if c.Listen == "" {
		c.Listen = "127.0.0.1:7400"
	}
	if c.HTTPListen == "" {
		c.HTTPListen = "127.0.0.1:7401"
	}
	if c.MaxConns == 0 {
		c.MaxConns = 16
	}
	if c.DrainTimeout == 0 {
		c.DrainTimeout = 30 * time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Registry == nil {
		c.Registry = serve.NewRegistry()
	}
}

func (c *Config) validate() error {
	if c.DatabaseURL == "" {
		return errors.New("primary: database URL is required")
	}
	if c.MaxConns < 1 {
		return fmt.Errorf("primary: MaxConns must be at least 1, got %d", c.MaxConns)
	}
	return nil
}

// Service runs the primary: the database pool and migrations, the Shipper
// gRPC service (with health and reflection) and the HTTP endpoints.
type Service struct {
	cfg     Config
	log     *slog.Logger
	pool    *pgxpool.Pool
	applier *Applier
	server  *Server
	grpc    *serve.GRPC
	http    *serve.HTTP
	ln      net.Listener
	httpLn  net.Listener

	stopOnce sync.Once
	stopErr  error
}

// Start connects, migrates, and starts serving. The listeners are bound
// when Start returns (see Addr and HTTPAddr).
func Start(ctx context.Context, cfg Config) (*Service, error) {
	cfg.setDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	s := &Service{cfg: cfg, log: cfg.Logger}
	ok := false
	defer func() {
		if !ok {
			s.close()
		}
	}()

	pcfg, err := pgxpool.ParseConfig(cfg.DatabaseURL)
	if err != nil {
		return nil, fmt.Errorf("primary: database URL: %w", err)
	}
	pcfg.MaxConns = cfg.MaxConns
	if s.pool, err = pgxpool.NewWithConfig(ctx, pcfg); err != nil {
		return nil, fmt.Errorf("primary: connect: %w", err)
	}
	n, err := migrate.Up(ctx, s.pool)
	if err != nil {
		return nil, err
	}
	s.log.Info("primary: schema ready", "version", migrate.Latest(), "applied_now", n)

	acfg := cfg.Applier
	acfg.Logger, acfg.Registerer = s.log, cfg.Registry
	if acfg.CopyThreshold == 0 && cfg.CalibrateThreshold {
		cal, err := Calibrate(ctx, s.pool, CalibrateOptions{})
		if err != nil {
			return nil, err
		}
		acfg.CopyThreshold = cal.Threshold
		s.log.Info("primary: measured the UNNEST/COPY crossover", "copy_threshold", cal.Threshold, "points", cal.String())
	}
	if s.applier, err = NewApplier(s.pool, acfg); err != nil {
		return nil, err
	}
	scfg := cfg.Server
	scfg.Logger, scfg.Registerer = s.log, cfg.Registry
	if s.server, err = NewServer(s.applier, scfg); err != nil {
		return nil, err
	}

	if s.ln, err = net.Listen("tcp", cfg.Listen); err != nil {
		return nil, fmt.Errorf("primary: listen %s: %w", cfg.Listen, err)
	}
	if s.httpLn, err = net.Listen("tcp", cfg.HTTPListen); err != nil {
		return nil, fmt.Errorf("primary: listen %s: %w", cfg.HTTPListen, err)
	}
	s.httpLn = serve.HTTPListener(s.httpLn, cfg.TLS)
	s.grpc = serve.NewGRPC(append(serve.GRPCTLS(cfg.TLS),
		grpc.MaxRecvMsgSize(256<<20), // a batch of 500,000 insights
		// Windows large enough for several multi-MiB batches in flight
		// across a long round trip; gRPC's own start at 64 KiB and grow
		// one round trip at a time.
		grpc.InitialWindowSize(16<<20),
		grpc.InitialConnWindowSize(64<<20),
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: 20 * time.Second, Timeout: 10 * time.Second}),
		// Batches are read into insights sharing one copy of the request,
		// not a string per field (see internal/wire).
		grpc.ForceServerCodecV2(wire.Codec{}),
	)...)
	longhaulv1.RegisterShipperServer(s.grpc.Server, s.server)
	s.grpc.Serve(s.ln, longhaulv1.Shipper_ServiceDesc.ServiceName)

	mux := serve.Mux(cfg.Registry, map[string]serve.Check{
		"database": func(ctx context.Context) error { return s.pool.Ping(ctx) },
		"schema": func(ctx context.Context) error {
			v, err := migrate.Current(ctx, s.pool)
			if err != nil {
				return err
			}
			if v != migrate.Latest() {
				return fmt.Errorf("schema version %d, want %d", v, migrate.Latest())
			}
			return nil
		},
	})
	s.http = serve.StartHTTP(s.httpLn, mux, s.log)
	s.log.Info("primary: serving", "grpc", s.ln.Addr().String(), "http", s.httpLn.Addr().String(),
		"copy_threshold", s.applier.cfg.CopyThreshold)
	ok = true
	return s, nil
}

// Addr is the gRPC address edges ship to.
func (s *Service) Addr() string { return s.ln.Addr().String() }

// HTTPAddr is the address of /healthz, /readyz and /metrics.
func (s *Service) HTTPAddr() string { return s.httpLn.Addr().String() }

// Applier returns the service's applier.
func (s *Service) Applier() *Applier { return s.applier }

// Stop stops taking batches, lets the batches being applied finish and be
// acknowledged (within DrainTimeout), then stops the servers and closes the
// pool. Batches received but not applied are not acknowledged: the edges
// send them again. Safe to call twice.
func (s *Service) Stop(ctx context.Context) error {
	s.stopOnce.Do(func() {
		s.grpc.Draining()
		s.server.Drain()
		if err := s.grpc.Stop(ctx, s.cfg.DrainTimeout); err != nil {
			s.stopErr = err
		}
		s.grpc = nil
		if err := s.http.Stop(ctx); err != nil && s.stopErr == nil {
			s.stopErr = err
		}
		s.http = nil
		s.close()
		s.log.Info("primary: stopped")
	})
	return s.stopErr
}

// close releases what Start acquired; it is what is left for Stop after
// the servers have stopped, and what a failed Start undoes.
func (s *Service) close() {
	if s.grpc != nil {
		s.grpc.Server.Stop()
	}
	if s.http != nil {
		_ = s.http.Stop(context.Background())
	}
	for _, ln := range []net.Listener{s.ln, s.httpLn} {
		if ln != nil {
			_ = ln.Close()
		}
	}
	if s.pool != nil {
		s.pool.Close()
	}
}

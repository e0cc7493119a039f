package edge

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"

	longhaulv1 "github.com/longhaul/longhaul/api/longhaul/v1"
	"github.com/longhaul/longhaul/internal/serve"
	"github.com/longhaul/longhaul/topology"
	"github.com/longhaul/longhaul/wal"
)

// Config configures an edge (`longhaul edge`).
type Config struct {
	// Region and NodeID name the edge; the edge id the primary keeps its
	// ledger under is "Region/NodeID". Required.
	Region, NodeID string
	// DataDir holds the WAL. Required.
	DataDir string
	// Listen is the gRPC address checkers push to. Default "127.0.0.1:7300".
	Listen string
	// HTTPListen serves the HTTP/JSON API (/v1/insights:push,
	// /v1/scans:complete, /v1/topology), /v1/budget, /healthz, /readyz and
	// /metrics. Default "127.0.0.1:7301".
	HTTPListen string
	// Primary is the primary's gRPC address. Required.
	Primary string
	// QuotaBytes bounds the WAL; beyond it pushes get RESOURCE_EXHAUSTED /
	// HTTP 429. Default wal.DefaultQuotaBytes (1 GiB).
	QuotaBytes int64
	// MaxRequestBytes bounds one gRPC message or HTTP body. Default 64 MiB.
	MaxRequestBytes int
	// Limits bound what one request may hold; see Limits for defaults.
	Limits Limits
	// MaxStreamsPerConn bounds the concurrent gRPC calls (streams) of one
	// connection; a client opening more waits (gRPC-Go), or has them
	// refused (REFUSED_STREAM). Default 64.
	MaxStreamsPerConn uint32
	// TLS, when set, serves both listeners over TLS. With ClientAuth
	// tls.RequireAndVerifyClientCert (--tls-client-ca) checkers need a
	// certificate from that CA: the gRPC listener asks for it in the
	// handshake, the HTTP one verifies it when presented and requires it
	// on the Ingest routes (see access.go).
	TLS *tls.Config
	// PeerTLS is the client configuration the status page's cluster view
	// (/v1/cluster) uses to ask the other edges, which serve TLS when this
	// one does (their CA, and a client certificate if they require one).
	PeerTLS *tls.Config
	// Access configures checkers' bearer tokens and the push rate of each
	// client; see Access for defaults.
	Access Access
	// Gossip joins the edge to the cluster of edges (package topology)
	// when Gossip.BindAddr is set; without it the edge is a cluster of
	// one. Region, NodeID, NodeName (the edge id), GRPCAddr, HTTPAddr (the
	// listeners') and Meta (the WAL's backlog) are set from the edge's.
	Gossip topology.Config
	// Shipper configures shipping; EdgeID, Region, Primary, Logger and
	// Registerer are set from the edge's, Budget from Budget.
	Shipper ShipperConfig
	// Budget is the region's latency budget: the edge measures its stages
	// against it (/v1/budget, Budget, WithinBudget) and the shipper sizes
	// its batches by it. Zero fields take the defaults of Budget.
	Budget Budget
	// DrainTimeout bounds how long Stop waits for pushes under way.
	// Default 30s.
	DrainTimeout time.Duration
	Logger       *slog.Logger
	// Registry receives every metric and serves /metrics. Default: a new
	// registry with the Go and process collectors.
	Registry *prometheus.Registry
}

func (c *Config) setDefaults() {
	if c.Listen == "" {
		c.Listen = "127.0.0.1:7300"
	}
	if c.HTTPListen == "" {
		c.HTTPListen = "127.0.0.1:7301"
	}
	if c.MaxRequestBytes == 0 {
		c.MaxRequestBytes = 64 << 20
	}
	if c.MaxStreamsPerConn == 0 {
		c.MaxStreamsPerConn = DefaultMaxStreamsPerConn
	}
	if c.DrainTimeout == 0 {
		c.DrainTimeout = 30 * time.Second
	}
	c.Budget = c.Budget.withDefaults()
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Registry == nil {
		c.Registry = serve.NewRegistry()
	}
}

func (c *Config) validate() error {
	var errs []error
	for name, v := range map[string]string{"region": c.Region, "node id": c.NodeID, "data dir": c.DataDir, "primary": c.Primary} {
		if v == "" {
			errs = append(errs, fmt.Errorf("edge: %s is required", name))
		}
	}
	if c.MaxRequestBytes < 1<<10 {
		errs = append(errs, fmt.Errorf("edge: MaxRequestBytes %d is below 1 KiB", c.MaxRequestBytes))
	}
	if err := c.Budget.validate(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// EdgeID is the id the primary's ledger keeps this edge under.
func (c *Config) EdgeID() string { return c.Region + "/" + c.NodeID }

// Service runs an edge: the WAL, the Ingest service over gRPC and HTTP/JSON,
// and the shipper.
type Service struct {
	cfg     Config
	log     *slog.Logger
	wal     *wal.Log
	server  *Server
	shipper *Shipper
	budgets *budgets
	grpc    *serve.GRPC
	http    *serve.HTTP
	ln      net.Listener
	httpLn  net.Listener
	topo    *edgeTopology

	shipCancel context.CancelFunc
	shipDone   chan error

	stopOnce sync.Once
	stopErr  error
}

// Start opens the WAL (recovering what a crash left), starts shipping what
// it holds, and starts serving.
func Start(ctx context.Context, cfg Config) (*Service, error) {
	cfg.setDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	s := &Service{cfg: cfg, log: cfg.Logger.With("edge", cfg.EdgeID())}
	ok := false
	defer func() {
		if !ok {
			s.close()
		}
	}()
	var err error
	if s.wal, err = wal.Open(ctx, cfg.DataDir, wal.Options{QuotaBytes: cfg.QuotaBytes, Logger: s.log}); err != nil {
		return nil, err
	}
	st := s.wal.Stats()
	s.log.Info("edge: WAL open", "dir", cfg.DataDir, "unshipped_records", st.Records, "unshipped_bytes", st.Bytes, "last_seq", st.LastSeq)
	stages := newStageSet(cfg.Region, cfg.Budget.Window)
	if s.server, err = newServer(s.wal, cfg.Limits, s.log, cfg.Registry, stages); err != nil {
		return nil, err
	}
	if err := s.server.secure(cfg.Access, cfg.TLS, cfg.Registry); err != nil {
		return nil, err
	}
	if err := registerWALMetrics(cfg.Registry, s.wal); err != nil {
		return nil, err
	}
	shcfg := cfg.Shipper
	shcfg.EdgeID, shcfg.Region, shcfg.Primary = cfg.EdgeID(), cfg.Region, cfg.Primary
	shcfg.Logger, shcfg.Registerer = s.log, cfg.Registry
	shcfg.Budget, shcfg.stages = cfg.Budget, stages
	if s.shipper, err = NewShipper(s.wal, shcfg); err != nil {
		return nil, err
	}
	if err := s.startBudgets(stages); err != nil {
		return nil, err
	}

	if s.ln, err = net.Listen("tcp", cfg.Listen); err != nil {
		return nil, fmt.Errorf("edge: listen %s: %w", cfg.Listen, err)
	}
	if s.httpLn, err = net.Listen("tcp", cfg.HTTPListen); err != nil {
		return nil, fmt.Errorf("edge: listen %s: %w", cfg.HTTPListen, err)
	}
	s.httpLn = serve.HTTPListener(s.httpLn, cfg.TLS)
	if err := s.startTopology(); err != nil {
		return nil, err
	}

	shipCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	s.shipCancel, s.shipDone = cancel, make(chan error, 1)
	go func() { s.shipDone <- s.shipper.Run(shipCtx) }()

	s.grpc = serve.NewGRPC(s.grpcOptions()...) // TLS, limits, authentication: see access.go
	longhaulv1.RegisterIngestServer(s.grpc.Server, s.server)
	longhaulv1.RegisterTopologyServer(s.grpc.Server, s.topo.server)
	s.grpc.Serve(s.ln, longhaulv1.Ingest_ServiceDesc.ServiceName, longhaulv1.Topology_ServiceDesc.ServiceName)

	gw := runtime.NewServeMux(
		runtime.WithMarshalerOption(runtime.MIMEWildcard, &runtime.JSONPb{
			MarshalOptions:   protojson.MarshalOptions{UseProtoNames: true, EmitUnpopulated: true},
			UnmarshalOptions: protojson.UnmarshalOptions{}, // unknown fields are an error
		}),
		runtime.WithErrorHandler(httpError),
	)
	if err := longhaulv1.RegisterIngestHandlerServer(ctx, gw, s.server); err != nil {
		return nil, err
	}
	if err := s.registerTopologyHTTP(ctx, gw); err != nil {
		return nil, err
	}
	mux := serve.Mux(cfg.Registry, map[string]serve.Check{
		"wal": func(context.Context) error {
			st := s.wal.Stats()
			if st.Failed != nil {
				return st.Failed
			}
			if st.Bytes >= st.QuotaBytes {
				return fmt.Errorf("full: %d of %d bytes unshipped", st.Bytes, st.QuotaBytes)
			}
			// A push refused WAL_FULL lately: not ready for as long as the
			// refused checkers were told to wait, so that a load balancer
			// steers the others away too (a push can be refused well short
			// of the quota when it is large).
			if t := st.LastFullRejection; !t.IsZero() && time.Since(t) < RetryAfterFull {
				return fmt.Errorf("refusing pushes: one was refused WAL_FULL %v ago; %d of %d bytes unshipped",
					time.Since(t).Round(time.Millisecond), st.Bytes, st.QuotaBytes)
			}
			return nil
		},
	})
	mux.Handle("/v1/", s.authHTTP(limitBody(gw, int64(cfg.MaxRequestBytes))))
	mux.HandleFunc("GET /v1/budget", s.serveBudget)
	s.registerUI(mux) // GET /, /ui (the status page), /v1/cluster: see ui.go
	s.http = serve.StartHTTP(s.httpLn, mux, s.log)
	s.log.Info("edge: serving", "grpc", s.ln.Addr().String(), "http", s.httpLn.Addr().String(), "primary", cfg.Primary)
	ok = true
	return s, nil
}

// Addr is the gRPC address checkers push to.
func (s *Service) Addr() string { return s.ln.Addr().String() }

// HTTPAddr is the address of the HTTP/JSON API and the endpoints.
func (s *Service) HTTPAddr() string { return s.httpLn.Addr().String() }

// WAL returns the edge's write-ahead log (for tests and status).
func (s *Service) WAL() *wal.Log { return s.wal }

// Shipper returns the edge's shipper.
func (s *Service) Shipper() *Shipper { return s.shipper }

// Stop stops accepting pushes, answers those under way (within
// DrainTimeout), stops shipping and closes the WAL. What was not shipped
// stays in the WAL for the next start. Safe to call twice.
func (s *Service) Stop(ctx context.Context) error {
	s.stopOnce.Do(func() {
		s.leaveTopology()
		s.grpc.Draining()
		drained := make(chan struct{})
		go func() { s.server.Close(); close(drained) }()
		select {
		case <-drained:
		case <-time.After(s.cfg.DrainTimeout):
			s.log.Warn("edge: pushes still under way after the drain timeout")
		case <-ctx.Done():
		}
		if err := s.http.Stop(ctx); err != nil {
			s.stopErr = err
		}
		s.http = nil
		if err := s.grpc.Stop(ctx, s.cfg.DrainTimeout); err != nil && s.stopErr == nil {
			s.stopErr = err
		}
		s.grpc = nil
		s.close()
		s.log.Info("edge: stopped")
	})
	return s.stopErr
}

func (s *Service) close() {
	s.stopTopology()
	if s.shipCancel != nil {
		s.shipCancel()
		if err := <-s.shipDone; err != nil {
			s.log.Warn("edge: shipper", "err", err)
		}
		s.shipCancel = nil
	}
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
	if s.wal != nil {
		if err := s.wal.Close(); err != nil && s.stopErr == nil {
			s.stopErr = err
		}
		s.wal = nil
	}
}

// httpError writes gRPC errors as HTTP ones (the status as JSON, details
// included): InvalidArgument is 400 with the field named,
// RESOURCE_EXHAUSTED (a full WAL) is 429 with Retry-After, the RetryInfo's
// delay in whole seconds rounded up.
func httpError(ctx context.Context, mux *runtime.ServeMux, m runtime.Marshaler, w http.ResponseWriter, r *http.Request, err error) {
	for _, d := range status.Convert(err).Details() {
		if ri, ok := d.(*errdetails.RetryInfo); ok && ri.GetRetryDelay().AsDuration() > 0 {
			secs := (ri.GetRetryDelay().AsDuration() + time.Second - 1) / time.Second
			w.Header().Set("Retry-After", strconv.FormatInt(int64(secs), 10))
		}
	}
	runtime.DefaultHTTPErrorHandler(ctx, mux, m, w, r, err)
}

// limitBody refuses bodies larger than limit without reading them whole:
// at once when Content-Length says so, else once the limit is crossed.
// Either way the answer is 413.
func limitBody(next http.Handler, limit int64) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ContentLength > limit {
			http.Error(w, fmt.Sprintf(`{"code":3,"message":"request body of %d bytes is over the limit of %d bytes; push large scans with PushStream (gRPC) or in several requests"}`, r.ContentLength, limit), http.StatusRequestEntityTooLarge)
			return
		}
		body := &maxBody{r: http.MaxBytesReader(w, r.Body, limit)}
		r.Body = body
		next.ServeHTTP(&tooLargeWriter{ResponseWriter: w, body: body}, r)
	})
}

type maxBody struct {
	r       io.ReadCloser
	tripped bool
}

func (b *maxBody) Read(p []byte) (int, error) {
	n, err := b.r.Read(p)
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		b.tripped = true
	}
	return n, err
}

func (b *maxBody) Close() error { return b.r.Close() }

// tooLargeWriter turns the gateway's 400 for a body cut at the limit into
// the 413 it is.
type tooLargeWriter struct {
	http.ResponseWriter
	body *maxBody
}

func (w *tooLargeWriter) WriteHeader(code int) {
	if w.body.tripped && code == http.StatusBadRequest {
		code = http.StatusRequestEntityTooLarge
	}
	w.ResponseWriter.WriteHeader(code)
}

// registerWALMetrics exports the WAL's state.
func registerWALMetrics(reg prometheus.Registerer, l *wal.Log) error {
	gauge := func(name, help string, f func(wal.Stats) float64) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, func() float64 { return f(l.Stats()) })
	}
	counter := func(name, help string, f func(wal.Stats) float64) prometheus.Collector {
		return prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help}, func() float64 { return f(l.Stats()) })
	}
	for _, c := range []prometheus.Collector{
		gauge("longhaul_edge_wal_records", "Records in the WAL not yet acknowledged by the primary.", func(s wal.Stats) float64 { return float64(s.Records) }),
		gauge("longhaul_edge_wal_bytes", "Bytes of those records, as counted against the quota.", func(s wal.Stats) float64 { return float64(s.Bytes) }),
		gauge("longhaul_edge_wal_quota_bytes", "The WAL's quota.", func(s wal.Stats) float64 { return float64(s.QuotaBytes) }),
		gauge("longhaul_edge_wal_oldest_age_seconds", "Age of the oldest record not yet acknowledged by the primary.", func(s wal.Stats) float64 {
			if s.OldestAppendedAt.IsZero() {
				return 0
			}
			return time.Since(s.OldestAppendedAt).Seconds()
		}),
		counter("longhaul_edge_wal_syncs_total", "fsynced commits (group commits and truncations).", func(s wal.Stats) float64 { return float64(s.Syncs) }),
		counter("longhaul_edge_wal_appends_total", "Acknowledged appends.", func(s wal.Stats) float64 { return float64(s.Appends) }),
		counter("longhaul_edge_wal_full_total", "Appends refused: quota reached.", func(s wal.Stats) float64 { return float64(s.FullRejections) }),
	} {
		if err := reg.Register(c); err != nil {
			return err
		}
	}
	return nil
}

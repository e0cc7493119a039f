package pushclient

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	longhaulv1 "github.com/longhaul/longhaul/api/longhaul/v1"
	"github.com/longhaul/longhaul/edge"
	"github.com/longhaul/longhaul/internal/pgtest"
	"github.com/longhaul/longhaul/primary"
)

// system is a primary on a real PostgreSQL (a schema of the test's own)
// and edges shipping to it, all on loopback.
type system struct {
	t       *testing.T
	db      *pgxpool.Pool
	primary *primary.Service
	edges   []*edgeNode
}

// edgeNode is one edge; it can be stopped and started again on the same
// address and data directory.
type edgeNode struct {
	cfg edge.Config
	svc *edge.Service
}

// Addr is the edge's gRPC address (the same across restarts).
func (e *edgeNode) Addr() string { return e.cfg.Listen }

// startSystem starts a primary and n edges; configure, if not nil, adjusts
// each edge's config.
func startSystem(t *testing.T, n int, configure func(i int, cfg *edge.Config)) *system {
	t.Helper()
	ctx := context.Background()
	url := pgtest.URL(t)
	p, err := primary.Start(ctx, primary.Config{DatabaseURL: url, Listen: "127.0.0.1:0", HTTPListen: "127.0.0.1:0",
		Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Stop(context.Background()) })
	db, err := pgxpool.New(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(db.Close)
	s := &system{t: t, db: db, primary: p}
	for i := range n {
		cfg := edge.Config{Region: "eu", NodeID: fmt.Sprintf("n%d", i), DataDir: t.TempDir(), Primary: p.Addr(),
			Listen: "127.0.0.1:0", HTTPListen: "127.0.0.1:0", Logger: slog.New(slog.DiscardHandler)}
		cfg.Shipper.MaxBatchAge = 20 * time.Millisecond
		if configure != nil {
			configure(i, &cfg)
		}
		e := &edgeNode{cfg: cfg}
		s.edges = append(s.edges, e)
		s.start(e)
		e.cfg.Listen = e.svc.Addr() // restarts listen where the clients know the edge
	}
	return s
}

func (s *system) start(e *edgeNode) {
	s.t.Helper()
	cfg := e.cfg
	cfg.Registry = nil // a fresh one per start
	svc, err := edge.Start(context.Background(), cfg)
	if err != nil {
		s.t.Fatal(err)
	}
	s.t.Cleanup(func() { _ = svc.Stop(context.Background()) })
	e.svc = svc
}

// stop stops edge i (Service.Stop: drains, then closes the WAL).
func (s *system) stop(i int) {
	s.t.Helper()
	if err := s.edges[i].svc.Stop(context.Background()); err != nil {
		s.t.Fatal(err)
	}
}

// restart starts edge i again on its address and data directory.
func (s *system) restart(i int) { s.t.Helper(); s.start(s.edges[i]) }

func (s *system) addrs(order ...int) []string {
	var out []string
	for _, i := range order {
		out = append(out, s.edges[i].Addr())
	}
	return out
}

func (s *system) count(q string, args ...any) int {
	s.t.Helper()
	var n int
	if err := s.db.QueryRow(context.Background(), q, args...).Scan(&n); err != nil {
		s.t.Fatal(err)
	}
	return n
}

// waitRows waits until the insights table holds want rows of scan.
func (s *system) waitRows(scan string, want int) {
	s.t.Helper()
	eventually(s.t, fmt.Sprintf("%d insights of %s in PostgreSQL", want, scan), func() (bool, string) {
		n := s.count(`SELECT count(*) FROM insights WHERE scan_id = $1`, scan)
		return n == want, fmt.Sprint(n)
	})
}

// eventually polls cond until it holds, or fails t after 30s.
func eventually(t *testing.T, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		ok, state := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: still %s after 30s", what, state)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// makeInsights returns n valid insights of scan, subjects prefix0…
func makeInsights(scan, prefix string, n int) []*longhaulv1.Insight {
	observed := timestamppb.New(time.Now().Add(-time.Minute))
	out := make([]*longhaulv1.Insight, n)
	for i := range out {
		details, _ := structpb.NewStruct(map[string]any{"i": i})
		out[i] = &longhaulv1.Insight{AccountId: "acme", Asset: "www.example.com", Kind: "tls.expiry",
			Subject: fmt.Sprintf("%s%d", prefix, i), Severity: longhaulv1.Severity_HIGH, Details: details,
			ObservedAt: observed, ScanId: scan, Checker: "tls"}
	}
	return out
}

// newClient returns a client with a registry of its own, closed when t
// ends. Its logs are discarded unless PUSHCLIENT_LOG is set.
func newClient(t *testing.T, cfg Config) *Client {
	t.Helper()
	cfg.Logger = slog.New(slog.DiscardHandler)
	if os.Getenv("PUSHCLIENT_LOG") != "" {
		cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	if cfg.Metrics == nil {
		cfg.Metrics = prometheus.NewRegistry()
	}
	c, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := c.Close(); err != nil {
			t.Error(err)
		}
	})
	return c
}

// clock is a test clock, moved only by Advance.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Unix(1_700_000_000, 0)} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// withClock makes c's retry hints and p's cooldowns run on clk. Call it
// before c is used.
func withClock(c *Client, p *OrderedPicker, clk *clock) {
	c.now = clk.Now
	p.now = clk.Now
}

// hookPicker calls onSuccess after each acknowledged attempt, in the
// pushing goroutine, before the next pick.
type hookPicker struct {
	Picker
	onSuccess func(addr string)
}

func (h *hookPicker) Succeeded(addr string) {
	h.Picker.Succeeded(addr)
	if h.onSuccess != nil {
		h.onSuccess(addr)
	}
}

// counter is the value of a counter of c's metrics.
func counter(v *prometheus.CounterVec, labels ...string) int {
	return int(testutil.ToFloat64(v.WithLabelValues(labels...)))
}

// closedAddr is a loopback address nothing listens on.
func closedAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

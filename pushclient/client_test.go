package pushclient

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	longhaulv1 "github.com/longhaul/longhaul/api/longhaul/v1"
	"github.com/longhaul/longhaul/edge"
	"github.com/longhaul/longhaul/internal/wan"
)

// TestPushViaTwoEdges: two clients, each preferring another edge, push
// 10,000 insights each at once; every insight reaches PostgreSQL, each
// client used only its preferred edge, and nothing was sent twice.
func TestPushViaTwoEdges(t *testing.T) {
	t.Parallel()
	s := startSystem(t, 2, nil)
	orders := [][]int{{0, 1}, {1, 0}}
	results := make([]Result, 2)
	errs := make([]error, 2)
	clients := make([]*Client, 2)
	var wg sync.WaitGroup
	for i, order := range orders {
		clients[i] = newClient(t, Config{Edges: s.addrs(order...), ChunkInsights: 500, StreamInsights: 2500})
		wg.Go(func() {
			results[i], errs[i] = clients[i].Push(context.Background(), makeInsights("scan-two", string(rune('a'+i)), 10_000))
		})
	}
	wg.Wait()
	for i, res := range results {
		if errs[i] != nil {
			t.Fatalf("client %d: %v", i, errs[i])
		}
		want := s.edges[orders[i][0]].Addr()
		if res.Accepted != 10_000 || res.Streams != 4 || res.Attempts != 4 || !slices.Equal(res.Edges, []string{want}) || res.LastEdge != want {
			t.Errorf("client %d: %+v, want 10000 insights in 4 streams, 4 attempts, all on %s", i, res, want)
		}
		if res.LastSeq-res.FirstSeq+1 != 2500 {
			t.Errorf("client %d: last stream got seq %d..%d, want 2500 of them", i, res.FirstSeq, res.LastSeq)
		}
		if n := counter(clients[i].metrics.insights, want); n != 10_000 {
			t.Errorf("client %d: insights metric %d, want 10000", i, n)
		}
	}
	s.waitRows("scan-two", 20_000)
	var severity, subject string
	if err := s.db.QueryRow(context.Background(), `SELECT severity, details->>'i' FROM insights WHERE subject = 'b42'`).Scan(&severity, &subject); err != nil || severity != "high" || subject != "42" {
		t.Errorf("row b42: %q %q %v", severity, subject, err)
	}
}

// TestFailoverAndReturn: the preferred edge stops in the middle of a Push
// (between two of its streams); the rest of the 20,000 insights go to the
// other edge. Restarted on the same address and data directory, the
// preferred edge ships what it had acknowledged (all 20,000 reach
// PostgreSQL), and gets pushes again once its cooldown ends, not before.
func TestFailoverAndReturn(t *testing.T) {
	t.Parallel()
	s := startSystem(t, 2, nil)
	a, b := s.edges[0].Addr(), s.edges[1].Addr()
	clk := newClock()
	picker := NewOrderedPicker([]string{a, b}, time.Minute)
	stopped := false
	hook := &hookPicker{Picker: picker, onSuccess: func(addr string) {
		if addr == a && !stopped {
			stopped = true
			s.stop(0)
		}
	}}
	c := newClient(t, Config{Picker: hook, ChunkInsights: 1000, StreamInsights: 5000})
	withClock(c, picker, clk)
	ctx := context.Background()

	res, err := c.Push(ctx, makeInsights("scan-fo", "s", 20_000))
	if err != nil {
		t.Fatal(err)
	}
	if res.Accepted != 20_000 || res.Streams != 4 || res.Attempts != 5 || !slices.Equal(res.Edges, []string{a, b}) {
		t.Errorf("push: %+v; want 4 streams in 5 attempts, first on %s then on %s", res, a, b)
	}
	if n := counter(c.metrics.retries, "PushStream", a, codes.Unavailable.String()); n != 1 {
		t.Errorf("retries on the stopped edge: %d, want 1", n)
	}
	if n := counter(c.metrics.failovers, a, codes.Unavailable.String()); n != 1 {
		t.Errorf("failovers from the stopped edge: %d, want 1", n)
	}
	// What the stopped edge had not shipped yet ships once it is back.
	s.restart(0)
	s.waitRows("scan-fo", 20_000)
	res, err = c.Push(ctx, makeInsights("scan-back", "cool", 10))
	if err != nil || res.Attempts != 1 || !slices.Equal(res.Edges, []string{b}) {
		t.Errorf("push in the cooldown: %+v, %v; want 1 attempt, on %s", res, err, b)
	}
	clk.Advance(time.Minute)
	res, err = c.Push(ctx, makeInsights("scan-back", "warm", 10))
	if err != nil || res.Attempts != 1 || !slices.Equal(res.Edges, []string{a}) {
		t.Errorf("push after the cooldown: %+v, %v; want 1 attempt, on %s", res, err, a)
	}
	s.waitRows("scan-back", 20)
}

// TestFullEdgeFailsOver: an edge whose WAL is full answers
// RESOURCE_EXHAUSTED with a 5s retry hint; the client sends the stream to
// the other edge, and keeps off the full one until the hint ends, even
// when its own cooldown is shorter.
func TestFullEdgeFailsOver(t *testing.T) {
	t.Parallel()
	s := startSystem(t, 2, func(i int, cfg *edge.Config) {
		if i == 0 {
			cfg.QuotaBytes = 1 // no append fits
		}
	})
	a, b := s.edges[0].Addr(), s.edges[1].Addr()
	clk := newClock()
	picker := NewOrderedPicker([]string{a, b}, time.Second)
	c := newClient(t, Config{Picker: picker, ChunkInsights: 1000, StreamInsights: 1000})
	withClock(c, picker, clk)
	ctx := context.Background()

	res, err := c.Push(ctx, makeInsights("scan-full", "s", 3000))
	if err != nil {
		t.Fatal(err)
	}
	if res.Accepted != 3000 || res.Attempts != 4 || !slices.Equal(res.Edges, []string{b}) {
		t.Errorf("push: %+v; want 3 streams in 4 attempts, all on %s", res, b)
	}
	if n := counter(c.metrics.retries, "PushStream", a, codes.ResourceExhausted.String()); n != 1 {
		t.Errorf("retries on the full edge: %d, want 1", n)
	}
	c.mu.Lock()
	until := c.holds[a]
	c.mu.Unlock()
	if !until.Equal(clk.Now().Add(edge.RetryAfterFull)) {
		t.Errorf("hold on the full edge until %v, want now+%s", until, edge.RetryAfterFull)
	}

	clk.Advance(2 * time.Second) // past the cooldown, not the hint
	res, err = c.Push(ctx, makeInsights("scan-full", "t", 10))
	if err != nil || res.Attempts != 1 || !slices.Equal(res.Edges, []string{b}) {
		t.Errorf("push within the hint: %+v, %v; want 1 attempt, on %s", res, err, b)
	}
	clk.Advance(edge.RetryAfterFull) // past the hint: the full edge is tried again
	res, err = c.Push(ctx, makeInsights("scan-full", "u", 10))
	if err != nil || res.Attempts != 2 || !slices.Equal(res.Edges, []string{b}) {
		t.Errorf("push after the hint: %+v, %v; want 2 attempts (the full edge, then %s)", res, err, b)
	}
	if st := s.edges[0].svc.WAL().Stats(); st.Appends != 0 || st.FullRejections != 2 {
		t.Errorf("full edge: %d appends, %d refused; want 0 and 2", st.Appends, st.FullRejections)
	}
	s.waitRows("scan-full", 3020)
}

// TestBadInput: input an edge refuses is an InputError naming the insight
// by its index in Push's slice (not in the chunk), with no retry and no
// failover; a bad insight in the first chunk leaves nothing written.
func TestBadInput(t *testing.T) {
	t.Parallel()
	s := startSystem(t, 2, nil)
	c := newClient(t, Config{Edges: s.addrs(0, 1), ChunkInsights: 100, StreamInsights: 1000})
	ctx := context.Background()
	walAppends := func() (n uint64) {
		for _, e := range s.edges {
			n += e.svc.WAL().Stats().Appends
		}
		return n
	}

	// In the first chunk: nothing written.
	ins := makeInsights("scan-bad", "s", 10)
	ins[5].Kind = ""
	res, err := c.Push(ctx, ins)
	var ie *InputError
	if !errors.As(err, &ie) || ie.Index != 5 || ie.Field != "insights[5].kind" || ie.Reason != "is required" || ie.Edge != s.edges[0].Addr() {
		t.Fatalf("push: %v (%#v); want an InputError for insights[5].kind", err, ie)
	}
	if status.Code(err) != codes.InvalidArgument || res.Attempts != 1 || res.Accepted != 0 {
		t.Errorf("push: code %s, %+v; want InvalidArgument after 1 attempt, nothing accepted", status.Code(err), res)
	}
	if n := walAppends(); n != 0 {
		t.Errorf("%d WAL appends after a refused push, want 0", n)
	}

	// In the third stream's sixth chunk: the index counts from Push's slice.
	ins = makeInsights("scan-bad", "t", 3000)
	ins[2503].Kind = ""
	res, err = c.Push(ctx, ins)
	if !errors.As(err, &ie) || ie.Index != 2503 || ie.Field != "insights[2503].kind" {
		t.Fatalf("push: %v; want an InputError for insights[2503].kind", err)
	}
	if res.Accepted != 2000 || res.Streams != 2 || res.Attempts != 3 {
		t.Errorf("push: %+v; want 2 streams accepted and 3 attempts", res)
	}

	// Refused by the client.
	ins[2503] = nil
	if _, err = c.Push(ctx, ins); !errors.As(err, &ie) || ie.Index != 2503 || ie.Edge != "" {
		t.Errorf("nil insight: %v; want an InputError for insights[2503]", err)
	}
	err = c.Complete(ctx, &longhaulv1.ScanCompletion{AccountId: "acme", Asset: "a", Checker: "tls"})
	if !errors.As(err, &ie) || ie.Index != -1 || ie.Field != "completion.scan_id" {
		t.Errorf("complete: %v; want an InputError for completion.scan_id", err)
	}
	if n := testutil.CollectAndCount(c.metrics.retries); n != 0 {
		t.Errorf("%d retry series, want none", n)
	}
	if n := s.edges[1].svc.WAL().Stats().Appends; n != 0 {
		t.Errorf("the second edge got %d appends, want none", n)
	}
}

// TestOversizeChunk: a chunk over the edge's message size limit (here one
// insight of valid but large details) is refused by gRPC with
// ResourceExhausted and no WAL_FULL reason: Push returns at once an error
// naming the stream and the limit, with no retry and no failover, though
// another edge would take the stream no better.
func TestOversizeChunk(t *testing.T) {
	t.Parallel()
	s := startSystem(t, 2, func(_ int, cfg *edge.Config) { cfg.MaxRequestBytes = 4 << 10 })
	c := newClient(t, Config{Edges: s.addrs(0, 1), ChunkInsights: 1, StreamInsights: 2})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	ins := makeInsights("scan-big", "s", 4)
	ins[3].Details.Fields["pad"] = structpb.NewStringValue(strings.Repeat("x", 8<<10)) // within the edge's 16 KiB for details
	start := time.Now()
	res, err := c.Push(ctx, ins)
	if err == nil || errors.Is(err, context.DeadlineExceeded) || status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("push: %v; want ResourceExhausted at once", err)
	}
	for _, want := range []string{"insights[2:4]", "too large", "ChunkInsights, now 1", "vs. 4096"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("push: %q does not mention %q", err, want)
		}
	}
	if res.Accepted != 2 || res.Streams != 1 || res.Attempts != 2 {
		t.Errorf("push: %+v; want the first stream accepted, and 2 attempts", res)
	}
	if n := testutil.CollectAndCount(c.metrics.retries); n != 0 {
		t.Errorf("%d retry series, want none", n)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("push took %s", d)
	}
	if n := s.edges[1].svc.WAL().Stats().Appends; n != 0 {
		t.Errorf("the second edge got %d appends, want none", n)
	}
}

// TestCompleteFailover: with the preferred edge stopped, a scan's insights
// and its completion go through the other edge, and the scan is resolved
// in PostgreSQL.
func TestCompleteFailover(t *testing.T) {
	t.Parallel()
	s := startSystem(t, 2, nil)
	s.stop(0)
	c := newClient(t, Config{Edges: s.addrs(0, 1)})
	ctx := context.Background()
	started := time.Now().Add(-2 * time.Minute)
	res, err := c.Push(ctx, makeInsights("scan-done", "s", 3))
	if err != nil || res.Attempts != 2 || !slices.Equal(res.Edges, []string{s.edges[1].Addr()}) {
		t.Fatalf("push: %+v, %v; want 2 attempts, on the second edge", res, err)
	}
	if err := c.Complete(ctx, &longhaulv1.ScanCompletion{ScanId: "scan-done", AccountId: "acme", Asset: "www.example.com",
		Checker: "tls", InsightCount: 3, StartedAt: timestamppb.New(started)}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "scan resolved", func() (bool, string) {
		n := s.count(`SELECT count(*) FROM scans WHERE scan_id = 'scan-done' AND completed_at IS NOT NULL AND resolved_at IS NOT NULL`)
		return n == 1, "unresolved"
	})
	if n := counter(c.metrics.attempts, "CompleteScan", s.edges[1].Addr(), codes.OK.String()); n != 1 {
		t.Errorf("completions acknowledged by the second edge: %d, want 1", n)
	}
}

// TestNoEdgeReachable: with no edge listening, Push and Complete keep
// trying until ctx ends, then return its error.
func TestNoEdgeReachable(t *testing.T) {
	t.Parallel()
	c := newClient(t, Config{Edges: []string{closedAddr(t), closedAddr(t)}, MinBackoff: time.Millisecond, MaxBackoff: 20 * time.Millisecond})
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	res, err := c.Push(ctx, makeInsights("scan-none", "s", 10))
	if !errors.Is(err, context.DeadlineExceeded) || res.Accepted != 0 || res.Attempts < 2 {
		t.Errorf("push: %+v, %v; want DeadlineExceeded after trying both edges", res, err)
	}
	ctx, cancel = context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if err := c.Complete(ctx, &longhaulv1.ScanCompletion{ScanId: "x"}); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("complete: %v; want DeadlineExceeded", err)
	}
	if n := counter(c.metrics.calls, "Push", codes.DeadlineExceeded.String()); n != 1 {
		t.Errorf("calls metric: %d Push calls ended DeadlineExceeded, want 1", n)
	}
}

// TestCloseEndsCalls: Close ends a Push that is waiting for an edge.
func TestCloseEndsCalls(t *testing.T) {
	t.Parallel()
	c := newClient(t, Config{Edges: []string{closedAddr(t)}})
	done := make(chan error, 1)
	go func() {
		_, err := c.Push(context.Background(), makeInsights("scan-close", "s", 1))
		done <- err
	}()
	eventually(t, "an attempt", func() (bool, string) {
		return testutil.CollectAndCount(c.metrics.retries) > 0, "none"
	})
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-done; !errors.Is(err, ErrClosed) {
		t.Errorf("push: %v, want ErrClosed", err)
	}
	if _, err := c.Push(context.Background(), makeInsights("scan-close", "s", 1)); !errors.Is(err, ErrClosed) {
		t.Errorf("push after Close: %v, want ErrClosed", err)
	}
}

// TestStalledEdgeFailsOver: an edge behind a link that swallows every byte
// (as a dead route does) makes no progress; after ProgressTimeout the
// stream goes to the other edge. (The timeout is generous so that the
// healthy edge never trips it on a loaded machine.)
func TestStalledEdgeFailsOver(t *testing.T) {
	t.Parallel()
	s := startSystem(t, 2, nil)
	link := wan.New(t, s.edges[0].Addr())
	link.Blackhole()
	c := newClient(t, Config{Edges: []string{link.Addr(), s.edges[1].Addr()}, ProgressTimeout: 2 * time.Second})
	res, err := c.Push(context.Background(), makeInsights("scan-stall", "s", 100))
	if err != nil || res.Attempts != 2 || !slices.Equal(res.Edges, []string{s.edges[1].Addr()}) {
		t.Fatalf("push: %+v, %v; want 2 attempts, on the second edge", res, err)
	}
	if n := counter(c.metrics.retries, "PushStream", link.Addr(), codes.DeadlineExceeded.String()); n != 1 {
		t.Errorf("retries on the stalled edge: %d, want 1 (DeadlineExceeded)", n)
	}
	s.waitRows("scan-stall", 100)
}

// TestConnectionLostMidStream: the connection to the preferred edge breaks
// while a stream is under way; that stream is sent again whole to the other
// edge, and every insight reaches PostgreSQL.
func TestConnectionLostMidStream(t *testing.T) {
	t.Parallel()
	s := startSystem(t, 2, nil)
	link := wan.New(t, s.edges[0].Addr())
	broken := false
	hook := &hookPicker{Picker: NewOrderedPicker([]string{link.Addr(), s.edges[1].Addr()}, time.Minute), onSuccess: func(addr string) {
		if addr == link.Addr() && !broken {
			broken = true
			link.LimitData(1) // the next byte from the edge closes the connection
		}
	}}
	c := newClient(t, Config{Picker: hook, ChunkInsights: 200, StreamInsights: 2000})
	res, err := c.Push(context.Background(), makeInsights("scan-cut", "s", 6000))
	if err != nil {
		t.Fatal(err)
	}
	if res.Streams != 3 || res.Attempts != 4 || !slices.Equal(res.Edges, []string{link.Addr(), s.edges[1].Addr()}) {
		t.Errorf("push: %+v; want 3 streams in 4 attempts, first on the link, then on the second edge", res)
	}
	s.waitRows("scan-cut", 6000)
}

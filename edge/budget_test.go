package edge

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	longhaulv1 "github.com/longhaul/longhaul/api/longhaul/v1"
	"github.com/longhaul/longhaul/internal/pgtest"
	"github.com/longhaul/longhaul/internal/wan"
	"github.com/longhaul/longhaul/primary"
	"github.com/longhaul/longhaul/wal"
)

func TestMeterBuckets(t *testing.T) {
	t.Parallel()
	for _, d := range []time.Duration{0, 1, time.Microsecond, 1500 * time.Nanosecond, 2 * time.Microsecond, time.Millisecond,
		150 * time.Millisecond, time.Second, 100 * time.Second, 134 * time.Second} {
		b := meterBucket(d)
		if b >= meterFinite {
			t.Errorf("meterBucket(%v) = %d: overflow", d, b)
			continue
		}
		if hi := meterBounds[b]; d.Seconds() > hi*(1+1e-9) {
			t.Errorf("meterBucket(%v) = %d, whose bound %v is below it", d, b, hi)
		}
		if b > 0 && d.Seconds() <= meterBounds[b-1] {
			t.Errorf("meterBucket(%v) = %d, but bucket %d (bound %v) holds it", d, b, b-1, meterBounds[b-1])
		}
	}
	if b := meterBucket(time.Hour); b != meterFinite {
		t.Errorf("meterBucket(1h) = %d, want the overflow bucket %d", b, meterFinite)
	}
}

// TestMeterWindow: quantiles of the window are within a bucket's width
// (9 %) of the exact ones, weights count, and what is older than the
// window is forgotten.
func TestMeterWindow(t *testing.T) {
	t.Parallel()
	m := newMeter(time.Minute)
	t0 := time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)
	// 1..1000 ms, once each: p50 500ms, p99 990ms.
	for i := 1; i <= 1000; i++ {
		m.observe(t0.Add(time.Duration(i)*time.Millisecond), time.Duration(i)*time.Millisecond, 1)
	}
	q, n := m.window(t0.Add(2*time.Second), 0.5, 0.99, 1)
	if n != 1000 {
		t.Fatalf("count %d, want 1000", n)
	}
	for i, want := range []time.Duration{500 * time.Millisecond, 990 * time.Millisecond, time.Second} {
		if r := float64(q[i]) / float64(want); r < 0.91 || r > 1.09 {
			t.Errorf("quantile %d: %v, want %v ± 9 %%", i, q[i], want)
		}
	}
	if q[2] > time.Second {
		t.Errorf("max %v is over the largest value observed", q[2])
	}
	// A weight of 99 at 2s: the p99 moves there, the p50 too.
	m.observe(t0.Add(3*time.Second), 2*time.Second, 1000)
	q, n = m.window(t0.Add(3*time.Second), 0.5, 0.99)
	if n != 2000 || q[1] < 1900*time.Millisecond || q[1] > 2*time.Second || q[0] < 900*time.Millisecond {
		t.Errorf("after a weighted observation: p50 %v p99 %v count %d", q[0], q[1], n)
	}
	// Past the window, all of it is gone.
	if _, n := m.window(t0.Add(2*time.Minute), 0.99); n != 0 {
		t.Errorf("%d observations left after the window passed", n)
	}
	// Slides: what was observed 30s ago stays, what was 70s ago goes.
	m2 := newMeter(time.Minute)
	m2.observe(t0, time.Second, 1)
	m2.observe(t0.Add(40*time.Second), time.Millisecond, 1)
	if q, n := m2.window(t0.Add(70*time.Second), 0.99); n != 1 || q[0] > 2*time.Millisecond {
		t.Errorf("at 70s: p99 %v over %d, want only the 1ms of 40s", q[0], n)
	}
	// An empty window gives zeros.
	if q, n := newMeter(time.Minute).window(t0, 0.5); n != 0 || q[0] != 0 {
		t.Errorf("empty: %v %d", q, n)
	}
}

func TestSteerWait(t *testing.T) {
	t.Parallel()
	ms := time.Millisecond
	for _, tc := range []struct {
		visible, ship, margin, limit, want time.Duration
	}{
		{1000 * ms, 20 * ms, 100 * ms, time.Second, 880 * ms},
		{1000 * ms, 170 * ms, 100 * ms, time.Second, 730 * ms},
		{1000 * ms, 170 * ms, 100 * ms, 250 * ms, 250 * ms}, // capped
		{1000 * ms, 950 * ms, 100 * ms, time.Second, 0},     // ship at once
		{1000 * ms, 3 * time.Second, 100 * ms, time.Second, 0},
	} {
		if got := steerWait(tc.visible, tc.ship, tc.margin, tc.limit); got != tc.want {
			t.Errorf("steerWait(%v, %v, %v, %v) = %v, want %v", tc.visible, tc.ship, tc.margin, tc.limit, got, tc.want)
		}
	}
}

func TestQueueWaits(t *testing.T) {
	t.Parallel()
	sent := time.Date(2026, 11, 1, 12, 0, 1, 0, time.UTC)
	var recs []wal.Record
	// 3 records appended together 800ms before sent, 2 at 799ms (the same
	// bucket), 1 at 10ms.
	for i, ago := range []time.Duration{800, 800, 800, 799, 799, 10} {
		recs = append(recs, wal.Record{Seq: uint64(i + 1), AppendedAt: sent.Add(-ago * time.Millisecond)})
	}
	got := queueWaits(recs, sent)
	want := []waitRun{{800 * time.Millisecond, 5}, {10 * time.Millisecond, 1}}
	if !slices.Equal(got, want) {
		t.Errorf("queueWaits = %v, want %v", got, want)
	}
}

func TestBudgetConfig(t *testing.T) {
	t.Parallel()
	b := DefaultBudget()
	if b.AckP99 != 50*time.Millisecond || b.VisibleP99 != 2*time.Second || b.Margin != 200*time.Millisecond || b.Window != time.Minute ||
		b.Shares != (Shares{Validation: 0.2, WALSync: 0.6, RoundTrip: 0.25, Apply: 0.15}) {
		t.Errorf("defaults: %+v", b)
	}
	if err := b.validate(); err != nil {
		t.Errorf("defaults do not validate: %v", err)
	}
	for name, tc := range map[string]struct {
		b    Budget
		want string
	}{
		"negative ack":     {Budget{AckP99: -1}, "ack p99"},
		"margin too big":   {Budget{VisibleP99: time.Second, Margin: 2 * time.Second}, "margin"},
		"shares over 1":    {Budget{Shares: Shares{RoundTrip: 0.6, Apply: 0.5}}, "visible budget's shares"},
		"ack shares":       {Budget{Shares: Shares{Validation: 0.5, WALSync: 0.6}}, "ack budget's shares"},
		"share out of 0…1": {Budget{Shares: Shares{Apply: -0.1}}, "apply share"},
		"tiny window":      {Budget{Window: time.Millisecond}, "window"},
	} {
		if err := tc.b.withDefaults().validate(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error about %q", name, err, tc.want)
		}
	}
	// The edge refuses a bad budget.
	if _, err := Start(context.Background(), Config{Region: "eu", NodeID: "n", DataDir: t.TempDir(), Primary: "127.0.0.1:1",
		Budget: Budget{VisibleP99: time.Second, Margin: time.Second}}); err == nil || !strings.Contains(err.Error(), "margin") {
		t.Errorf("Start with a bad budget: %v", err)
	}
	// A shipper steers only with a visible budget, capped by MaxBatchAge
	// (250ms by default).
	log, err := wal.Open(context.Background(), t.TempDir(), wal.Options{Logger: shipQuiet})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = log.Close() })
	s, err := NewShipper(log, ShipperConfig{EdgeID: "e", Primary: "127.0.0.1:1", Budget: Budget{VisibleP99: time.Second}})
	if err != nil {
		t.Fatal(err)
	}
	if g := s.steer(time.Now()); g.mode != "budget" || g.limit != 250*time.Millisecond || g.wait != 250*time.Millisecond {
		t.Errorf("budget steering under the default cap: %+v, want wait 250ms", g)
	}
	s, err = NewShipper(log, ShipperConfig{EdgeID: "e", Primary: "127.0.0.1:1", Budget: Budget{VisibleP99: time.Second}, MaxBatchAge: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if g := s.steer(time.Now()); g.mode != "budget" || g.limit != time.Second || g.wait != 500*time.Millisecond {
		t.Errorf("budget steering with nothing measured: %+v, want budget, wait 500ms (1s − 40%% for the round trip and apply − 100ms margin), limit 1s", g)
	}
	// Measured: a round trip of 150ms and an apply of 30ms leave 720ms.
	now := time.Now()
	s.stages.observe(stageRoundTrip, 150*time.Millisecond, 1)
	s.stages.observe(stageApply, 30*time.Millisecond, 1)
	if g := s.steer(now); g.wait < 700*time.Millisecond || g.wait > 730*time.Millisecond {
		t.Errorf("budget steering at 150ms + 30ms: wait %v, want about 720ms", g.wait)
	}
	// A batch in flight for 400ms says the link got slower.
	s.mu.Lock()
	s.inFlight = append(s.inFlight, now.Add(-400*time.Millisecond))
	s.mu.Unlock()
	if g := s.steer(now); g.wait != 500*time.Millisecond || g.ship != 400*time.Millisecond {
		t.Errorf("budget steering with a batch 400ms in flight: %+v, want wait 500ms", g)
	}
	s, err = NewShipper(log, ShipperConfig{EdgeID: "e", Primary: "127.0.0.1:1", Budget: Budget{VisibleP99: time.Second}, FixedInterval: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if g := s.steer(time.Now()); g.mode != "fixed" || g.wait != time.Second {
		t.Errorf("fixed steering: %+v", g)
	}
	if _, err := NewShipper(log, ShipperConfig{EdgeID: "e", Primary: "p:1", FixedInterval: -1}); err == nil {
		t.Error("a negative FixedInterval was accepted")
	}
}

func TestParseBudgetFile(t *testing.T) {
	t.Parallel()
	file := `{
	  "default": {"visible_p99": "3s"},
	  "regions": {
	    "eu": {"ack_p99": "40ms", "visible_p99": "1s"},
	    "ap": {"ack_p99": "80ms", "visible_p99": "2s", "margin": "300ms", "window": "30s",
	           "shares": {"validation": 0.1, "wal_sync": 0.5, "round_trip": 0.3, "apply": 0.1}}
	  }
	}`
	for region, want := range map[string]Budget{
		"eu": {AckP99: 40 * time.Millisecond, VisibleP99: time.Second},
		"ap": {AckP99: 80 * time.Millisecond, VisibleP99: 2 * time.Second, Margin: 300 * time.Millisecond, Window: 30 * time.Second,
			Shares: Shares{Validation: 0.1, WALSync: 0.5, RoundTrip: 0.3, Apply: 0.1}},
		"us": {VisibleP99: 3 * time.Second},
	} {
		got, err := ParseBudgetFile([]byte(file), region)
		if err != nil {
			t.Errorf("%s: %v", region, err)
			continue
		}
		if got != want.withDefaults() {
			t.Errorf("%s: %+v, want %+v", region, got, want.withDefaults())
		}
	}
	for name, tc := range map[string]struct{ file, want string }{
		"no region, no default": {`{"regions": {"eu": {}}}`, `no budget for region "us"`},
		"unknown field":         {`{"regions": {"us": {"ack": "1s"}}}`, "unknown field"},
		"number duration":       {`{"regions": {"us": {"ack_p99": 50}}}`, "duration must be a string"},
		"bad duration":          {`{"regions": {"us": {"ack_p99": "50 parsecs"}}}`, "parsecs"},
		"invalid budget":        {`{"regions": {"us": {"visible_p99": "1s", "margin": "2s"}}}`, "margin"},
		"not JSON":              {`regions: us`, "budget file"},
	} {
		if _, err := ParseBudgetFile([]byte(tc.file), "us"); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error mentioning %q", name, err, tc.want)
		}
	}
}

// TestBudgetReport: /v1/budget answers every stage with its stable field
// names, the metrics carry the region, and an edge whose primary is gone
// is over its visible budget once its oldest insight has waited longer
// than it (no ack comes to measure), and WithinBudget says so.
func TestBudgetReport(t *testing.T) {
	t.Parallel()
	s := startSystem(t, Config{Region: "ap", NodeID: "n7", Budget: Budget{AckP99: time.Second, VisibleP99: 700 * time.Millisecond}})
	ctx := context.Background()
	for i := range 5 {
		if _, err := s.ingest.Push(ctx, &longhaulv1.PushRequest{Insights: []*longhaulv1.Insight{
			insight("scan-r", "k", fmt.Sprint(i), time.Now()), insight("scan-r", "k", fmt.Sprint(i, "b"), time.Now())}}); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, "applied", func() (bool, string) {
		r := s.edge.Budget()
		return r.Stages[stageEndToEnd].Count == 10, fmt.Sprint(r.Stages[stageEndToEnd].Count, " insights measured end to end")
	})

	resp, err := http.Get(s.http + "/v1/budget")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("GET /v1/budget: %d %s", resp.StatusCode, body)
	}
	var raw map[string]any
	if err := json.Unmarshal(body, &raw); err != nil {
		t.Fatal(err)
	}
	var keys []string
	for k := range raw {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	if got := strings.Join(keys, " "); got != "ack batch budget node region stages visible window_seconds within" {
		t.Errorf("report fields: %s", got)
	}
	var r BudgetReport
	if err := json.Unmarshal(body, &r); err != nil {
		t.Fatal(err)
	}
	if r.Region != "ap" || r.Node != "n7" || r.Budget.AckP99 != "1s" || r.Budget.VisibleP99 != "700ms" || r.WindowSeconds != 60 {
		t.Errorf("report header: %+v", r)
	}
	var names []string
	for _, st := range r.Stages {
		names = append(names, st.Stage)
		if st.Count == 0 || st.P99Seconds <= 0 || st.P50Seconds > st.P99Seconds || st.BudgetSeconds <= 0 {
			t.Errorf("stage %+v", st)
		}
	}
	if got := strings.Join(names, " "); got != "validation wal_sync ack queue_wait ship_round_trip apply end_to_end" {
		t.Errorf("stages: %s", got)
	}
	for _, k := range []string{"p50_seconds", "p99_seconds", "budget_seconds", "within", "count"} {
		if _, ok := raw["stages"].([]any)[0].(map[string]any)[k]; !ok {
			t.Errorf("stage without %s: %s", k, body)
		}
	}
	if r.Stages[stageValidation].Count != 5 || r.Stages[stageAck].Count != 5 || r.Stages[stageQueueWait].Count != 10 {
		t.Errorf("counts: validation %d ack %d queue_wait %d, want 5 requests, 5 requests, 10 insights",
			r.Stages[stageValidation].Count, r.Stages[stageAck].Count, r.Stages[stageQueueWait].Count)
	}
	if !r.Within || !r.Ack.Within || !r.Visible.Within || r.Ack.BudgetSeconds != 1 || r.Visible.BudgetSeconds != 0.7 {
		t.Errorf("verdicts: %s", body)
	}
	if r.Batch.Mode != "budget" || r.Batch.LastRecords == 0 || r.Batch.LastBytes == 0 || r.Batch.MaxWaitSeconds != 0.02 {
		t.Errorf("batch: %+v (the test edge caps the wait at 20ms)", r.Batch)
	}
	if ok, why := s.edge.WithinBudget(); !ok || !strings.HasPrefix(why, "within: ack ") || len(why) > 100 {
		t.Errorf("WithinBudget = %v, %q", ok, why)
	}

	resp, err = http.Get(s.http + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	metrics, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{
		`longhaul_edge_stage_seconds_count{region="ap",stage="end_to_end"} 10`,
		`longhaul_edge_stage_seconds_bucket{region="ap",stage="validation",le="+Inf"} 5`,
		`longhaul_edge_stage_window_seconds{quantile="0.99",region="ap",stage="ship_round_trip"}`,
		`longhaul_edge_stage_budget_seconds{region="ap",stage="end_to_end"} 0.7`,
		`longhaul_edge_budget_within{budget="all",region="ap"} 1`,
		`longhaul_edge_ship_batch_records_count`,
		`longhaul_edge_ship_target_wait_seconds 0.02`,
	} {
		if !strings.Contains(string(metrics), want) {
			t.Errorf("/metrics has no %s", want)
		}
	}

	// The primary goes: nothing is acknowledged, nothing measured, but the
	// oldest pending insight ages past the budget.
	if err := s.primary.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := s.ingest.Push(ctx, &longhaulv1.PushRequest{Insights: []*longhaulv1.Insight{insight("scan-r", "k", "late", time.Now())}}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "over budget", func() (bool, string) {
		ok, why := s.edge.WithinBudget()
		return !ok && strings.Contains(why, "oldest pending"), why
	})
	if r := s.edge.Budget(); r.Within || r.Visible.Within || !r.Ack.Within || r.Visible.OldestPendingSeconds < 0.7 {
		t.Errorf("with the primary gone: %+v", r)
	}
}

// budgetRig is a primary on a real PostgreSQL whose insights table notes
// when each row was inserted, by PostgreSQL's clock (a trigger; the
// commit follows within the apply time), and edges behind links to it,
// each pushed to at a steady rate: an independent measure of "visible".
type budgetRig struct {
	t       testing.TB
	url     string
	db      *pgxpool.Pool
	primary *primary.Service
}

func newBudgetRig(t testing.TB) *budgetRig {
	t.Helper()
	ctx := context.Background()
	r := &budgetRig{t: t, url: pgtest.URL(t)}
	var err error
	if r.db, err = pgxpool.New(ctx, r.url); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.db.Close)
	for _, q := range []string{
		`CREATE TABLE visible (subject text NOT NULL, observed timestamptz NOT NULL, at timestamptz NOT NULL)`,
		`CREATE FUNCTION note_visible() RETURNS trigger LANGUAGE plpgsql AS $$
		 BEGIN INSERT INTO visible VALUES (NEW.subject, NEW.last_seen_at, clock_timestamp()); RETURN NULL; END $$`,
		`CREATE TRIGGER note_visible AFTER INSERT ON insights FOR EACH ROW EXECUTE FUNCTION note_visible()`,
	} {
		if _, err := r.db.Exec(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	r.primary = startPrimary(t, r.url, "127.0.0.1:0")
	return r
}

// budgetEdge is an edge of the rig, its link, and its pusher's tally.
type budgetEdge struct {
	name string
	link *wan.Link
	sys  *system

	mu     sync.Mutex
	acks   []time.Duration // each push's, as the pusher saw it
	pushed int
	err    error
}

// edge starts an edge named name (its insights' subjects start with
// "name/") behind a link of rtt.
func (r *budgetRig) edge(name string, rtt time.Duration, cfg Config) *budgetEdge {
	r.t.Helper()
	link := wan.New(r.t, r.primary.Addr())
	link.SetRTT(rtt)
	cfg.Primary = link.Addr()
	if cfg.NodeID == "" {
		cfg.NodeID = name
	}
	return &budgetEdge{name: name, link: link, sys: startSystemTBWith(r.t, cfg, r.url)}
}

// push pushes perTick insights every tick until ctx ends, each observed
// when pushed.
func (e *budgetEdge) push(ctx context.Context, tick time.Duration, perTick int) {
	tk := time.NewTicker(tick)
	defer tk.Stop()
	n := 0
	for {
		select {
		case <-ctx.Done():
			return
		case <-tk.C:
		}
		now := time.Now()
		ins := make([]*longhaulv1.Insight, perTick)
		for i := range ins {
			ins[i] = insight(e.name, "budget", fmt.Sprintf("%s/%d", e.name, n), now)
			n++
		}
		_, err := e.sys.ingest.Push(context.WithoutCancel(ctx), &longhaulv1.PushRequest{Insights: ins})
		took := time.Since(now)
		e.mu.Lock()
		if err != nil {
			if e.err == nil {
				e.err = err
			}
		} else {
			e.acks = append(e.acks, took)
			e.pushed += len(ins)
		}
		e.mu.Unlock()
	}
}

// visible returns how long each of the edge's insights took from its push
// to its insert in the primary, by when it was pushed.
func (r *budgetRig) visible(e *budgetEdge) (pushed []time.Time, took []time.Duration) {
	r.t.Helper()
	rows, err := r.db.Query(context.Background(), `SELECT observed, at FROM visible WHERE subject LIKE $1 || '/%' ORDER BY observed`, e.name)
	if err != nil {
		r.t.Fatal(err)
	}
	defer rows.Close()
	for rows.Next() {
		var o, at time.Time
		if err := rows.Scan(&o, &at); err != nil {
			r.t.Fatal(err)
		}
		pushed, took = append(pushed, o), append(took, at.Sub(o))
	}
	if err := rows.Err(); err != nil {
		r.t.Fatal(err)
	}
	return pushed, took
}

// waitVisible waits until every insight the edge acknowledged is in the
// primary.
func (r *budgetRig) waitVisible(e *budgetEdge, timeout time.Duration) {
	r.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		var n int
		if err := r.db.QueryRow(context.Background(), `SELECT count(*) FROM visible WHERE subject LIKE $1 || '/%'`, e.name).Scan(&n); err != nil {
			r.t.Fatal(err)
		}
		e.mu.Lock()
		pushed, err := e.pushed, e.err
		e.mu.Unlock()
		if err != nil {
			r.t.Fatalf("%s: push: %v", e.name, err)
		}
		if n >= pushed {
			return
		}
		if time.Now().After(deadline) {
			r.t.Fatalf("%s: %d of %d insights visible after %v", e.name, n, pushed, timeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// percentile is the exact q-quantile (nearest rank) of ds, 0 for none.
func percentile(ds []time.Duration, q float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[min(len(s)-1, max(0, int(math.Ceil(q*float64(len(s))))-1))]
}

// batchMean is the edge's mean WAL records per batch since it started.
func (e *budgetEdge) batchMean() float64 {
	st := e.sys.edge.Shipper().Stats()
	if st.BatchesSent == 0 {
		return 0
	}
	return float64(st.RecordsSent) / float64(st.BatchesSent)
}

// TestBudgetSteeringKeepsVisibleWithinBudgetAsRTTRises: three edges of a
// region with a visible budget of 1s push to one primary at 300
// insights/s each, each behind its own link, whose round trip rises from
// 20ms to 150ms mid-test. Pass criteria, on the insights' visibility in
// the primary measured by PostgreSQL (a trigger), independent of the edge:
//
//   - the budget-steered edge keeps visible p99 within 1s over the whole
//     test, the rise included, and its target wait leaves room for the new
//     round trip; its own report agrees once the rise is out of its window (5s
//     here): end_to_end p99 and WithinBudget. (The edge measures to the
//     ack, half a round trip after the commit, so the batches under way
//     when the link slowed may briefly show over it.)
//   - the edge flushing every 1s regardless misses it (p99 over 1s: its
//     insights wait up to 1s, then the round trip);
//   - the budget-steered edge's batches are still far larger (≥ 5× the
//     records) than those of an edge shipping at once (MaxBatchAge 1ns),
//     which is within budget too but sends a batch per push or two.
//
// It compares behaviour, inside or over the budget, not speed.
func TestBudgetSteeringKeepsVisibleWithinBudgetAsRTTRises(t *testing.T) {
	if raceEnabled {
		t.Skip("a latency budget under the race detector's slowdown proves nothing; `make test` runs it")
	}
	t.Parallel()
	const (
		slow, fast = 150 * time.Millisecond, 20 * time.Millisecond
		tick       = 10 * time.Millisecond
		perTick    = 3 // 300 insights/s
	)
	// A window of 5s: at the end it holds only the time after the rise.
	budget := Budget{AckP99: 50 * time.Millisecond, VisibleP99: time.Second, Window: 5 * time.Second}.withDefaults()
	rig := newBudgetRig(t)
	steered := rig.edge("budget", fast, Config{Budget: budget, Shipper: ShipperConfig{MaxBatchAge: budget.VisibleP99}})
	fixed := rig.edge("fixed", fast, Config{Budget: budget, Shipper: ShipperConfig{FixedInterval: time.Second}})
	atOnce := rig.edge("at-once", fast, Config{Budget: budget, Shipper: ShipperConfig{MaxBatchAge: time.Nanosecond}})
	edges := []*budgetEdge{steered, fixed, atOnce}

	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for _, e := range edges {
		wg.Go(func() { e.push(ctx, tick, perTick) })
	}
	phase := func(d time.Duration) (targetWait time.Duration) {
		time.Sleep(d)
		return time.Duration(steered.sys.edge.Budget().Batch.TargetWaitSeconds * float64(time.Second))
	}
	waitFast := phase(4 * time.Second)
	rise := time.Now()
	for _, e := range edges {
		e.link.SetRTT(slow)
	}
	waitSlow := phase(8 * time.Second)
	cancel()
	wg.Wait()
	for _, e := range edges {
		rig.waitVisible(e, 30*time.Second)
	}

	type result struct {
		p99, p99Fast, p99Slow, ackP99, e2e time.Duration
		over                               float64
		within                             bool
		why                                string
		mean                               float64
	}
	res := map[string]result{}
	for _, e := range edges {
		pushed, took := rig.visible(e)
		var before, after []time.Duration
		over := 0
		for i, p := range pushed {
			if p.Before(rise) {
				before = append(before, took[i])
			} else {
				after = append(after, took[i])
			}
			if took[i] > budget.VisibleP99 {
				over++
			}
		}
		rep := e.sys.edge.Budget()
		// The visible verdict: the steering is about it; the push ack
		// budget on a loaded machine is noted below, not asserted.
		_, why := e.sys.edge.WithinBudget()
		within := rep.Visible.Within
		e.mu.Lock()
		r := result{p99: percentile(took, 0.99), p99Fast: percentile(before, 0.99), p99Slow: percentile(after, 0.99),
			ackP99: percentile(e.acks, 0.99), e2e: time.Duration(rep.Visible.P99Seconds * float64(time.Second)),
			over: float64(over) / float64(len(took)), within: within, why: why, mean: e.batchMean()}
		e.mu.Unlock()
		res[e.name] = r
		st := e.sys.edge.Shipper().Stats()
		t.Logf("%-8s visible p99 %v (%v at 20ms, %v at 150ms), %.1f%% over 1s; edge's end_to_end p99 %v; push ack p99 %v; %d batches, %.1f records/batch; %s",
			e.name, r.p99.Round(time.Millisecond), r.p99Fast.Round(time.Millisecond), r.p99Slow.Round(time.Millisecond), 100*r.over,
			r.e2e.Round(time.Millisecond), r.ackP99.Round(100*time.Microsecond), st.BatchesSent, r.mean, why)
	}
	t.Logf("budget edge's target wait: %v at 20ms, %v at 150ms", waitFast.Round(time.Millisecond), waitSlow.Round(time.Millisecond))

	if r := res["budget"]; r.p99 > budget.VisibleP99 || r.p99Slow > budget.VisibleP99 || !r.within || r.e2e > budget.VisibleP99 {
		t.Errorf("budget-steered edge: visible p99 %v (%v after the rise), end_to_end p99 %v, within %v: want all within %v",
			r.p99, r.p99Slow, r.e2e, r.within, budget.VisibleP99)
	}
	if r := res["fixed"]; r.p99 <= budget.VisibleP99 || r.within {
		t.Errorf("fixed 1s flush: visible p99 %v, within %v: want over %v", r.p99, r.within, budget.VisibleP99)
	}
	if b, a := res["budget"].mean, res["at-once"].mean; b < 5*a {
		t.Errorf("budget-steered batches hold %.1f records, those shipped at once %.1f: want at least 5× as many", b, a)
	}
	// After the rise the steering leaves at least the new round trip and
	// the margin out of its wait, and still waits. (It shrinks by about the
	// rise on a quiet machine; on a loaded one the apply's p99 may dwarf
	// the rise.)
	if waitSlow <= 0 || waitSlow > budget.VisibleP99-slow-budget.Margin {
		t.Errorf("target wait %v at 150ms: want it in (0, %v]", waitSlow, budget.VisibleP99-slow-budget.Margin)
	}
	for _, e := range edges {
		if r := res[e.name]; r.ackP99 > budget.AckP99 {
			t.Logf("note: %s push ack p99 %v is over %v (a loaded machine)", e.name, r.ackP99, budget.AckP99)
		}
	}
}

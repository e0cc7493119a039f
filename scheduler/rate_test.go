package scheduler

import (
	"math"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

// TestRate: the formula of the seed's fix, Σ(assets of a plan ÷ its
// interval), at least 1/s, times the buffer factor.
func TestRate(t *testing.T) {
	t.Parallel()
	const day = 24 * 3600
	for _, tc := range []struct {
		name      string
		counts    map[Plan]int64
		intervals Intervals
		buffer    float64
		want      float64
	}{
		{"no assets: the floor", nil, nil, 1.5, 1.5},
		{"below 1/s: the floor", map[Plan]int64{PlanFree: 1000}, nil, 1.5, 1.5},
		{"default intervals", map[Plan]int64{
			PlanFree:       7 * day,     // 1/s
			PlanPro:        3 * day,     // 1/s
			PlanBusiness:   3 * day * 2, // 2/s
			PlanEnterprise: 3 * day,     // 3/s
		}, nil, 1.5, 7 * 1.5},
		{"configured intervals; others default", map[Plan]int64{PlanPro: 1000, PlanFree: 7 * day}, Intervals{PlanPro: 100 * time.Second}, 2, (10 + 1) * 2},
	} {
		if got := Rate(tc.counts, tc.intervals, tc.buffer); math.Abs(got-tc.want) > 1e-9 {
			t.Errorf("%s: Rate = %v, want %v", tc.name, got, tc.want)
		}
	}
}

// TestBucket: the token bucket on a fake clock.
func TestBucket(t *testing.T) {
	t.Parallel()
	var b bucket
	now := t0
	b.set(10, 25, now)
	steps := []struct {
		advance time.Duration
		want    int // whole tokens, all taken
	}{
		{0, 0},                      // starts empty
		{time.Second, 10},           // rate × 1s
		{250 * time.Millisecond, 2}, // 2.5: 0.5 stays
		{250 * time.Millisecond, 3}, // 0.5 + 2.5
		{time.Hour, 25},             // no more than the burst
		{-time.Minute, 0},           // a clock stepping back adds nothing
		{100 * time.Millisecond, 1}, // counted from where it stepped back to
		{1500 * time.Millisecond, 15},
	}
	for i, s := range steps {
		now = now.Add(s.advance)
		got := b.available(now)
		if got != s.want {
			t.Fatalf("step %d (+%v): %d tokens, want %d", i, s.advance, got, s.want)
		}
		b.take(got)
	}
	b.set(1, 2, now)
	now = now.Add(time.Minute)
	if got := b.available(now); got != 2 {
		t.Errorf("after set(1, 2): %d tokens, want the new burst 2", got)
	}
}

// TestTickReleasesNoMoreThanTheBucket: with 1,000 due assets and a fake
// clock, each tick produces exactly the whole tokens the bucket holds
// (rate 15/s from 1,000 pro assets every 100s × 1.5, burst 30), and the
// jobs on Kafka are as many, each asset once.
func TestTickReleasesNoMoreThanTheBucket(t *testing.T) {
	t.Parallel()
	b := setup(t, true, Config{Intervals: Intervals{PlanPro: 100 * time.Second}, Burst: 30, ClaimBatch: 7})
	b.register(t, makeAssets("acme", "a", 1000, PlanPro))
	b.exec(t, `UPDATE assets SET next_scan_at = $1`, t0.Add(-time.Hour))
	if err := b.svc.recomputeRate(b.ctx); err != nil {
		t.Fatal(err)
	}
	if st := b.svc.Stats(); math.Abs(st.Rate-15) > 1e-9 || st.Burst != 30 || st.Assets[PlanPro] != 1000 {
		t.Fatalf("stats %+v, want rate 15, burst 30, 1000 pro assets", st)
	}
	if got := testutil.ToFloat64(b.svc.metrics.rate); math.Abs(got-15) > 1e-9 {
		t.Errorf("longhaul_scheduler_rate = %v, want 15", got)
	}
	steps := []struct {
		advance time.Duration
		want    int
	}{
		{0, 0}, // the bucket starts empty
		{time.Second, 15},
		{time.Second, 15},
		{time.Second, 15},
		{0, 0},
		{10 * time.Second, 30}, // capped at the burst
		{500 * time.Millisecond, 7},
		{500 * time.Millisecond, 8},
	}
	total := 0
	for i, s := range steps {
		b.clock.Advance(s.advance)
		res := b.tick(t)
		if res.scheduled != s.want || res.onDemand != 0 {
			t.Fatalf("tick %d (+%v): %+v, want %d scheduled", i, s.advance, res, s.want)
		}
		total += res.scheduled
	}
	got := b.jobs(t, 10*time.Second, atLeast(total))
	if len(got) != total {
		t.Fatalf("%d jobs on Kafka, want %d", len(got), total)
	}
	for k, ps := range byAsset(got) {
		if len(ps) != 1 {
			t.Errorf("%s: %d jobs, want 1", k, len(ps))
		}
	}
	if due := b.count(t, `SELECT count(*) FROM assets WHERE next_scan_at <= $1`, b.clock.Now()); due != int64(1000-total) {
		t.Errorf("%d assets still due, want %d", due, 1000-total)
	}
	if n := b.count(t, `SELECT count(*) FROM assets WHERE last_job_id IS NOT NULL AND next_scan_at > $1`, b.clock.Now()); n != int64(total) {
		t.Errorf("%d assets moved on, want %d", n, total)
	}
}

package devstack

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"
)

// RegionStatus is one region's state over the last interval: what its
// checkers scanned and pushed, what its edges had applied in the primary,
// their latency against the region's budget (p99 over the budget's window,
// the worst of the region's edges) and what they hold not yet applied.
type RegionStatus struct {
	Region string
	// ScansPerSec and InsightsPerSec: scans completed and insights pushed
	// by the region's checkers. AppliedPerSec: insights of the region's
	// edges applied in the primary.
	ScansPerSec, InsightsPerSec, AppliedPerSec float64
	// Ack and Visible are the p99s against the budget; a zero count means
	// nothing was measured in the window.
	Ack, Visible Latency
	// Backlog is the records in the region's WALs not yet applied, and
	// Oldest the age of the oldest of them.
	Backlog uint64
	Oldest  time.Duration
}

// Latency is a p99 against its budget.
type Latency struct {
	P99, Budget time.Duration
	Count       uint64
	Within      bool
}

// counters are a region's running totals at one time.
type counters struct {
	at                       time.Time
	scans, insights, applied uint64
}

// sampler turns totals into rates between two calls.
type sampler struct {
	s    *Stack
	prev map[string]counters
}

func (s *Stack) newSampler() *sampler {
	sm := &sampler{s: s, prev: map[string]counters{}}
	for _, r := range Regions {
		sm.prev[r] = s.counters(r, time.Now())
	}
	return sm
}

func (s *Stack) counters(region string, now time.Time) counters {
	c := counters{at: now}
	st := s.RegionStats(region)
	c.scans, c.insights = uint64(st.Scans), uint64(st.Insights)
	for _, e := range s.edges {
		if e.spec.region == region {
			c.applied += e.svc.Shipper().Stats().InsightsIn
		}
	}
	return c
}

// sample returns every region's status since the last sample.
func (sm *sampler) sample() []RegionStatus {
	now := time.Now()
	out := make([]RegionStatus, 0, len(Regions))
	for _, r := range Regions {
		cur, prev := sm.s.counters(r, now), sm.prev[r]
		sm.prev[r] = cur
		secs := max(cur.at.Sub(prev.at).Seconds(), 1e-3)
		rate := func(a, b uint64) float64 { return float64(a-min(a, b)) / secs }
		st := RegionStatus{Region: r,
			ScansPerSec: rate(cur.scans, prev.scans), InsightsPerSec: rate(cur.insights, prev.insights),
			AppliedPerSec: rate(cur.applied, prev.applied),
			Ack:           Latency{Within: true}, Visible: Latency{Within: true}}
		for _, e := range sm.s.edges {
			if e.spec.region != r {
				continue
			}
			rep := e.svc.Budget()
			worse(&st.Ack, rep.Ack.P99Seconds, rep.Ack.BudgetSeconds, rep.Ack.Count, rep.Ack.Within)
			worse(&st.Visible, rep.Visible.P99Seconds, rep.Visible.BudgetSeconds, rep.Visible.Count, rep.Visible.Within)
			ws := e.svc.WAL().Stats()
			st.Backlog += ws.Records
			if !ws.OldestAppendedAt.IsZero() {
				st.Oldest = max(st.Oldest, now.Sub(ws.OldestAppendedAt))
			}
		}
		out = append(out, st)
	}
	return out
}

// worse folds one edge's verdict into the region's: the largest p99, the
// counts summed, within only if every edge is.
func worse(l *Latency, p99, budget float64, count uint64, within bool) {
	l.P99 = max(l.P99, seconds(p99))
	l.Budget = max(l.Budget, seconds(budget))
	l.Count += count
	l.Within = l.Within && within
}

func seconds(f float64) time.Duration { return time.Duration(f * float64(time.Second)) }

// Line formats the status as one line, columns aligned from line to line:
//
//	15:04:05 eu  scans/s   24.8  insights/s    496  applied/s    501  ack p99   4.2ms/50ms ok    visible p99  612ms/1s  ok    backlog      37 (oldest 0.21s)
func (st RegionStatus) Line(now time.Time) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %-3s scans/s %6.1f  insights/s %6.0f  applied/s %6.0f  ack p99 %s  visible p99 %s  backlog %7d",
		now.Format("15:04:05"), st.Region, st.ScansPerSec, st.InsightsPerSec, st.AppliedPerSec,
		st.Ack.format(7, 4), st.Visible.format(7, 3), st.Backlog)
	if st.Backlog > 0 {
		fmt.Fprintf(&b, " (oldest %s)", short(st.Oldest))
	}
	return b.String()
}

// format writes "p99/budget verdict", the p99 right-aligned in w and the
// budget left-aligned in bw, so that columns line up.
func (l Latency) format(w, bw int) string {
	p99, verdict := "-", "    "
	if l.Count > 0 {
		p99, verdict = short(l.P99), "ok  "
	}
	if !l.Within {
		verdict = "OVER"
	}
	return fmt.Sprintf("%*s/%-*s %s", w, p99, bw, short(l.Budget), verdict)
}

// short formats a duration with about three significant digits.
func short(d time.Duration) string {
	switch {
	case d >= 10*time.Second:
		d = d.Round(100 * time.Millisecond)
	case d >= time.Second:
		d = d.Round(10 * time.Millisecond)
	case d >= 10*time.Millisecond:
		d = d.Round(100 * time.Microsecond)
	case d >= time.Millisecond:
		d = d.Round(10 * time.Microsecond)
	default:
		d = d.Round(time.Microsecond)
	}
	// 2m0s reads better as 2m, 1h0m0s as 1h.
	out := d.String()
	if strings.HasSuffix(out, "m0s") {
		out = strings.TrimSuffix(out, "0s")
	}
	if strings.HasSuffix(out, "h0m") {
		out = strings.TrimSuffix(out, "0m")
	}
	return out
}

// Run writes every region's line to w every Config.Every until ctx ends
// or Stop begins (Stop waits for it to return).
func (s *Stack) Run(ctx context.Context, w io.Writer) {
	s.runMu.Lock()
	if s.stopping.Load() {
		s.runMu.Unlock()
		return
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	s.runs.Add(1)
	defer s.runs.Done()
	s.runCancels = append(s.runCancels, cancel)
	s.runMu.Unlock()

	sm := s.newSampler()
	t := time.NewTicker(s.cfg.Every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			for _, st := range sm.sample() {
				fmt.Fprintln(w, st.Line(now))
			}
		}
	}
}

package writepath

import (
	"context"
	"math"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// call is one scan on its checker: when the checker took it and when its
// last write call returned, in time since the workload started, and how
// long the checker was blocked in write calls meanwhile (the rest it spent
// scanning).
type call struct{ start, end, blocked time.Duration }

// runCheckers runs the workload's scans on concurrency checkers: each takes
// the next scan when the last write call of its previous one returns, as a
// checker takes the next job. work runs scan i (scanning and writing) and
// returns the time it was blocked in write calls. runCheckers returns
// every scan's call, by scan, and the first error (which stops the
// others). done is told the insights of each scan written.
func runCheckers(ctx context.Context, t0 time.Time, concurrency int, scans []scan,
	work func(ctx context.Context, i int) (blocked time.Duration, err error), done func(insights int)) ([]call, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	calls := make([]call, len(scans))
	var (
		next     atomic.Int64
		wg       sync.WaitGroup
		errOnce  sync.Once
		firstErr error
	)
	for range min(concurrency, len(scans)) {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= len(scans) || ctx.Err() != nil {
					return
				}
				start := time.Since(t0)
				blocked, err := work(ctx, i)
				calls[i] = call{start: start, end: time.Since(t0), blocked: blocked}
				if err != nil {
					errOnce.Do(func() { firstErr = err; cancel() })
					return
				}
				done(scans[i].n)
			}
		})
	}
	wg.Wait()
	if firstErr != nil {
		return nil, firstErr
	}
	return calls, ctx.Err()
}

// Pace of a big scan's findings: a step every scanStep of its scan time,
// but no more than maxScanSteps steps (each then 1 % of the scan).
const (
	scanStep     = 100 * time.Millisecond
	maxScanSteps = 100
)

// scanTime is how long scan s scans: Config.ScanTime times the scan's
// spread (0.5 to 1.5, the mean 1) for a small one, Config.BigScanTime for a
// big one.
func (c Config) scanTime(s scan) time.Duration {
	if s.big {
		return c.BigScanTime
	}
	return time.Duration(float64(c.ScanTime) * s.spread)
}

// scanSteps is how many steps scan s finds its insights in: one, at the
// end of its scan time, for a small scan; for a big one a step every
// scanStep, no more than maxScanSteps, nor than its insights.
func (c Config) scanSteps(s scan) int {
	if !s.big || c.BigScanTime <= 0 {
		return 1
	}
	return max(1, min(int((c.BigScanTime+scanStep-1)/scanStep), maxScanSteps, s.n))
}

// scanning scans s as a checker does: for Config.scanTime(s), in
// Config.scanSteps(s) equal steps, each ending with its part of the
// insights found (indices lo to hi in the scan). found, unless nil, is
// called with each part as soon as it is found, and the time it takes is
// returned as blocked: it does not count as scanning, it delays the rest
// of the scan, as a write call in a checker's loop does.
func (r *runner) scanning(ctx context.Context, s scan, found func(ctx context.Context, lo, hi int) error) (blocked time.Duration, err error) {
	d, steps := r.cfg.scanTime(s), r.cfg.scanSteps(s)
	start := time.Now()
	for k := range steps {
		// Paced from the start, not step by step, so that timer slack does
		// not add up over a long scan.
		if err := sleepUntil(ctx, start.Add(blocked+d*time.Duration(k+1)/time.Duration(steps))); err != nil {
			return blocked, err
		}
		if found == nil {
			continue
		}
		t := time.Now()
		err := found(ctx, k*s.n/steps, (k+1)*s.n/steps)
		blocked += time.Since(t)
		if err != nil {
			return blocked, err
		}
	}
	return blocked, nil
}

// sleepUntil waits until t, or returns ctx's error once it ends.
func sleepUntil(ctx context.Context, t time.Time) error {
	d := time.Until(t)
	if d <= 0 {
		return ctx.Err()
	}
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-timer.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// figures computes a strategy's figures from its calls; visible is when
// every row was visible, since the start.
func figures(s *Strategy, calls []call, visible time.Duration) {
	lat := make([]float64, len(calls))
	var blocked, busy, last time.Duration
	for i, c := range calls {
		blocked += c.blocked
		busy += c.end - c.start
		last = max(last, c.end)
		lat[i] = c.blocked.Seconds()
	}
	slices.Sort(lat)
	s.Scans = len(calls)
	s.BlockedSeconds = blocked.Seconds()
	s.CheckerSeconds = busy.Seconds()
	s.BlockedShare = ratio(blocked.Seconds(), busy.Seconds())
	s.WriteSeconds = last.Seconds()
	s.VisibleSeconds = visible.Seconds()
	s.ScansPerSecond = ratio(float64(len(calls)), last.Seconds())
	s.PushP50Seconds = quantile(lat, 0.50)
	s.PushP99Seconds = quantile(lat, 0.99)
	s.PushMaxSeconds = quantile(lat, 1)
}

// quantile is the nearest-rank q-quantile of sorted values (0 for none).
func quantile(sorted []float64, q float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	i := int(math.Ceil(q*float64(len(sorted)))) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}

// ratio is a ÷ b, or 0 when b is 0 (JSON has no infinity).
func ratio(a, b float64) float64 {
	if b == 0 {
		return 0
	}
	return a / b
}

// progress serialises calls to a Progress function and counts what is done.
type progress struct {
	mu    sync.Mutex
	f     func(phase string, done, total int)
	phase string
	done  int
	total int
}

func (p *progress) start(phase string, total int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.phase, p.done, p.total = phase, 0, total
	p.f(phase, 0, total)
}

func (p *progress) add(n int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.done += n
	p.f(p.phase, p.done, p.total)
}

func (p *progress) set(n int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.done = n
	p.f(p.phase, p.done, p.total)
}

package writepath

import (
	"context"
	"math"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// call is one scan's write call, in time since the workload started.
type call struct{ start, end time.Duration }

// runCheckers runs the workload's scans on concurrency checkers: each takes
// the next scan when its write call returns, as a checker takes the next
// job. It returns every scan's call, by scan, and the first error (which
// stops the others). done is told the insights of each scan written.
func runCheckers(ctx context.Context, t0 time.Time, concurrency int, scans []scan,
	write func(ctx context.Context, i int) error, done func(insights int)) ([]call, error) {
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
				err := write(ctx, i)
				calls[i] = call{start: start, end: time.Since(t0)}
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

// figures computes a strategy's figures from its calls; visible is when
// every row was visible, since the start.
func figures(s *Strategy, calls []call, visible time.Duration) {
	lat := make([]float64, len(calls))
	var blocked, last time.Duration
	for i, c := range calls {
		blocked += c.end - c.start
		last = max(last, c.end)
		lat[i] = (c.end - c.start).Seconds()
	}
	slices.Sort(lat)
	s.Scans = len(calls)
	s.BlockedSeconds = blocked.Seconds()
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

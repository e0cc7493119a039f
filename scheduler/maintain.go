package scheduler

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// learnOverlap is how far before the latest completion seen each learning
// pass looks again. completed_at is the primary's now(), its transaction's
// start: a scan can become visible after a later one that committed
// first. Scans seen twice are folded in twice, which changes nothing.
const learnOverlap = time.Minute

// learn folds the scans completed since the last pass into their assets'
// expected cost (sqlLearn) and returns the assets updated. The watermark is
// in memory: the first pass after start looks back LearnLookback.
func (s *Service) learn(ctx context.Context) (int64, error) {
	s.learnMu.Lock()
	defer s.learnMu.Unlock()
	if s.watermark.IsZero() {
		if err := s.pool.QueryRow(ctx, sqlLearnStart, s.cfg.LearnLookback.Microseconds()).Scan(&s.watermark); err != nil {
			return 0, fmt.Errorf("scheduler: learn: %w", err)
		}
	}
	var (
		n      int64
		latest *time.Time
	)
	if err := s.pool.QueryRow(ctx, sqlLearn, s.watermark.Add(-learnOverlap)).Scan(&n, &latest); err != nil {
		return 0, fmt.Errorf("scheduler: learn: %w", err)
	}
	if latest != nil && latest.After(s.watermark) {
		s.watermark = *latest
	}
	s.metrics.learned.Add(float64(n))
	return n, nil
}

// countBacklog counts the due assets and the pending on-demand requests.
func (s *Service) countBacklog(ctx context.Context) error {
	var due, pending int64
	if err := s.pool.QueryRow(ctx, sqlBacklog, s.cfg.Now()).Scan(&due, &pending); err != nil {
		return fmt.Errorf("scheduler: count backlog: %w", err)
	}
	s.metrics.due.Set(float64(due))
	s.metrics.pending.Set(float64(pending))
	s.mu.Lock()
	s.due, s.pending = due, pending
	s.mu.Unlock()
	return nil
}

// recomputeRate counts the assets of each plan and sets the token bucket's
// rate (Rate) and size.
func (s *Service) recomputeRate(ctx context.Context) error {
	rows, _ := s.pool.Query(ctx, sqlPlanCounts)
	counts := map[Plan]int64{}
	var (
		plan string
		n    int64
	)
	if _, err := pgx.ForEachRow(rows, []any{&plan, &n}, func() error {
		counts[Plan(plan)] = n
		return nil
	}); err != nil {
		return fmt.Errorf("scheduler: count assets: %w", err)
	}
	rate := Rate(counts, s.cfg.Intervals, s.cfg.BufferFactor)
	burst := float64(s.cfg.Burst)
	if burst == 0 {
		burst = defaultBurst(rate, s.cfg.Tick)
	}
	now := s.cfg.Now()
	s.mu.Lock()
	changed := s.bucket.rate != rate
	s.bucket.set(rate, burst, now)
	s.counts, s.rateAt = counts, now
	s.mu.Unlock()
	s.metrics.rate.Set(rate)
	s.metrics.burst.Set(burst)
	for _, p := range Plans {
		s.metrics.assets.WithLabelValues(string(p)).Set(float64(counts[p]))
	}
	if changed {
		s.log.Info("scheduler: rate", "jobs_per_second", rate, "burst", burst, "assets", counts)
	}
	return nil
}

// kickRate asks the maintenance loop to compute the rate again soon.
func (s *Service) kickRate() {
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// runTicks ticks every Tick until ctx ends.
func (s *Service) runTicks(ctx context.Context) {
	t := time.NewTicker(s.cfg.Tick)
	defer t.Stop()
	failing := false
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		res, err := s.tick(ctx)
		switch {
		case ctx.Err() != nil:
			return
		case err != nil:
			s.log.Warn("scheduler: tick failed; the assets stay due", "err", err)
			failing = true
		case failing:
			s.log.Info("scheduler: ticks succeed again")
			failing = false
		}
		if res.onDemand+res.scheduled > 0 {
			s.log.Debug("scheduler: tick", "on_demand", res.onDemand, "scheduled", res.scheduled)
		}
	}
}

// runMaintenance computes the rate every RateEvery (and when kicked), and
// learns costs and counts the backlog every LearnEvery, until ctx ends.
func (s *Service) runMaintenance(ctx context.Context) {
	rate := time.NewTicker(s.cfg.RateEvery)
	defer rate.Stop()
	learn := time.NewTicker(s.cfg.LearnEvery)
	defer learn.Stop()
	housekeep := func() {
		if _, err := s.learn(ctx); err != nil && ctx.Err() == nil {
			s.log.Warn("scheduler: learning scan costs", "err", err)
		}
		if err := s.countBacklog(ctx); err != nil && ctx.Err() == nil {
			s.log.Warn("scheduler: counting the backlog", "err", err)
		}
	}
	housekeep()
	for {
		select {
		case <-ctx.Done():
			return
		case <-rate.C:
		case <-s.kick:
		case <-learn.C:
			housekeep()
			continue
		}
		if err := s.recomputeRate(ctx); err != nil && ctx.Err() == nil {
			s.log.Warn("scheduler: computing the rate; keeping the last one", "err", err)
		}
	}
}

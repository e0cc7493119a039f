package scheduler

import (
	"math"
	"time"
)

// Rate returns the rate (jobs per second) at which scheduled jobs are
// released for counts assets per plan: the rate the schedule needs,
// Σ over plans of (assets of the plan ÷ the plan's interval), at least one
// a second, times buffer, so that a backlog drains. Plans intervals leaves
// out count with their default interval.
func Rate(counts map[Plan]int64, intervals Intervals, buffer float64) float64 {
	intervals = intervals.withDefaults()
	need := 0.0
	for p, n := range counts {
		if iv := intervals[p]; iv > 0 {
			need += float64(n) / iv.Seconds()
		}
	}
	return math.Max(1, need) * buffer
}

// defaultBurst is the bucket's size when Config.Burst is not set: two
// ticks' worth at rate, at least one job.
func defaultBurst(rate float64, tick time.Duration) float64 {
	return math.Max(1, math.Ceil(2*rate*tick.Seconds()))
}

// bucket is a token bucket on an injectable clock. It starts empty, so a
// scheduler that starts (or restarts) does not release a burst at once.
// Not safe for concurrent use.
type bucket struct {
	rate   float64 // tokens per second
	burst  float64 // tokens at the most
	tokens float64
	last   time.Time // of the last refill; zero before the first
}

func (b *bucket) refill(now time.Time) {
	if b.last.IsZero() {
		b.last = now
		return
	}
	d := now.Sub(b.last)
	b.last = now
	if d > 0 { // a clock that steps back adds nothing
		b.tokens = math.Min(b.burst, b.tokens+d.Seconds()*b.rate)
	}
}

// available refills the bucket to now and returns the whole tokens in it.
func (b *bucket) available(now time.Time) int {
	b.refill(now)
	return int(math.Floor(b.tokens))
}

// take spends n tokens.
func (b *bucket) take(n int) { b.tokens = math.Max(0, b.tokens-float64(n)) }

// set changes the rate and size, keeping the tokens (up to the new size).
func (b *bucket) set(rate, burst float64, now time.Time) {
	b.refill(now)
	b.rate, b.burst = rate, burst
	b.tokens = math.Min(b.tokens, burst)
}

package writepath

import (
	"context"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	longhaulv1 "github.com/longhaul/longhaul/api/longhaul/v1"
	"github.com/longhaul/longhaul/primary"
)

// perRow is the seed's original design: each scan's insights in one call
// at the end of the scan, one INSERT … ON CONFLICT per insight in a
// transaction (BEGIN, a statement per row, COMMIT: a round trip each),
// from the same pool across the link as direct. When the workload has more
// rows than Config.Sample, only a sample is written and the figures are
// extrapolated (simulate: the write's time from the sample, the scan time
// as configured); otherwise the workload runs for real, as direct's does.
func (r *runner) perRow(ctx context.Context) (*Strategy, error) {
	schema, schemaURL, err := r.srv.newSchema(ctx, PerRow)
	if err != nil {
		return nil, err
	}
	defer r.srv.dropSchema(ctx, schema)
	pool, link, err := linkedPool(ctx, schemaURL, r.cfg.RTT, r.cfg.Pool, r.srv.addr)
	if err != nil {
		return nil, err
	}
	defer link.Close()
	defer pool.Close()

	var st *Strategy
	if r.cfg.Rows() <= int64(r.cfg.Sample) {
		st, err = r.perRowMeasured(ctx, pool)
	} else {
		st, err = r.perRowSampled(ctx, pool)
	}
	if err != nil {
		return nil, err
	}
	if st.RowsWritten, err = r.srv.count(ctx, schema); err != nil {
		return nil, err
	}
	return st, nil
}

// perRowMeasured runs the whole workload the per-row way.
func (r *runner) perRowMeasured(ctx context.Context, pool *pgxpool.Pool) (*Strategy, error) {
	return r.writeAtEnd(ctx, pool, "per_row: writing across the link", func(ctx context.Context, conn *pgx.Conn, rows []*longhaulv1.BatchInsight) error {
		return writePerRow(ctx, conn, rows, func(time.Duration) {})
	})
}

// perRowSampled writes Config.Sample rows the per-row way, in calls of a
// scan's size at most, from every connection of the pool at once, and
// extrapolates the workload's figures from the mean statement time.
func (r *runner) perRowSampled(ctx context.Context, pool *pgxpool.Pool) (*Strategy, error) {
	n := r.cfg.Sample
	rows := primary.Synthetic(n, 0, r.cfg.DetailsBytes, r.observed, "writepath-sample")
	callSize := r.cfg.PerScan
	if r.cfg.Scans == 0 {
		callSize = r.cfg.Insights
	}
	// Calls no larger than a scan, and enough of them for every connection.
	chunk := max(1, min(callSize, (n+r.cfg.Pool-1)/r.cfg.Pool))
	var (
		next       atomic.Int64
		statements atomic.Int64
		spent      atomic.Int64 // nanoseconds in statements
	)
	observe := func(d time.Duration) { statements.Add(1); spent.Add(int64(d)) }
	r.progress.start("per_row: sample across the link", n)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		wg       sync.WaitGroup
		errOnce  sync.Once
		firstErr error
	)
	start := time.Now()
	for range r.cfg.Pool {
		wg.Go(func() {
			for {
				lo := int(next.Add(int64(chunk))) - chunk
				if lo >= n || ctx.Err() != nil {
					return
				}
				hi := min(lo+chunk, n)
				err := func() error {
					conn, err := pool.Acquire(ctx)
					if err != nil {
						return err
					}
					defer conn.Release()
					return writePerRow(ctx, conn.Conn(), rows[lo:hi], observe)
				}()
				if err != nil {
					errOnce.Do(func() { firstErr = err; cancel() })
					return
				}
				r.progress.add(hi - lo)
			}
		})
	}
	wg.Wait()
	if firstErr != nil {
		return nil, firstErr
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	sample := &Sample{Rows: n, Statements: int(statements.Load()), Seconds: time.Since(start).Seconds()}
	stmt := time.Duration(spent.Load() / statements.Load())
	sample.StatementSeconds = stmt.Seconds()
	calls := simulate(r.scans, r.cfg.Concurrency, r.cfg.Pool, stmt, r.cfg.scanTime)
	st := &Strategy{Extrapolated: true, Sample: sample}
	figures(st, calls, lastEnd(calls))
	return st, nil
}

// writePerRow writes rows the seed's original way: a transaction with one
// INSERT … ON CONFLICT per row. Each row goes through primary.WriteDirect
// alone, which writes fewer rows than its threshold as one upsert statement,
// the same upsert the other strategies run. observe is told each
// statement's time.
func writePerRow(ctx context.Context, conn *pgx.Conn, rows []*longhaulv1.BatchInsight, observe func(time.Duration)) error {
	t := time.Now()
	tx, err := conn.Begin(ctx)
	if err != nil {
		return err
	}
	observe(time.Since(t))
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }() // a no-op after Commit
	for i := range rows {
		t = time.Now()
		if err := primary.WriteDirect(ctx, tx.Conn(), rows[i:i+1], 2); err != nil {
			return err
		}
		observe(time.Since(t))
	}
	t = time.Now()
	if err := tx.Commit(ctx); err != nil {
		return err
	}
	observe(time.Since(t))
	return nil
}

// simulate replays the workload on a model of per_row: concurrency
// checkers take the scans in order, as runCheckers does; each scans for
// scanTime of its scan (as given: the model does not extrapolate it), then
// asks for a connection; requests are served first come, first served, by
// the first of pool connections to be free, which the call holds for one
// statement per row plus BEGIN and COMMIT, stmt each. The checker is
// blocked from its request to the call's end. simulate returns the calls
// as runCheckers would have timed them.
func simulate(scans []scan, concurrency, pool int, stmt time.Duration, scanTime func(scan) time.Duration) []call {
	type request struct {
		ask     time.Duration
		scan    int
		checker int
	}
	free := make([]time.Duration, min(concurrency, len(scans))) // when each idle checker is free
	idle := make([]bool, len(free))
	for c := range idle {
		idle[c] = true
	}
	conns := make([]time.Duration, pool) // when each is free
	calls := make([]call, len(scans))
	var pending []request // asked, not yet served, in the order asked
	next := 0
	for served := 0; served < len(scans); {
		// The idle checker free first takes the next scan, unless a request
		// was made before it is free: no request made later can come
		// before that one, so it is served now.
		c := -1
		for i := range free {
			if idle[i] && (c < 0 || free[i] < free[c]) {
				c = i
			}
		}
		if len(pending) > 0 && (next == len(scans) || c < 0 || pending[0].ask <= free[c]) {
			rq := pending[0]
			pending = pending[1:]
			k := argmin(conns)
			end := max(rq.ask, conns[k]) + time.Duration(scans[rq.scan].n+2)*stmt
			conns[k] = end
			calls[rq.scan].end, calls[rq.scan].blocked = end, end-rq.ask
			free[rq.checker], idle[rq.checker] = end, true
			served++
			continue
		}
		rq := request{ask: free[c] + scanTime(scans[next]), scan: next, checker: c}
		calls[next].start = free[c]
		idle[c] = false
		next++
		// In the order asked; a scan taken later asks no earlier unless it
		// scans for less.
		at := len(pending)
		for at > 0 && pending[at-1].ask > rq.ask {
			at--
		}
		pending = slices.Insert(pending, at, rq)
	}
	return calls
}

func argmin(ts []time.Duration) int {
	m := 0
	for i, t := range ts {
		if t < ts[m] {
			m = i
		}
	}
	return m
}

func lastEnd(calls []call) time.Duration {
	var last time.Duration
	for _, c := range calls {
		last = max(last, c.end)
	}
	return last
}

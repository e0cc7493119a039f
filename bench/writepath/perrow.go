package writepath

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	longhaulv1 "github.com/longhaul/longhaul/api/longhaul/v1"
	"github.com/longhaul/longhaul/primary"
)

// perRow is the seed's original design: each scan's insights in one call,
// one INSERT … ON CONFLICT per insight in a transaction (BEGIN, a
// statement per row, COMMIT: a round trip each), from the same pool across
// the link as direct. When the workload has more rows than Config.Sample,
// only a sample is written and the figures are extrapolated (simulate);
// otherwise the workload runs for real, as direct's does.
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
	rows := make([][]*longhaulv1.BatchInsight, len(r.scans))
	for i, s := range r.scans {
		rows[i] = batchRows(s, r.cfg, r.observed)
	}
	r.progress.start("per_row: writing across the link", int(r.cfg.Rows()))
	calls, err := runCheckers(ctx, time.Now(), r.cfg.Concurrency, r.scans, func(ctx context.Context, i int) error {
		conn, err := pool.Acquire(ctx)
		if err != nil {
			return err
		}
		defer conn.Release()
		if err := writePerRow(ctx, conn.Conn(), rows[i], func(time.Duration) {}); err != nil {
			return fmt.Errorf("scan %s: %w", r.scans[i].id, err)
		}
		return nil
	}, r.progress.add)
	if err != nil {
		return nil, err
	}
	st := &Strategy{}
	figures(st, calls, lastEnd(calls))
	return st, nil
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
	calls := simulate(r.scans, r.cfg.Concurrency, r.cfg.Pool, stmt)
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
// checkers take the scans in order, as runCheckers does; each call waits
// for the first of pool connections to be free (first come, first served),
// and holds it for one statement per row plus BEGIN and COMMIT, stmt each.
// It returns the calls as runCheckers would have timed them.
func simulate(scans []scan, concurrency, pool int, stmt time.Duration) []call {
	checkers := make([]time.Duration, min(concurrency, len(scans))) // when each is free
	conns := make([]time.Duration, pool)
	calls := make([]call, len(scans))
	for i, s := range scans {
		// The checker free first asks next; requests thus come in time
		// order, and the connection free first serves it.
		c := argmin(checkers)
		k := argmin(conns)
		ask := checkers[c]
		begin := max(ask, conns[k])
		end := begin + time.Duration(s.n+2)*stmt
		conns[k], checkers[c] = end, end
		calls[i] = call{start: ask, end: end}
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

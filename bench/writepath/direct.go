package writepath

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	longhaulv1 "github.com/longhaul/longhaul/api/longhaul/v1"
	"github.com/longhaul/longhaul/primary"
)

// direct is the seed's fix: each scan's insights in one call at the end of
// the scan, UNNEST below the threshold and COPY from it
// (primary.WriteDirect), straight across the link from a pool of Pool
// connections shared by the checkers. A call is committed when it returns,
// so the last row is visible when the last call returns. The checker is
// blocked for the call, the wait for a connection included.
func (r *runner) direct(ctx context.Context) (*Strategy, error) {
	schema, schemaURL, err := r.srv.newSchema(ctx, Direct)
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

	st, err := r.writeAtEnd(ctx, pool, "direct: writing across the link", func(ctx context.Context, conn *pgx.Conn, rows []*longhaulv1.BatchInsight) error {
		return primary.WriteDirect(ctx, conn, rows, r.cfg.CopyThreshold)
	})
	if err != nil {
		return nil, err
	}
	if st.RowsWritten, err = r.srv.count(ctx, schema); err != nil {
		return nil, err
	}
	return st, nil
}

// writeAtEnd runs the workload as the seed's checkers did, per_row's and
// direct's way: each checker scans, then makes its scan's one write call
// (write, on a connection from pool: the wait for one counts as blocked).
func (r *runner) writeAtEnd(ctx context.Context, pool *pgxpool.Pool, phase string,
	write func(ctx context.Context, conn *pgx.Conn, rows []*longhaulv1.BatchInsight) error) (*Strategy, error) {
	rows := make([][]*longhaulv1.BatchInsight, len(r.scans))
	for i, s := range r.scans {
		rows[i] = batchRows(s, r.cfg, r.observed)
	}
	r.progress.start(phase, int(r.cfg.Rows()))
	calls, err := runCheckers(ctx, time.Now(), r.cfg.Concurrency, r.scans, func(ctx context.Context, i int) (time.Duration, error) {
		if _, err := r.scanning(ctx, r.scans[i], nil); err != nil {
			return 0, err
		}
		start := time.Now()
		conn, err := pool.Acquire(ctx)
		if err != nil {
			return time.Since(start), err
		}
		defer conn.Release()
		if err := write(ctx, conn.Conn(), rows[i]); err != nil {
			return time.Since(start), fmt.Errorf("scan %s: %w", r.scans[i].id, err)
		}
		rows[i] = nil // written: the services in this process need not carry it through their GCs
		return time.Since(start), nil
	}, r.progress.add)
	if err != nil {
		return nil, err
	}
	st := &Strategy{}
	figures(st, calls, lastEnd(calls))
	return st, nil
}

package writepath

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	longhaulv1 "github.com/longhaul/longhaul/api/longhaul/v1"
	"github.com/longhaul/longhaul/edge"
	"github.com/longhaul/longhaul/internal/wan"
	"github.com/longhaul/longhaul/primary"
	"github.com/longhaul/longhaul/pushclient"
)

// Visibility polling: how often the edge's ledger row is read, and how long
// it may stay the same before the run gives up on the records still
// missing.
const (
	pollInterval = 20 * time.Millisecond
	stallTimeout = 2 * time.Minute
)

// longhaul is longhaul: the checkers push each scan with a push client
// to an edge beside them, which acknowledges once the insights are in its
// WAL and ships them across the link to the primary beside PostgreSQL,
// whose pool has Pool connections. A small scan, and a big one whose
// insights are there all at once (BigScanTime 0), is one Push at the end
// of the scan (PushStream, in streams of 50,000 insights): the checker is
// blocked for the Push. A big scan that finds its insights over
// BigScanTime writes each step's insights as it finds them through a
// pushclient.Writer (a segment per step, 5,000 insights at most, pushed in
// the background, 3 at most under way), and closes it at the end of the
// scan: the checker is blocked inside Write (only while the window is
// full) and Close (the last segments' acknowledgements). The rows are
// visible when the edge's ledger row says the primary applied the last
// record.
func (r *runner) longhaul(ctx context.Context) (*Strategy, error) {
	ins := make([][]*longhaulv1.Insight, len(r.scans))
	for i, s := range r.scans {
		ins[i] = insights(batchRows(s, r.cfg, r.observed))
	}

	schema, schemaURL, err := r.srv.newSchema(ctx, Longhaul)
	if err != nil {
		return nil, err
	}
	defer r.srv.dropSchema(ctx, schema)
	prim, err := primary.Start(ctx, primary.Config{DatabaseURL: schemaURL, Listen: "127.0.0.1:0", HTTPListen: "127.0.0.1:0",
		MaxConns: int32(r.cfg.Pool), Applier: primary.ApplierConfig{CopyThreshold: r.cfg.CopyThreshold}, Logger: r.log})
	if err != nil {
		return nil, err
	}
	defer stop(ctx, prim.Stop)
	link, err := wan.Open(prim.Addr())
	if err != nil {
		return nil, err
	}
	defer link.Close()
	link.SetRTT(r.cfg.RTT)
	dir, err := os.MkdirTemp("", "longhaul-writepath-")
	if err != nil {
		return nil, fmt.Errorf("edge data directory: %w", err)
	}
	defer os.RemoveAll(dir)
	e, err := edge.Start(ctx, edge.Config{Region: "bench", NodeID: "edge-1", DataDir: dir,
		Listen: "127.0.0.1:0", HTTPListen: "127.0.0.1:0", Primary: link.Addr(), Logger: r.log})
	if err != nil {
		return nil, err
	}
	defer stop(ctx, e.Stop)
	if err := shipping(ctx, e); err != nil {
		return nil, err
	}
	client, err := pushclient.New(pushclient.Config{Edges: []string{e.Addr()}, Logger: r.log})
	if err != nil {
		return nil, err
	}
	defer client.Close()

	r.progress.start("longhaul: pushing to the edge", int(r.cfg.Rows()))
	t0 := time.Now()
	calls, err := runCheckers(ctx, t0, r.cfg.Concurrency, r.scans, func(ctx context.Context, i int) (time.Duration, error) {
		s := r.scans[i]
		defer func() { ins[i] = nil }() // pushed: the edge and the primary in this process need not carry it through their GCs
		if !s.big || r.cfg.BigScanTime == 0 {
			if _, err := r.scanning(ctx, s, nil); err != nil {
				return 0, err
			}
			start := time.Now()
			if _, err := client.Push(ctx, ins[i]); err != nil {
				return time.Since(start), fmt.Errorf("scan %s: %w", s.id, err)
			}
			return time.Since(start), nil
		}
		// A segment per step (5,000 at most): each step's insights go as
		// soon as they are found.
		steps := r.cfg.scanSteps(s)
		w := client.NewWriter(pushclient.WriterConfig{SegmentInsights: min(pushclient.DefaultSegmentInsights, (s.n+steps-1)/steps)})
		blocked, err := r.scanning(ctx, s, func(ctx context.Context, lo, hi int) error {
			return w.Write(ctx, ins[i][lo:hi]...)
		})
		start := time.Now()
		_, closeErr := w.Close(ctx) // after an error too: it ends the Writer's pushes
		blocked += time.Since(start)
		if err = cmp.Or(err, closeErr); err != nil {
			return blocked, fmt.Errorf("scan %s: %w", s.id, err)
		}
		return blocked, nil
	}, r.progress.add)
	if err != nil {
		return nil, err
	}
	last := e.WAL().Stats().LastSeq
	r.progress.start("longhaul: applied by the primary", int(last))
	visible, n, err := r.visible(ctx, schema, t0, last)
	if err != nil {
		return nil, err
	}
	st := &Strategy{RowsWritten: n}
	figures(st, calls, visible)
	return st, nil
}

// visible polls the edge's ledger row in a schema until the primary has
// applied record last, and returns when the query that saw it was sent,
// since t0, and the rows the insights table then holds. The ledger
// advances in the transaction that commits the rows, so this is when every
// row was visible; a count(*) polled over hundreds of thousands of rows
// would take from the database a good part of what it measures.
func (r *runner) visible(ctx context.Context, schema string, t0 time.Time, last uint64) (time.Duration, int64, error) {
	var prev uint64
	lastChange := time.Now()
	for {
		asked := time.Since(t0)
		var applied uint64
		if err := r.srv.admin.QueryRow(ctx, "SELECT coalesce(max(applied_seq), 0) FROM "+schema+".edge_ledger").Scan(&applied); err != nil {
			return 0, 0, err
		}
		r.progress.set(int(applied))
		if applied >= last {
			n, err := r.srv.count(ctx, schema)
			return asked, n, err
		}
		if applied != prev {
			prev, lastChange = applied, time.Now()
		} else if time.Since(lastChange) > stallTimeout {
			var dead int64
			_ = r.srv.admin.QueryRow(ctx, "SELECT count(*) FROM "+schema+".dead_letters").Scan(&dead)
			return 0, 0, fmt.Errorf("the primary applied %d of the edge's %d records, none more for %s (%d dead letters)", applied, last, stallTimeout, dead)
		}
		select {
		case <-ctx.Done():
			return 0, 0, ctx.Err()
		case <-time.After(pollInterval):
		}
	}
}

// shipping waits until the edge's stream to the primary is up, so that the
// clock does not count connecting across the link.
func shipping(ctx context.Context, e *edge.Service) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for !e.Shipper().Stats().Connected {
		select {
		case <-ctx.Done():
			if errors.Is(ctx.Err(), context.DeadlineExceeded) {
				return errors.New("the edge did not connect to the primary within 30s")
			}
			return ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
	return nil
}

// stop stops a service, even once ctx has ended.
func stop(ctx context.Context, f func(context.Context) error) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cleanupTimeout)
	defer cancel()
	_ = f(ctx)
}

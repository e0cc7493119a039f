package writepath

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/longhaul/longhaul/internal/pgcluster"
)

// runner holds what the strategies share.
type runner struct {
	cfg      Config
	log      *slog.Logger
	srv      *server
	scans    []scan
	observed time.Time // every insight's observed_at
	progress *progress
}

// Run runs the strategies cfg names, one after another, each into a fresh
// schema on the same server, and returns their figures. It cleans up
// everything it started (the throwaway cluster, links, services,
// schemas, temporary directories) before it returns, also when ctx ends
// first (an error wrapping ctx.Err() then).
func Run(ctx context.Context, cfg Config) (res Result, err error) {
	if err := cfg.validate(); err != nil {
		return Result{}, err
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Progress == nil {
		cfg.Progress = func(string, int, int) {}
	}
	r := &runner{cfg: cfg, log: cfg.Logger, scans: schedule(cfg), observed: time.Now().Add(-time.Minute),
		progress: &progress{f: cfg.Progress}}
	res.Workload = Workload{Scans: cfg.Scans, PerScan: cfg.PerScan, BigScans: cfg.BigScans, Insights: cfg.Insights,
		Rows: cfg.Rows(), ScanSeconds: cfg.ScanTime.Seconds(), BigScanSeconds: cfg.BigScanTime.Seconds(), Concurrency: cfg.Concurrency, Pool: cfg.Pool, RTTSeconds: cfg.RTT.Seconds(),
		Sample: cfg.Sample, DetailsBytes: cfg.DetailsBytes, CopyThreshold: cfg.CopyThreshold}

	dbURL := cfg.DatabaseURL
	if dbURL == "" {
		r.progress.start("starting a throwaway PostgreSQL", 1)
		cluster, err := pgcluster.Start(ctx, pgcluster.Options{Logger: r.log})
		if err != nil {
			return Result{}, fmt.Errorf("writepath: %w", err)
		}
		defer func() {
			ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cleanupTimeout)
			defer cancel()
			if stopErr := cluster.Stop(ctx); stopErr != nil && err == nil {
				err = fmt.Errorf("writepath: stop the throwaway PostgreSQL: %w", stopErr)
			}
		}()
		dbURL = cluster.URL(pgcluster.Database)
		res.Workload.Throwaway = true
	}
	if r.srv, err = openServer(ctx, dbURL); err != nil {
		return Result{}, err
	}
	defer r.srv.close()
	res.Workload.Server = r.srv.version

	for _, s := range []struct {
		name string
		run  func(context.Context) (*Strategy, error)
		out  **Strategy
	}{{PerRow, r.perRow, &res.PerRow}, {Direct, r.direct, &res.Direct}, {Longhaul, r.longhaul, &res.Longhaul}} {
		if !cfg.runs(s.name) {
			continue
		}
		if err := r.srv.settle(ctx); err != nil {
			return Result{}, fmt.Errorf("writepath: before %s: %w", s.name, err)
		}
		st, err := s.run(ctx)
		if err != nil && ctx.Err() != nil {
			return Result{}, fmt.Errorf("writepath: %s: %w", s.name, ctx.Err())
		}
		if err != nil {
			return Result{}, fmt.Errorf("writepath: %s: %w", s.name, err)
		}
		st.Name, st.Rows = s.name, cfg.Rows()
		*s.out = st
	}
	res.compare()
	return res, nil
}

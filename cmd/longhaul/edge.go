package main

import (
	"context"
	"flag"
	"io"
	"time"

	"github.com/longhaul/longhaul/edge"
	"github.com/longhaul/longhaul/wal"
)

func runEdge(ctx context.Context, args []string, _, stderr io.Writer) error {
	fs := flag.NewFlagSet("longhaul edge", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		cfg   edge.Config
		logs  logFlags
		quota int64
	)
	fs.StringVar(&cfg.Region, "region", "", "the edge's region (required)")
	fs.StringVar(&cfg.NodeID, "node-id", "", "the edge's name within its region (required; the primary's ledger keys on region/node-id)")
	fs.StringVar(&cfg.DataDir, "data-dir", "", "directory of the write-ahead log (required; keep it across restarts)")
	fs.StringVar(&cfg.Listen, "listen", "127.0.0.1:7300", "gRPC address checkers push to")
	fs.StringVar(&cfg.HTTPListen, "http-listen", "127.0.0.1:7301", "HTTP address: /v1/insights:push, /v1/scans:complete, /healthz, /readyz, /metrics")
	fs.StringVar(&cfg.Primary, "primary", "127.0.0.1:7400", "the primary's gRPC address")
	fs.Int64Var(&quota, "wal-quota-bytes", wal.DefaultQuotaBytes, "bytes of unshipped insights the WAL may hold; beyond it pushes get 429 / RESOURCE_EXHAUSTED")
	fs.IntVar(&cfg.MaxRequestBytes, "max-request-bytes", 64<<20, "largest gRPC message or HTTP body accepted")
	fs.IntVar(&cfg.Limits.MaxInsightsPerRequest, "max-insights-per-request", edge.DefaultMaxInsightsPerRequest, "insights one request may hold")
	fs.DurationVar(&cfg.Limits.MaxClockSkew, "max-clock-skew", edge.DefaultMaxClockSkew, "how far in the future observed_at may be")
	fs.IntVar(&cfg.Shipper.MaxBatchBytes, "batch-bytes", 0, "ship a batch once it holds this many bytes (0: the default, 4 MiB)")
	fs.DurationVar(&cfg.Shipper.MaxBatchAge, "batch-age", 0, "ship a batch once its oldest insight waited this long (0: the default)")
	fs.IntVar(&cfg.Shipper.MaxInFlight, "max-in-flight", 0, "batches sent to the primary and not yet acknowledged (0: the default)")
	fs.DurationVar(&cfg.DrainTimeout, "drain-timeout", 30*time.Second, "on SIGTERM, how long pushes under way may take to finish")
	logs.register(fs)
	if err := parse(fs, args); err != nil {
		return err
	}
	log, err := logs.logger(stderr)
	if err != nil {
		return err
	}
	cfg.Logger, cfg.QuotaBytes = log, quota
	svc, err := edge.Start(ctx, cfg)
	if err != nil {
		return err
	}
	<-ctx.Done()
	log.Info("shutting down: no new pushes; unshipped insights stay in the WAL")
	return svc.Stop(context.WithoutCancel(ctx))
}

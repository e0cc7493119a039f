package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"time"

	"github.com/longhaul/longhaul/edge"
	"github.com/longhaul/longhaul/internal/tlsconf"
	"github.com/longhaul/longhaul/topology"
	"github.com/longhaul/longhaul/wal"
)

func runEdge(ctx context.Context, args []string, _, stderr io.Writer) error {
	fs := flag.NewFlagSet("longhaul edge", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		cfg                 edge.Config
		logs                logFlags
		quota               int64
		join, gossipProfile string
		tlsFlags            tlsconf.Flags
		gossipKeyFile       string
		maxStreams          uint
	)
	fs.StringVar(&cfg.Region, "region", "", "the edge's region (required)")
	fs.StringVar(&cfg.NodeID, "node-id", "", "the edge's name within its region (required; the primary's ledger keys on region/node-id)")
	fs.StringVar(&cfg.DataDir, "data-dir", "", "directory of the write-ahead log (required; keep it across restarts)")
	fs.StringVar(&cfg.Listen, "listen", "127.0.0.1:7300", "gRPC address checkers push to")
	fs.StringVar(&cfg.HTTPListen, "http-listen", "127.0.0.1:7301", "HTTP address: /v1/insights:push, /v1/scans:complete, /v1/topology, /v1/budget, /healthz, /readyz, /metrics")
	fs.StringVar(&cfg.Primary, "primary", "127.0.0.1:7400", "the primary's gRPC address")
	fs.Int64Var(&quota, "wal-quota-bytes", wal.DefaultQuotaBytes, "bytes of unshipped insights the WAL may hold; beyond it pushes get 429 / RESOURCE_EXHAUSTED")
	fs.IntVar(&cfg.MaxRequestBytes, "max-request-bytes", 64<<20, "largest gRPC message or HTTP body accepted")
	fs.IntVar(&cfg.Limits.MaxInsightsPerRequest, "max-insights-per-request", edge.DefaultMaxInsightsPerRequest, "insights one request may hold")
	fs.DurationVar(&cfg.Limits.MaxClockSkew, "max-clock-skew", edge.DefaultMaxClockSkew, "how far in the future observed_at may be")
	fs.IntVar(&cfg.Shipper.MaxBatchBytes, "batch-bytes", 0, "ship a batch once it holds this many bytes (0: the default, 4 MiB)")
	fs.DurationVar(&cfg.Shipper.MaxBatchAge, "batch-age", 0, "longest the oldest insight of a batch may wait; the visible budget may make it shorter, never longer (0: the default, 250ms; up to --budget-visible-p99 lets the budget alone size batches)")
	fs.IntVar(&cfg.Shipper.MaxInFlight, "max-in-flight", 0, "batches sent to the primary and not yet acknowledged (0: the default)")
	fs.StringVar(&cfg.Shipper.Compression, "ship-compression", edge.CompressionZstd, "compression of the shipping stream: zstd, gzip or none (a primary that cannot decode zstd gets gzip)")
	fs.DurationVar(&cfg.Shipper.StallTimeout, "ship-stall-timeout", 0, "end and reopen a shipping stream on which nothing was sent or acknowledged for this long while records wait, logging where it stood (0: the default, 60s; negative: never)")
	fs.DurationVar(&cfg.DrainTimeout, "drain-timeout", 30*time.Second, "on SIGTERM, how long pushes under way may take to finish")
	fs.StringVar(&cfg.Gossip.BindAddr, "gossip-listen", "", "gossip address (UDP and TCP, ip:port) to join the cluster of edges on; empty: no gossip, GET /v1/topology lists this edge alone")
	fs.StringVar(&cfg.Gossip.AdvertiseAddr, "gossip-advertise", "", "gossip address the other edges reach this one on, ip or ip:port (default: --gossip-listen's, or a private address when that is 0.0.0.0)")
	fs.StringVar(&join, "join", "", "comma-separated gossip addresses of edges to join through (retried in the background while none answers)")
	fs.StringVar(&gossipProfile, "gossip-profile", string(topology.ProfileWAN), "gossip timings: wan (regions far apart), lan (one data center) or local (tests)")
	fs.StringVar(&gossipKeyFile, "gossip-key-file", "", "file holding a base64 key of 16, 24 or 32 bytes that encrypts and authenticates gossip (every edge the same; e.g. head -c 32 /dev/urandom | base64); empty: gossip in plain text")
	tlsFlags.Register(fs, true, true)
	fs.StringVar(&cfg.Access.TokensFile, "tokens", "", "file of checkers' bearer tokens, one a line: TOKEN [NAME] [accounts=a,b,c]; pushes then need one (read again when it changes)")
	fs.Float64Var(&cfg.Access.ClientRate, "client-rate", edge.DefaultClientRate, "insights a second one client (token name, certificate subject or IP address) may push; beyond it 429 / RESOURCE_EXHAUSTED RATE_LIMITED (0: no limit)")
	fs.IntVar(&cfg.Access.ClientBurst, "client-burst", 0, "insights one client may push at once above its rate (0: two seconds of --client-rate)")
	fs.UintVar(&maxStreams, "max-streams-per-conn", edge.DefaultMaxStreamsPerConn, "concurrent gRPC calls one connection may have open")
	var budget budgetFlags
	budget.register(fs, &cfg.Shipper)
	logs.register(fs)
	if err := parse(fs, args); err != nil {
		return err
	}
	log, err := logs.logger(stderr)
	if err != nil {
		return err
	}
	cfg.Logger, cfg.QuotaBytes = log, quota
	if cfg.Budget, err = budget.budget(fs, cfg.Region); err != nil {
		return err
	}
	if cfg.Gossip.Profile, err = topology.ParseProfile(gossipProfile); err != nil {
		return fmt.Errorf("--gossip-profile: %w", err)
	}
	if cfg.Gossip.Join = splitList(join); len(cfg.Gossip.Join) > 0 && cfg.Gossip.BindAddr == "" {
		return errors.New("--join: needs --gossip-listen")
	}
	if err := edgeSecurity(&cfg, tlsFlags, gossipKeyFile, maxStreams); err != nil {
		return err
	}
	svc, err := edge.Start(ctx, cfg)
	if err != nil {
		return err
	}
	<-ctx.Done()
	log.Info("shutting down: no new pushes; unshipped insights stay in the WAL")
	return svc.Stop(context.WithoutCancel(ctx))
}

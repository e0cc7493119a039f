package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"strconv"
	"time"

	"github.com/longhaul/longhaul/internal/pgcluster"
	"github.com/longhaul/longhaul/internal/tlsconf"
	"github.com/longhaul/longhaul/primary"
)

func runPrimary(ctx context.Context, args []string, _, stderr io.Writer) error {
	fs := flag.NewFlagSet("longhaul primary", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		cfg       primary.Config
		threshold string
		dataDir   string
		keep      bool
		logs      logFlags
		maxConns  int
		tlsFlags  tlsconf.Flags
	)
	fs.StringVar(&cfg.DatabaseURL, "database-url", "", "PostgreSQL to write to; empty: start a throwaway cluster from the machine's PostgreSQL binaries")
	fs.StringVar(&cfg.Listen, "listen", "127.0.0.1:7400", "gRPC address edges ship batches to")
	fs.StringVar(&cfg.HTTPListen, "http-listen", "127.0.0.1:7401", "HTTP address of /healthz, /readyz and /metrics")
	fs.StringVar(&threshold, "copy-threshold", strconv.Itoa(primary.DefaultCopyThreshold),
		"rows from which a batch is written with COPY instead of UNNEST; 'auto' measures the crossover on the database at start")
	fs.IntVar(&maxConns, "max-conns", 16, "database connections at most")
	fs.IntVar(&cfg.Server.MaxInFlight, "max-in-flight", 8, "batches an edge may have sent but not had applied")
	fs.IntVar(&cfg.Server.Parallel, "apply-parallel", 2, "batches of one edge's stream written at once, each on a connection of its own (they still commit in order)")
	fs.DurationVar(&cfg.DrainTimeout, "drain-timeout", 30*time.Second, "on SIGTERM, how long batches being applied may take to finish")
	fs.StringVar(&dataDir, "pg-data-dir", "", "with no --database-url: where the throwaway cluster lives (default: a new temp dir)")
	fs.BoolVar(&keep, "keep", false, "with no --database-url: keep the throwaway cluster's files on exit")
	tlsFlags.Register(fs, true, false)
	logs.register(fs)
	if err := parse(fs, args); err != nil {
		return err
	}
	log, err := logs.logger(stderr)
	if err != nil {
		return err
	}
	if cfg.TLS, err = tlsFlags.Server(); err != nil {
		return err
	}
	cfg.Logger = log
	cfg.MaxConns = int32(maxConns)
	if threshold == "auto" {
		cfg.CalibrateThreshold = true
	} else if cfg.Applier.CopyThreshold, err = strconv.Atoi(threshold); err != nil || cfg.Applier.CopyThreshold < 1 {
		return fmt.Errorf("--copy-threshold: want a positive number of rows or 'auto', got %q", threshold)
	}

	if cfg.DatabaseURL == "" {
		cluster, err := pgcluster.Start(ctx, pgcluster.Options{Dir: dataDir, Keep: keep, Logger: log})
		if err != nil {
			return err
		}
		defer func() {
			if err := cluster.Stop(context.WithoutCancel(ctx)); err != nil {
				log.Warn("stopping the throwaway PostgreSQL", "err", err)
			}
		}()
		cfg.DatabaseURL = cluster.URL(pgcluster.Database)
		log.Info("started a throwaway PostgreSQL (no --database-url)", "url", cfg.DatabaseURL, "data", cluster.DataDir(), "keep", keep)
	}

	svc, err := primary.Start(ctx, cfg)
	if err != nil {
		return err
	}
	<-ctx.Done()
	log.Info("shutting down")
	return svc.Stop(context.WithoutCancel(ctx))
}

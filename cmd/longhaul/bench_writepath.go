package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"strings"

	"github.com/longhaul/longhaul/bench/writepath"
)

func runBenchWritepath(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("longhaul bench writepath", flag.ContinueOnError)
	fs.SetOutput(stderr)
	def, mixed := writepath.Default(), writepath.Mixed()
	cfg := def
	var (
		useMixed   bool
		asJSON     bool
		strategies string
		logs       logFlags
	)
	fs.StringVar(&cfg.DatabaseURL, "database-url", "", "PostgreSQL server to run on (postgres:// over TCP; each strategy gets a schema of its own, dropped after); empty: a throwaway cluster from the machine's PostgreSQL binaries")
	fs.DurationVar(&cfg.RTT, "rtt", def.RTT, "round trip between the checkers' region and the database's (toxiproxy, half each way)")
	fs.IntVar(&cfg.Insights, "insights", def.Insights, "insights per big scan")
	fs.IntVar(&cfg.BigScans, "big-scans", def.BigScans, "big scans, spread among the small ones")
	fs.IntVar(&cfg.Scans, "scans", def.Scans, "small scans besides the big ones (0: the big scans only)")
	fs.IntVar(&cfg.PerScan, "per-scan", def.PerScan, "insights per small scan")
	fs.DurationVar(&cfg.ScanTime, "scan-time", def.ScanTime, "how long a small scan scans before its write call, on average (each 0.5–1.5× it; 0: the checkers only write)")
	fs.DurationVar(&cfg.BigScanTime, "big-scan-time", def.BigScanTime, "how long each big scan takes to find its insights, evenly (per_row and direct write them at its end, longhaul as found; 0: all at once)")
	fs.IntVar(&cfg.Concurrency, "concurrency", def.Concurrency, "checkers writing at once")
	fs.IntVar(&cfg.Pool, "pool", def.Pool, "database connections: per_row's and direct's pool across the link, the primary's pool in longhaul")
	fs.IntVar(&cfg.Sample, "sample", def.Sample, "rows per_row writes for real, its figures extrapolated from them")
	fs.IntVar(&cfg.CopyThreshold, "copy-threshold", def.CopyThreshold, "rows from which direct and the primary write with COPY instead of UNNEST")
	fs.BoolVar(&useMixed, "mixed", false, fmt.Sprintf("the mixed workload: %d small scans of %d and %d of %d from %d checkers (flags given override it; about 2 minutes on 2 cores)",
		mixed.Scans, mixed.PerScan, mixed.BigScans, mixed.Insights, mixed.Concurrency))
	fs.StringVar(&strategies, "strategies", strings.Join(writepath.Strategies, ","), "strategies to run, comma-separated (the ratios need direct)")
	fs.BoolVar(&asJSON, "json", false, "print one JSON object instead of a table")
	logs.register(fs)
	fs.Lookup("log-level").DefValue, logs.level = "warn", "warn" // the services' info lines would break the progress bar
	if err := parse(fs, args); err != nil {
		return err
	}
	if useMixed {
		set := map[string]bool{}
		fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
		for name, apply := range map[string]func(){
			"scans":       func() { cfg.Scans = mixed.Scans },
			"per-scan":    func() { cfg.PerScan = mixed.PerScan },
			"big-scans":   func() { cfg.BigScans = mixed.BigScans },
			"insights":    func() { cfg.Insights = mixed.Insights },
			"concurrency": func() { cfg.Concurrency = mixed.Concurrency },
		} {
			if !set[name] {
				apply()
			}
		}
	}
	cfg.Strategies = strings.Split(strategies, ",")
	log, err := logs.logger(stderr)
	if err != nil {
		return err
	}
	cfg.Logger = log.With(slog.String("bench", "writepath"))
	cfg.Progress = progress(stderr)
	res, err := writepath.Run(ctx, cfg)
	fmt.Fprint(stderr, "\r\033[K")
	if err != nil {
		return err
	}
	if asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(res)
	}
	return res.WriteTable(stdout)
}

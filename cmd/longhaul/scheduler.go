package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/longhaul/longhaul/internal/tlsconf"
	"github.com/longhaul/longhaul/primary/migrate"
	"github.com/longhaul/longhaul/scheduler"
)

func runScheduler(ctx context.Context, args []string, _, stderr io.Writer) error {
	fs := flag.NewFlagSet("longhaul scheduler", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		cfg     scheduler.Config
		logs    logFlags
		brokers string
		iv      = planIntervals(fs)
		part    int
		repl    int
		tlsF    tlsconf.Flags
	)
	fs.StringVar(&cfg.DatabaseURL, "database-url", "", "PostgreSQL holding the assets: the primary's database (required)")
	fs.StringVar(&brokers, "kafka-brokers", "127.0.0.1:9092", "comma-separated Kafka brokers")
	fs.StringVar(&cfg.HTTPListen, "http-listen", scheduler.DefaultHTTPListen, "HTTP address: POST /v1/assets, POST /v1/scans, /healthz, /readyz, /metrics")
	fs.IntVar(&part, "partitions", scheduler.DefaultPartitions, "partitions of the topics created when missing")
	fs.IntVar(&repl, "replication", scheduler.DefaultReplication, "replication factor of the topics created when missing (-1: the brokers' default)")
	fs.Float64Var(&cfg.BufferFactor, "buffer-factor", scheduler.DefaultBufferFactor, "rate limit = max(1/s, Σ assets of a plan ÷ its interval) × this")
	fs.DurationVar(&cfg.RateEvery, "rate-every", scheduler.DefaultRateEvery, "how often the rate limit is computed again")
	fs.IntVar(&cfg.Burst, "burst", 0, "scheduled jobs the token bucket holds at the most (0: two ticks' worth)")
	fs.DurationVar(&cfg.Tick, "tick", scheduler.DefaultTick, "how often due assets and on-demand requests are claimed")
	fs.IntVar(&cfg.ClaimBatch, "claim-batch", scheduler.DefaultClaimBatch, "due assets one transaction claims at the most")
	fs.IntVar(&cfg.OnDemandPerTick, "on-demand-per-tick", scheduler.DefaultOnDemandPerTick, "on-demand jobs one tick sends at the most")
	fs.DurationVar(&cfg.ProduceTimeout, "produce-timeout", scheduler.DefaultProduceTimeout, "how long a tick waits for Kafka before leaving its assets due")
	fs.DurationVar(&cfg.SlowDuration, "slow-duration", scheduler.DefaultSlowDuration, "an asset whose last scan took this long goes to the slow lane")
	fs.Int64Var(&cfg.SlowInsights, "slow-insights", scheduler.DefaultSlowInsights, "an asset whose last scan found this many insights goes to the slow lane")
	fs.DurationVar(&cfg.LearnEvery, "learn-every", scheduler.DefaultLearnEvery, "how often completed scans update the assets' expected cost")
	tlsF.Register(fs, true, false)
	logs.register(fs)
	if err := parse(fs, args); err != nil {
		return err
	}
	log, err := logs.logger(stderr)
	if err != nil {
		return err
	}
	if cfg.TLS, err = tlsF.Server(); err != nil {
		return err
	}
	if cfg.DatabaseURL == "" {
		return errors.New("--database-url: required")
	}
	if cfg.Brokers = splitList(brokers); len(cfg.Brokers) == 0 {
		return errors.New("--kafka-brokers: required")
	}
	cfg.Intervals, cfg.Partitions, cfg.Replication, cfg.Logger = iv(), int32(part), int16(repl), log
	svc, err := scheduler.Start(ctx, cfg)
	if err != nil {
		return err
	}
	log.Info("scheduler running", "http", svc.HTTPAddr(), "rate_per_second", svc.Stats().Rate)
	<-ctx.Done()
	return svc.Stop(context.WithoutCancel(ctx))
}

// planIntervals registers --interval-<plan> flags and returns a function
// giving their values after parsing.
func planIntervals(fs *flag.FlagSet) func() scheduler.Intervals {
	def := scheduler.DefaultIntervals()
	vals := map[scheduler.Plan]*time.Duration{}
	for _, p := range scheduler.Plans {
		vals[p] = fs.Duration("interval-"+string(p), def[p], "scan interval of the "+string(p)+" plan")
	}
	return func() scheduler.Intervals {
		iv := scheduler.Intervals{}
		for p, v := range vals {
			iv[p] = *v
		}
		return iv
	}
}

var assetsCommands = []command{
	{"import", "register assets from a file of JSON lines ({\"account_id\",\"asset\",\"plan\",\"checks\"}; - for stdin)", runAssetsImport},
}

func runAssets(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return runSubcommand(ctx, "assets", "command", assetsCommands, args, stdout, stderr)
}

func runAssetsImport(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("longhaul assets import", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: longhaul assets import [flags] FILE|-")
		fs.PrintDefaults()
	}
	var (
		url   string
		batch int
		iv    = planIntervals(fs)
	)
	fs.StringVar(&url, "database-url", "", "PostgreSQL holding the assets (required)")
	fs.IntVar(&batch, "batch", scheduler.DefaultImportBatch, "assets written per transaction")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return errUsage
	}
	if fs.NArg() != 1 {
		fs.Usage()
		return errUsage
	}
	if url == "" {
		return errors.New("--database-url: required")
	}
	in := io.Reader(os.Stdin)
	if name := fs.Arg(0); name != "-" {
		f, err := os.Open(name)
		if err != nil {
			return err
		}
		defer f.Close()
		in = f
	}
	pool, err := pgxpool.New(ctx, url)
	if err != nil {
		return fmt.Errorf("--database-url: %w", err)
	}
	defer pool.Close()
	if _, err := migrate.Up(ctx, pool); err != nil {
		return err
	}
	st, err := scheduler.ImportJSONLines(ctx, pool, in, batch, iv())
	fmt.Fprintf(stdout, "%d lines read, the first %d written (%d assets new, %d updated) in %d batches\n", st.Lines, st.Written, st.Created, st.Updated, st.Batches)
	return err
}

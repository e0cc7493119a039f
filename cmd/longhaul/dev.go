package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/longhaul/longhaul/checks"
	"github.com/longhaul/longhaul/edge"
	"github.com/longhaul/longhaul/internal/devstack"
	"github.com/longhaul/longhaul/internal/pgcluster"
)

// forceExit ends the process on a second Ctrl-C while the stack stops.
var forceExit = os.Exit

func runDev(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("longhaul dev", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: longhaul dev [flags]\n\nRuns all of longhaul in this process until Ctrl-C: a throwaway PostgreSQL, an in-process\nKafka, the primary, edges in two regions (eu near the primary, us behind a WAN link), the\nscheduler with synthetic assets, and fast- and slow-lane checkers in both regions.\n\nflags:")
		fs.PrintDefaults()
		fmt.Fprintln(stderr, "\nports (--port NAME=PORT; defaults with --base-port 7300):")
		def := devstack.DefaultPorts(devstack.DefaultBasePort)
		for _, p := range devstack.PortNames() {
			fmt.Fprintf(stderr, "  %-12s %5d  %s\n", p[0], def[p[0]], p[1])
		}
	}
	var (
		cfg                devstack.Config
		logs               logFlags
		brokers, budgetF   string
		basePort           int
		ports              = portFlag{}
		duration           time.Duration
		syntheticSlowShare float64
	)
	fs.StringVar(&cfg.DatabaseURL, "database-url", "", "PostgreSQL to use; empty: a throwaway cluster from the machine's PostgreSQL binaries")
	fs.StringVar(&brokers, "kafka-brokers", "", "comma-separated Kafka brokers to use; empty: an in-process Kafka (kfake)")
	fs.StringVar(&cfg.Dir, "dir", "", "directory of everything the stack writes (PostgreSQL, WALs, certificates, longhaul.log); kept, and reused by the next run; empty: a new temporary directory")
	fs.BoolVar(&cfg.Keep, "keep", false, "keep the temporary directory on exit (its path is printed)")
	fs.IntVar(&basePort, "base-port", devstack.DefaultBasePort, "eu-1's gRPC port; every other port shifts with it (0: free ports for all)")
	fs.Var(ports, "port", "NAME=PORT: one port of the stack (repeatable; names below)")
	fs.DurationVar(&cfg.NearRTT, "near-rtt", devstack.DefaultNearRTT, "round trip of the link between the near region (eu) and the primary (0: none)")
	fs.DurationVar(&cfg.FarRTT, "far-rtt", devstack.DefaultFarRTT, "round trip of the link between the far region (us) and the primary")
	fs.StringVar(&budgetF, "budget-file", "", "JSON file of the regions' latency budgets (as longhaul edge --budget-file); default eu: ack 50ms, visible 1s; us: ack 50ms, visible 2s")
	fs.IntVar(&cfg.Assets, "assets", devstack.DefaultAssets, "synthetic assets to register, across the plans (negative: none)")
	fs.IntVar(&cfg.BigAssets, "big-assets", devstack.DefaultBigAssets, "big assets to register besides, each reporting --big-insights per scan (negative: none)")
	fs.IntVar(&cfg.BigInsights, "big-insights", devstack.DefaultBigInsights, "insights of one scan of a big asset")
	fs.DurationVar(&cfg.Interval, "interval", devstack.DefaultInterval, "scan interval of every plan")
	fs.IntVar(&cfg.Synthetic.Insights, "synthetic-insights", checks.DefaultSyntheticInsights, "synthetic check: mean insights per scan")
	fs.DurationVar(&cfg.Synthetic.Fast, "synthetic-fast", checks.DefaultSyntheticFast, "synthetic check: duration of a fast scan")
	fs.DurationVar(&cfg.Synthetic.Slow, "synthetic-slow", devstack.DefaultSyntheticSlow, "synthetic check: duration of a slow scan")
	fs.Float64Var(&syntheticSlowShare, "synthetic-slow-fraction", checks.DefaultSyntheticSlowFraction, "synthetic check: share of slow assets (negative: none)")
	fs.DurationVar(&cfg.FastBudget, "fast-budget", devstack.DefaultFastBudget, "fast lane: a scan taking longer is handed to the slow lane")
	fs.DurationVar(&cfg.Every, "every", devstack.DefaultEvery, "how often to print the regions' lines")
	fs.DurationVar(&duration, "duration", 0, "stop after this long (0: at Ctrl-C)")
	fs.DurationVar(&cfg.DrainTimeout, "drain-timeout", devstack.DefaultDrainTimeout, "on stop, how long the edges may take to ship what they hold")
	fs.BoolVar(&cfg.TLS, "tls", true, "make development certificates (in DIR/certs) and serve TLS (mutual TLS edge→primary) on every piece that supports it; --tls=false for plain text")
	fs.StringVar(&logs.level, "log-level", "warn", "level of the logs on stderr: debug, info, warn or error (DIR/longhaul.log gets info and up)")
	fs.StringVar(&logs.format, "log-format", "text", "log format: text or json")
	if err := parse(fs, args); err != nil {
		return err
	}
	log, err := logs.logger(stderr)
	if err != nil {
		return err
	}
	cfg.Logger, cfg.Synthetic.SlowFraction = log, syntheticSlowShare
	cfg.KafkaBrokers = splitList(brokers)
	if basePort < 0 || basePort > 65535-700 {
		return fmt.Errorf("--base-port: %d is out of range (0, or up to %d)", basePort, 65535-700)
	}
	cfg.Ports = devstack.DefaultPorts(basePort)
	for name, p := range ports {
		cfg.Ports[name] = p
	}
	if budgetF != "" {
		cfg.Budgets = map[string]edge.Budget{}
		for _, r := range devstack.Regions {
			if cfg.Budgets[r], err = edge.ReadBudgetFile(budgetF, r); err != nil {
				return fmt.Errorf("--budget-file: %w", err)
			}
		}
	}

	stopping := make(chan struct{})
	var (
		bySignal atomic.Bool
		dir      atomic.Pointer[string]
	)
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	defer signal.Stop(sigs)
	done := make(chan struct{})
	defer close(done)
	go watchSignals(sigs, stopping, &bySignal, &dir, done, stderr)

	fmt.Fprintln(stdout, "longhaul dev: starting the stack (a throwaway PostgreSQL takes a few seconds)…")
	st, err := devstack.Start(ctx, cfg)
	if err != nil && ctx.Err() != nil {
		fmt.Fprintln(stdout, "longhaul dev: interrupted while starting; what had started is stopped")
		return nil
	}
	if err != nil {
		var pe *devstack.PortError
		if errors.As(err, &pe) {
			return fmt.Errorf("port %d (%s) is taken: %v\n  stop what holds it, or move every port with --base-port (0: free ports), or this one with --port %s=PORT",
				pe.Port, pe.Name, pe.Err, pe.Name)
		}
		if errors.Is(err, pgcluster.ErrNotInstalled) {
			return fmt.Errorf("%w\n  or use a PostgreSQL of yours: --database-url postgres://…", err)
		}
		return err
	}
	dir.Store(new(st.Dir()))
	st.WriteBanner(stdout)
	runCtx := ctx
	if duration > 0 {
		var cancel context.CancelFunc
		runCtx, cancel = context.WithTimeout(ctx, duration)
		defer cancel()
	}
	st.Run(runCtx, stdout)
	bySignal.Store(ctx.Err() != nil)
	close(stopping)
	fmt.Fprintln(stdout, "longhaul dev: stopping (Ctrl-C again forces the exit)…")
	err = st.Stop(context.WithoutCancel(ctx))
	if st.Kept() {
		fmt.Fprintf(stdout, "longhaul dev: stopped; everything it wrote is in %s\n", st.Dir())
	} else {
		fmt.Fprintf(stdout, "longhaul dev: stopped; removed %s\n", st.Dir())
	}
	return err
}

// watchSignals forces the exit on a second Ctrl-C (the first one is main's:
// it cancels the context and so starts the stop), or on the first one once
// the stack stops because --duration ended.
func watchSignals(sigs <-chan os.Signal, stopping <-chan struct{}, bySignal *atomic.Bool, dir *atomic.Pointer[string], done <-chan struct{}, stderr io.Writer) {
	n := 0
	for {
		select {
		case <-done:
			return
		case <-sigs:
			n++
			stopped := false
			select {
			case <-stopping:
				stopped = true
			default:
			}
			if n >= 2 || stopped && !bySignal.Load() {
				where := "where it is"
				if d := dir.Load(); d != nil {
					where = "in " + *d
				}
				fmt.Fprintf(stderr, "longhaul dev: forced exit; what it wrote stays %s\n", where)
				forceExit(130)
			}
		}
	}
}

// portFlag collects --port NAME=PORT.
type portFlag map[string]int

func (p portFlag) String() string {
	var parts []string
	for k, v := range p {
		parts = append(parts, k+"="+strconv.Itoa(v))
	}
	return strings.Join(parts, ",")
}

func (p portFlag) Set(s string) error {
	name, port, ok := strings.Cut(s, "=")
	if !ok {
		return fmt.Errorf("want NAME=PORT, got %q", s)
	}
	known := false
	for _, n := range devstack.PortNames() {
		known = known || n[0] == name
	}
	if !known {
		return fmt.Errorf("unknown port name %q (see longhaul dev -h)", name)
	}
	v, err := strconv.Atoi(port)
	if err != nil || v < 0 || v > 65535 {
		return fmt.Errorf("%s: want a port number, got %q", name, port)
	}
	p[name] = v
	return nil
}

package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"text/tabwriter"
	"time"

	"github.com/longhaul/longhaul/checker"
)

var benchCommands = []command{
	{"pipeline", "the lanes benchmark: sequential consumer, batch-parallel, batch-parallel with lanes", runBenchPipeline},
	{"writepath", "the write path from a remote region: per-row INSERTs, the seed's UNNEST/COPY across the link, longhaul", runBenchWritepath},
}

func runBench(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return runSubcommand(ctx, "bench", "benchmark", benchCommands, args, stdout, stderr)
}

// runSubcommand runs the one of cmds that args name ("longhaul <parent>
// <what> …"), or prints them.
func runSubcommand(ctx context.Context, parent, what string, cmds []command, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" {
		fmt.Fprintf(stderr, "usage: longhaul %s <%s> [flags]\n\n%ss:\n", parent, what, what)
		for _, c := range cmds {
			fmt.Fprintf(stderr, "  %-10s %s\n", c.name, c.summary)
		}
		if len(args) == 0 {
			return errUsage
		}
		return nil
	}
	for _, c := range cmds {
		if c.name == args[0] {
			return c.run(ctx, args[1:], stdout, stderr)
		}
	}
	fmt.Fprintf(stderr, "longhaul %s: unknown %s %q\n", parent, what, args[0])
	return errUsage
}

func runBenchPipeline(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("longhaul bench pipeline", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		cfg    checker.BenchConfig
		asJSON bool
	)
	fs.IntVar(&cfg.Partitions, "partitions", 8, "partitions of each lane's topic")
	fs.IntVar(&cfg.Jobs, "jobs", 20000, "throughput phase: jobs produced at once")
	fs.DurationVar(&cfg.Window, "window", 15*time.Second, "throughput phase: how long the jobs done are counted")
	fs.Float64Var(&cfg.Rate, "rate", 100, "latency phase: jobs per second")
	fs.DurationVar(&cfg.Duration, "duration", 10*time.Second, "latency phase: how long jobs are produced")
	fs.IntVar(&cfg.MaxInFlight, "max-in-flight", checker.DefaultMaxInFlight, "each checker's in-flight limit")
	fs.DurationVar(&cfg.FastBudget, "fast-budget", 250*time.Millisecond, "the fast lane's budget")
	fs.DurationVar(&cfg.Synthetic.Fast, "fast", 20*time.Millisecond, "duration of a fast scan")
	fs.DurationVar(&cfg.Synthetic.Slow, "slow", 5*time.Second, "duration of a slow scan")
	fs.Float64Var(&cfg.Synthetic.SlowFraction, "slow-fraction", 0.02, "share of slow scans")
	fs.BoolVar(&asJSON, "json", false, "print one JSON object instead of a table")
	if err := parse(fs, args); err != nil {
		return err
	}
	if err := cfg.Synthetic.Validate(); err != nil {
		return err
	}
	cfg.Progress = progress(stderr)
	res, err := checker.BenchPipeline(ctx, cfg)
	fmt.Fprint(stderr, "\r\033[K")
	if err != nil {
		return err
	}
	seq := res[0].ScansPerSecond
	if asJSON {
		out := map[string]any{"benchmark": "pipeline", "partitions": cfg.Partitions, "results": res}
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(out)
	}
	w := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(w, "consumer\tscans/s\t× sequential\tfast p50\tfast p99\tfast p99 alone\tp99 ÷ alone\t")
	for _, r := range res {
		fmt.Fprintf(w, "%s\t%.1f\t%.1f×\t%s\t%s\t%s\t%.2f\t\n", r.Mode, r.ScansPerSecond, r.ScansPerSecond/seq,
			secs(r.FastP50), secs(r.FastP99), secs(r.FastP99Alone), r.FastP99/r.FastP99Alone)
	}
	if err := w.Flush(); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "\n%d partitions; scans %s (%.0f %%) or %s; %d jobs counted for %s; latency at %.0f jobs/s for %s\n",
		cfg.Partitions, cfg.Synthetic.Fast, 100-100*cfg.Synthetic.SlowFraction, cfg.Synthetic.Slow, cfg.Jobs, cfg.Window, cfg.Rate, cfg.Duration)
	return nil
}

func secs(s float64) string {
	return time.Duration(s * float64(time.Second)).Round(time.Millisecond).String()
}

// progress draws a one-line progress bar on a terminal (nothing otherwise).
func progress(w io.Writer) func(phase string, done, total int) {
	f, ok := w.(*os.File)
	if !ok {
		return func(string, int, int) {}
	}
	if st, err := f.Stat(); err != nil || st.Mode()&os.ModeCharDevice == 0 {
		return func(string, int, int) {}
	}
	last := time.Time{}
	return func(phase string, done, total int) {
		if time.Since(last) < 100*time.Millisecond && done < total {
			return
		}
		last = time.Now()
		const width = 30
		n := 0
		if total > 0 {
			n = min(width, done*width/total)
		}
		bar := make([]byte, width)
		for i := range bar {
			bar[i] = '.'
			if i < n {
				bar[i] = '#'
			}
		}
		fmt.Fprintf(f, "\r\033[K%-40s [%s] %d/%d", phase, bar, done, total)
	}
}

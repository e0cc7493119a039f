// Command longhaul is the one binary of longhaul: a subcommand per role.
//
//	longhaul primary   apply edges' batches to PostgreSQL (runs beside it)
//	longhaul edge      accept insights in a region, make them durable, ship them
//	longhaul scheduler spread scans over time and send them to the Kafka lanes
//	longhaul assets    register assets in bulk (import FILE)
//	longhaul checker   consume a lane, run the checks, push insights to an edge
//	longhaul bench     benchmarks (pipeline)
//	longhaul certs     make development TLS certificates
//	longhaul probe     GET a URL, exit 0 on 200 (container healthchecks)
//	longhaul version   print the version
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
)

// version is set at build time with -ldflags "-X main.version=…".
var version = "dev"

type command struct {
	name, summary string
	run           func(ctx context.Context, args []string, stdout, stderr io.Writer) error
}

var commands = []command{
	{"primary", "apply edges' batches to PostgreSQL (run it beside the database)", runPrimary},
	{"edge", "accept checkers' insights in a region, make them durable, ship them to the primary", runEdge},
	{"scheduler", "spread scans of the registered assets over time and send them to the Kafka lanes", runScheduler},
	{"assets", "manage the assets to scan: import", runAssets},
	{"checker", "consume a Kafka lane, run each scan in its own goroutine, push insights to the nearest edge", runChecker},
	{"dev", "run everything in this process on its embedded defaults, two regions, until Ctrl-C", runDev},
	{"bench", "benchmarks: pipeline", runBench},
	{"certs", "make a development CA and a certificate per role (--out DIR)", runCerts},
	{"probe", "GET a URL and exit 0 on HTTP 200 (container healthchecks)", runProbe},
	{"status", "the cluster as an edge sees it: regions, nodes, backlog, each stage against the budget (--edge ADDR)", runStatus},
	{"version", "print the version", func(_ context.Context, _ []string, stdout, _ io.Writer) error {
		_, err := fmt.Fprintln(stdout, "longhaul", version)
		return err
	}},
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr))
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		usage(stderr)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	for _, c := range commands {
		if c.name == args[0] {
			err := c.run(ctx, args[1:], stdout, stderr)
			switch {
			case err == nil:
				return 0
			case errors.Is(err, flag.ErrHelp):
				return 0
			case errors.Is(err, errUsage):
				return 2
			}
			fmt.Fprintf(stderr, "longhaul %s: %v\n", c.name, err)
			return 1
		}
	}
	fmt.Fprintf(stderr, "longhaul: unknown command %q\n\n", args[0])
	usage(stderr)
	return 2
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "usage: longhaul <command> [flags]\n\ncommands:")
	for _, c := range commands {
		fmt.Fprintf(w, "  %-10s %s\n", c.name, c.summary)
	}
	fmt.Fprintln(w, "\nRun 'longhaul <command> -h' for a command's flags.")
}

// errUsage marks a flag error already reported by the flag set.
var errUsage = errors.New("usage")

// logFlags are the logging flags every role takes.
type logFlags struct{ level, format string }

func (l *logFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&l.level, "log-level", "info", "log level: debug, info, warn or error")
	fs.StringVar(&l.format, "log-format", "text", "log format: text or json")
}

func (l *logFlags) logger(w io.Writer) (*slog.Logger, error) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(l.level)); err != nil {
		return nil, fmt.Errorf("--log-level: %w", err)
	}
	opts := &slog.HandlerOptions{Level: level}
	switch strings.ToLower(l.format) {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("--log-format: %q is neither text nor json", l.format)
}

func parse(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return errUsage
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(fs.Output(), "unexpected arguments: %q\n", fs.Args())
		return errUsage
	}
	return nil
}
